"""The teacher-better gate of the token-level KD term (avokit.losses.gate, train.loss.kd_gate)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from avokit.losses.bucketed import bucketed_divergence
from avokit.losses.gate import gold_bucket_slot, teacher_better_gate
from avokit.losses.kd import TeacherBatch, kd_losses
from avokit.recipe.train import LossConfig


def _rows(g: torch.Generator, m: int = 64, vocab: int = 13, k: int = 5) -> tuple[torch.Tensor, ...]:
    logits = torch.randn(m, vocab, generator=g) * 2
    ids = torch.randint(-1, vocab, (m, k), generator=g)
    ids[:, 1] = ids[:, 0]  # twins: two entries mapped to one student id share a bucket
    lps = torch.log_softmax(torch.randn(m, k + 3, generator=g) * 2, -1)[:, :k]
    gold = torch.randint(0, vocab, (m,), generator=g)
    gold[: m // 2] = ids[: m // 2, 2].clamp(min=0)  # half the golds inside the mapped set
    return logits, ids, lps, gold


def test_the_gate_is_open_exactly_where_forward_kl_raises_the_gold_logit() -> None:
    # the reference: autograd of the bucketed forward KL on the gold logit, per row
    g = torch.Generator().manual_seed(0)
    logits, ids, lps, gold = _rows(g)
    x = logits.clone().requires_grad_(True)
    values, informative = bucketed_divergence(torch.log_softmax(x, -1), ids, lps)
    values[informative].sum().backward()
    raises_gold = x.grad.gather(1, gold.unsqueeze(1)).squeeze(1) < 0
    gate = teacher_better_gate(torch.log_softmax(logits, -1), ids, lps, gold)
    both = informative & (x.grad.gather(1, gold.unsqueeze(1)).squeeze(1).abs() > 1e-9)
    assert both.sum() > 40 and 0 < int(gate[both].sum()) < int(both.sum())  # both outcomes occur
    assert torch.equal(gate[both], raises_gold[both])


def test_gold_slot_is_the_first_entry_mapped_to_it_else_other() -> None:
    ids = torch.tensor([[3, 3, 5, -1], [1, 2, 4, 6], [-1, -1, -1, -1]])
    assert gold_bucket_slot(ids, torch.tensor([3, 0, 2])).tolist() == [0, 4, 4]
    assert gold_bucket_slot(ids, torch.tensor([5, 6, 0])).tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="gold must be"):
        gold_bucket_slot(ids, torch.tensor([1, 2]))


def test_a_teacher_certain_of_gold_opens_every_gate_and_one_against_it_closes_them() -> None:
    g = torch.Generator().manual_seed(1)
    logits, ids, _, _ = _rows(g, m=16)
    ids = ids.clamp(min=0)
    gold = ids[:, 0]
    near_one = torch.full_like(ids, -30.0, dtype=torch.float32)
    near_one[:, 0] = -1e-6
    logp = torch.log_softmax(logits, -1)
    assert teacher_better_gate(logp, ids, near_one, gold).all()
    against = near_one.clone()
    against[:, 0] = -30.0
    against[:, 2:] = -1e-6 - torch.log(torch.tensor(float(ids.shape[1] - 2)))
    # the teacher's mass sits on the other entries; gold's bucket has ~e^-30
    closed = teacher_better_gate(logp, ids, against, gold)
    elsewhere = (ids[:, 2:] != gold.unsqueeze(1)).all(1)
    assert elsewhere.sum() >= 8 and not closed[elsewhere].any()


def _batch(g: torch.Generator, m: int = 12, bsz: int = 2, seq: int = 9, vocab: int = 13,
           k: int = 5) -> TeacherBatch:
    b_idx = torch.arange(m) % bsz
    s_pos = torch.arange(m) // bsz
    ids = torch.randint(-1, vocab, (m, k), generator=g)
    return TeacherBatch(
        b_idx=b_idx, s_pos=s_pos, topk_student_ids=ids,
        topk_logprobs=torch.log_softmax(torch.randn(m, k + 2, generator=g) * 2, -1)[:, :k],
        boundary_weight=torch.rand(m, generator=g) + 0.5,
        chunk_teacher_logprob=torch.zeros(0), chunk_of_target=torch.full((bsz, seq), -1),
        chunk_weight=torch.zeros(0))


def test_gated_kd_sums_the_open_positions_over_every_informative_one() -> None:
    g = torch.Generator().manual_seed(2)
    batch = _batch(g)
    logits = torch.randn(2, 9, 13, generator=g)
    ids = torch.randint(0, 13, (2, 9), generator=g)
    ids[batch.b_idx, batch.s_pos + 1] = torch.where(  # make golds mostly mapped
        batch.topk_student_ids[:, 0] >= 0, batch.topk_student_ids[:, 0], ids[batch.b_idx, batch.s_pos + 1])
    gated = kd_losses(logits, ids, batch, LossConfig(kd_gate="teacher_better"))
    plain = kd_losses(logits, ids, batch, LossConfig())
    rows = torch.log_softmax(logits[batch.b_idx, batch.s_pos], -1)
    values, informative = bucketed_divergence(rows, batch.topk_student_ids, batch.topk_logprobs)
    gate = teacher_better_gate(rows, batch.topk_student_ids, batch.topk_logprobs, ids[batch.b_idx, batch.s_pos + 1])
    kept = informative & gate
    assert 0 < int(kept.sum()) < int(informative.sum())
    w = batch.boundary_weight
    want = float((w * values * kept).sum() / informative.sum())
    assert float(gated["kd"] * gated["kd_share"]) == pytest.approx(want, rel=1e-5)
    assert float(plain["kd"] * plain["kd_share"]) == pytest.approx(
        float((w * values * informative).sum() / informative.sum()), rel=1e-5)
    # explicit targets give the same gate as input ids
    targets = torch.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    again = kd_losses(logits, None, batch, LossConfig(kd_gate="teacher_better"), targets=targets)
    assert float(again["kd"]) == pytest.approx(float(gated["kd"]), rel=1e-6)


def test_a_closed_gate_sends_no_kd_gradient_to_its_row() -> None:
    g = torch.Generator().manual_seed(3)
    batch = _batch(g)
    logits = torch.randn(2, 9, 13, generator=g).requires_grad_(True)
    ids = torch.randint(0, 13, (2, 9), generator=g)
    out = kd_losses(logits, ids, batch, LossConfig(kd_gate="teacher_better"))
    (out["kd"] * out["kd_share"]).backward()
    rows = torch.log_softmax(logits.detach()[batch.b_idx, batch.s_pos], -1)
    gate = teacher_better_gate(rows, batch.topk_student_ids, batch.topk_logprobs, ids[batch.b_idx, batch.s_pos + 1])
    grad_rows = logits.grad[batch.b_idx, batch.s_pos].abs().sum(-1)
    assert (~gate).any() and float(grad_rows[~gate].sum()) == 0.0


def test_the_recipe_refuses_a_gate_with_uld_and_unknown_gates() -> None:
    with pytest.raises(ValidationError, match="kd_gate"):
        LossConfig(token_loss="uld", kd_gate="teacher_better")
    with pytest.raises(ValidationError, match="kd_gate"):
        LossConfig(kd_gate="sometimes")


def _chunk_batch(g: torch.Generator, bsz: int = 2, seq: int = 10, vocab: int = 11) -> TeacherBatch:
    """Chunks of 1-3 tokens over every row (no boundaries): chunk c covers a run of positions."""
    of = torch.full((bsz, seq), -1)
    c = 0
    for b in range(bsz):
        p = 0
        while p < seq - 1:  # the last position predicts past the row
            n = int(torch.randint(1, 4, (1,), generator=g))
            of[b, p : min(p + n, seq - 1)] = c
            p, c = p + n, c + 1
    empty = torch.zeros(0, dtype=torch.long)
    return TeacherBatch(
        b_idx=empty, s_pos=empty, topk_student_ids=torch.zeros(0, 4, dtype=torch.long),
        topk_logprobs=torch.zeros(0, 4), boundary_weight=torch.zeros(0),
        chunk_teacher_logprob=-torch.rand(c, generator=g) * 8, chunk_of_target=of,
        chunk_weight=torch.rand(c, generator=g) + 0.5)


def test_the_chunk_gate_keeps_the_chunks_the_teacher_finds_likelier_over_every_chunk() -> None:
    g = torch.Generator().manual_seed(4)
    batch = _chunk_batch(g)
    logits = (torch.randn(2, 10, 11, generator=g) * 2).requires_grad_(True)
    ids = torch.randint(0, 11, (2, 10), generator=g)
    plain = kd_losses(logits, ids, batch, LossConfig())
    gated = kd_losses(logits, ids, batch, LossConfig(chunk_gate="teacher_better"))
    # the student's chunk log-likelihoods, from the definition
    logp = torch.log_softmax(logits.detach(), -1)
    gold = torch.zeros(batch.n_chunks)
    for b in range(2):
        for p in range(9):
            c = int(batch.chunk_of_target[b, p])
            if c >= 0:
                gold[c] += logp[b, p, ids[b, p + 1]]
    opened = batch.chunk_teacher_logprob > gold
    assert 0 < int(opened.sum()) < batch.n_chunks
    from avokit.losses.chunk import chunk_divergence

    values = chunk_divergence(gold, batch.chunk_teacher_logprob, kind="forward_kl", beta=0.5, tau=LossConfig().chunk_tau)
    w = batch.chunk_weight
    assert float((gated["chunk"] * gated["chunk_share"]).detach()) == pytest.approx(
        float((w * values * opened).sum() / batch.n_chunks), rel=1e-5)
    assert float((plain["chunk"] * plain["chunk_share"]).detach()) == pytest.approx(
        float((w * values).sum() / batch.n_chunks), rel=1e-5)
    # every open chunk's gradient raises its gold tokens; closed chunks send none
    (gated["chunk"] * gated["chunk_share"]).backward()
    grad_gold = logits.grad.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # d loss / d gold logit, [2, 9]
    for b in range(2):
        for p in range(9):
            c = int(batch.chunk_of_target[b, p])
            if c < 0:
                continue
            if opened[c]:
                assert float(grad_gold[b, p]) < 0.0
            else:
                assert float(logits.grad[b, p].abs().sum()) == 0.0


def test_the_recipe_refuses_an_unknown_chunk_gate() -> None:
    with pytest.raises(ValidationError, match="chunk_gate"):
        LossConfig(chunk_gate="sometimes")
