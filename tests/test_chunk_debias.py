"""Debiased chunk term (train.loss.chunk_debias): "this chunk, then a new word" on both sides.

Each piece against a slow reference written from the definition: the teacher's word-start mass
after each chunk (records -> DocKD), the batch's bookkeeping on real packed rows, and the
student side inside ``kd_losses``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _one_cached_teacher

from avokit.align import byteify
from avokit.losses.chunk import chunk_divergence, word_start_logmass
from avokit.losses.kd import TeacherBatch, kd_losses
from avokit.records import TeacherRecords
from avokit.train.kd_data import chunk_word_logmass, doc_kd


def _records(rng: np.random.Generator, n: int, vocab: int) -> TeacherRecords:
    ends = np.cumsum(rng.integers(1, 4, n)).astype(np.int64)
    return TeacherRecords("d", rng.integers(0, vocab, n).astype(np.int32), ends,
                          -rng.random(n).astype(np.float32), np.zeros((n, 2), np.int32),
                          np.zeros((n, 2), np.float32), -rng.random(n).astype(np.float32) * 3)


@pytest.mark.parametrize("seed", range(5))
def test_teacher_word_mass_follows_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rec = _records(rng, 30, 20)
    starts_word = rng.random(20) < 0.4
    # student token ends: a random subset of the teacher's ends plus byte offsets of its own
    s_ends = np.union1d(rng.choice(rec.byte_ends, 12, replace=False),
                        rng.integers(1, int(rec.byte_ends[-1]), 10)).astype(np.int64)
    kd = doc_kd(rec, s_ends, np.full(20, -1, np.int64), starts_word=starts_word)
    common = np.intersect1d(rec.byte_ends, s_ends)
    assert kd.chunk_next_logmass is not None and kd.chunk_next_logmass.shape == (common.size,)
    for j, end in enumerate(common):  # chunk j ends at the j-th common boundary
        last = int(np.searchsorted(rec.byte_ends, end))  # teacher token that ends there
        nxt = last + 1
        if nxt < rec.n_positions and starts_word[rec.token_ids[nxt]]:
            assert kd.chunk_next_logmass[j] == rec.boundary_logmass[nxt]
        else:
            assert np.isnan(kd.chunk_next_logmass[j])
    # the raw chunk likelihood is unchanged: debiasing is added per row, where the student's
    # next token is in the same row
    plain = doc_kd(rec, s_ends, np.full(20, -1, np.int64))
    assert np.array_equal(plain.chunk_logprob, kd.chunk_logprob) and plain.chunk_next_logmass is None


def test_chunk_word_logmass_past_the_records_is_nan() -> None:
    rec = _records(np.random.default_rng(0), 4, 5)
    out = chunk_word_logmass(rec, np.array([0, 2, 3]), np.ones(5, bool))
    assert out[0] == rec.boundary_logmass[1] and out[1] == rec.boundary_logmass[3] and np.isnan(out[2])


@pytest.mark.parametrize("seed", range(4))
def test_student_side_matches_a_loop_reference(seed: int) -> None:
    """kd_losses' chunk term with debiased chunks == the definition, chunk by chunk."""
    torch.manual_seed(seed)
    B, T, V, C = 2, 9, 11, 5
    logits = torch.randn(B, T, V, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    chunk_of_target = torch.full((B, T), -1)
    spans = [(0, 0, 2), (0, 3, 5), (0, 6, 8), (1, 1, 4), (1, 5, 7)]  # (row, first, last) logit positions
    for c, (b, lo, hi) in enumerate(spans):
        chunk_of_target[b, lo : hi + 1] = c
    chunk_next = torch.tensor([0 * T + 3, -1, -1, 1 * T + 5, 1 * T + 8])  # the last: the row's last position
    teacher = -torch.rand(C, dtype=torch.float64) * 4
    starts_word = torch.rand(V) < 0.5
    starts_word[0] = True
    batch = TeacherBatch(b_idx=torch.zeros(0, dtype=torch.long), s_pos=torch.zeros(0, dtype=torch.long),
                         topk_student_ids=torch.zeros(0, 2, dtype=torch.long),
                         topk_logprobs=torch.zeros(0, 2), boundary_weight=torch.zeros(0),
                         chunk_teacher_logprob=teacher, chunk_of_target=chunk_of_target,
                         chunk_weight=torch.ones(C), chunk_next=chunk_next)

    class Cfg:
        divergence, jsd_beta, temperature, chunk_tau = "forward_kl", 0.5, 1.0, 2.0
        token_loss = "bucketed"
        kd_gate = chunk_gate = "none"

    got = kd_losses(logits, None, batch, Cfg(), targets=targets, starts_word=starts_word)["chunk"]
    logp = torch.log_softmax(logits, -1)
    student = []
    for c, (b, lo, hi) in enumerate(spans):
        s = sum(logp[b, p, targets[b, p]] for p in range(lo, hi + 1))
        if chunk_next[c] >= 0:
            b2, p2 = divmod(int(chunk_next[c]), T)
            s = s + torch.log(sum(logp[b2, p2, v].exp() for v in range(V) if starts_word[v]))
        student.append(s)
    want = chunk_divergence(torch.stack(student), teacher, kind="forward_kl", tau=2.0).mean()
    assert torch.allclose(got.double(), want, atol=1e-5)  # kd_losses normalises in float32
    got.backward()
    # position 8 of row 1 is in no chunk: only the word-start mass reaches it
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 8].abs().sum() > 0


def test_identical_debiased_likelihoods_give_zero_loss() -> None:
    torch.manual_seed(3)
    logits = torch.randn(1, 6, 7)
    targets = torch.randint(0, 7, (1, 6))
    starts_word = torch.tensor([True, False, True, False, False, True, False])
    logp = torch.log_softmax(logits, -1)
    own = (logp[0, [1, 2], targets[0, [1, 2]]].sum() + word_start_logmass(logp[0, 3:4], starts_word)[0])
    chunk_of_target = torch.full((1, 6), -1)
    chunk_of_target[0, 1:3] = 0
    batch = TeacherBatch(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                         torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2), torch.zeros(0),
                         own.reshape(1).detach(), chunk_of_target, torch.ones(1), torch.tensor([3]))

    class Cfg:
        divergence, jsd_beta, temperature, chunk_tau = "jsd", 0.5, 1.0, 1.0
        token_loss = "bucketed"
        kd_gate = chunk_gate = "none"

    assert float(kd_losses(logits, None, batch, Cfg(), targets=targets, starts_word=starts_word)["chunk"]) < 1e-7
    with pytest.raises(ValueError, match="starts_word"):
        kd_losses(logits, None, batch, Cfg(), targets=targets)


def test_debiased_batch_on_real_packed_rows(tmp_path: Path) -> None:
    """Every debiased chunk's next logit position predicts the student token right after the
    chunk, in the same document, and that token starts a word; the teacher's chunk log-prob is
    the raw one plus the recorded word-start mass."""
    from avokit.student import load_student_tokenizer
    from avokit.teachers.scoring import WORD_START_BYTES
    from avokit.train.kd_data import build_teacher_batch

    _, packed, rows, _, _, _, source = _one_cached_teacher(tmp_path, 4)
    s_tb = byteify(load_student_tokenizer(tmp_path / "stok"))
    plain = build_teacher_batch(packed, rows, source("smol"), lambda d: 1.0)
    tb = build_teacher_batch(packed, rows, source("smol", debias=True), lambda d: 1.0)
    assert plain.chunk_next is None and tb.chunk_next is not None
    _, y = packed.row_tokens(rows)
    debiased = np.nonzero(tb.chunk_next >= 0)[0]
    assert 0 < debiased.size < tb.chunk_next.size  # mid-word chunks stay raw
    diff = tb.chunk_teacher_logprob - plain.chunk_teacher_logprob
    assert np.all(diff[tb.chunk_next < 0] == 0) and np.all(diff[debiased] < 0)
    for c in debiased:
        b, p = divmod(int(tb.chunk_next[c]), packed.seq_len)
        assert tb.chunk_of_target[b, p - 1] == c and tb.chunk_of_target[b, p] != c
        assert s_tb.table[int(y[b, p])][:1] in WORD_START_BYTES
