"""Unit tests for avokit.losses: exact values, dtypes, devices, edge cases and error messages.

Written against the mutants ``mutmut`` showed surviving (issue 18, item 5). Every tensor is
tiny and drawn from a seeded ``torch.Generator`` (never the global RNG). The ``meta`` device
stands in for an accelerator: a tensor created without ``device=`` lands on the CPU, so a
function that forgets to propagate its input's device is caught without a GPU.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from avokit.losses.bucketed import bucket_distributions, bucketed_divergence, log1mexp
from avokit.losses.ce import cross_entropy, gold_logprobs, shifted_targets, target_logprobs
from avokit.losses.chunk import (
    binarize,
    chunk_divergence,
    student_chunk_logprobs,
    word_start_logmass,
)
from avokit.losses.divergences import (
    divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    tempered,
    total_variation,
)
from avokit.losses.fusion import document_bpb, document_weights, local_bpb
from avokit.losses.kd import TeacherBatch, kd_losses, weight_share, weighted_mean
from avokit.losses.same_vocab import identity_student_ids, same_vocab_divergence


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Cfg:
    """The five settings kd_losses reads (a DivergenceSettings)."""

    def __init__(self, divergence: str = "forward_kl", jsd_beta: float = 0.5,
                 temperature: float = 1.0, chunk_tau: float = 1.0, token_loss: str = "bucketed") -> None:
        self.divergence = divergence
        self.jsd_beta = jsd_beta
        self.temperature = temperature
        self.chunk_tau = chunk_tau
        self.token_loss = token_loss
        self.kd_gate = "none"
        self.chunk_gate = "none"


# ---------------------------------------------------------------- ce


def test_logprobs_shape_error_names_both_shapes() -> None:
    """A precomputed log-prob tensor of the wrong shape is refused with both shapes named."""
    logits = torch.zeros(2, 3, 5)
    sel = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("student_logprobs shape (2, 3, 4) differs from logits (2, 3, 5)")):
        target_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), sel, torch.zeros(2, 3, 4))


def test_shifted_targets_errors_name_the_shapes_and_the_way_out() -> None:
    """The mask/ids mismatch names both shapes; marking the last column says to pass targets=."""
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match=re.escape("mask shape (2, 4) does not match input_ids (2, 3)")):
        shifted_targets(ids, torch.zeros(2, 4, dtype=torch.bool))
    last = torch.zeros(2, 3, dtype=torch.bool)
    last[1, 2] = True
    msg = ("mask marks the last position, which has no next token in input_ids "
           "(pass targets= when the packing keeps the following token)")
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        shifted_targets(ids, last)
    sel = torch.zeros(2, 3, dtype=torch.bool)
    sel[:, :2] = True
    assert shifted_targets(ids, sel).tolist() == [[2, 3, 0], [5, 6, 0]]


def _precomputed(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    logits = torch.randn(2, 4, 6, generator=g)
    logprobs = torch.log_softmax(logits.double(), dim=-1)  # float64: tells a gather from a recompute
    ids = torch.randint(0, 6, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    return logits, logprobs, ids, mask


def test_precomputed_logprobs_are_gathered_not_recomputed() -> None:
    """Given ``student_logprobs`` the gold log-probs are a gather from it (its dtype, its exact
    values): the trainer normalises once per batch and every loss reuses that."""
    logits, logprobs, ids, mask = _precomputed(0)
    b, p = mask.nonzero(as_tuple=True)
    want = logprobs[b, p, ids[b, p + 1]]
    got = gold_logprobs(logits, ids, mask, logprobs)
    assert got.dtype == torch.float64 and torch.equal(got, want)
    ce = cross_entropy(logits, ids, mask, logprobs)
    assert ce.dtype == torch.float64 and torch.equal(ce, -want.sum() / want.numel())
    targets = torch.randint(0, 6, (2, 4), generator=_gen(1))
    ce_t = cross_entropy(logits, ids, mask, logprobs, targets=targets)
    assert ce_t.dtype == torch.float64 and torch.equal(ce_t, -logprobs[b, p, targets[b, p]].mean())


def test_cross_entropy_of_a_single_token_is_its_negative_logprob() -> None:
    """The mean divides by the number of selected tokens, also when that number is 1."""
    logits = torch.randn(1, 3, 5, generator=_gen(2), dtype=torch.float64)
    ids = torch.tensor([[0, 4, 2]])
    mask = torch.tensor([[False, True, False]])
    want = -torch.log_softmax(logits[0, 1], dim=-1)[2]
    assert float(cross_entropy(logits, ids, mask)) == pytest.approx(float(want), rel=1e-6)


# ---------------------------------------------------------------- chunk


def test_student_chunk_logprobs_keeps_dtype_and_device_and_names_shapes() -> None:
    """Sums keep the gold dtype (float64 stays float64), counts are long, both on the input's
    device; a length mismatch names both shapes."""
    gold = torch.tensor([-1.0, -0.5, -2.0], dtype=torch.float64)
    sums, counts = student_chunk_logprobs(gold, torch.tensor([2, 0, 2]), 4)
    assert sums.dtype == torch.float64 and counts.dtype == torch.long
    assert sums.tolist() == [-0.5, 0.0, -3.0, 0.0] and counts.tolist() == [1, 0, 2, 0]
    meta_sums, meta_counts = student_chunk_logprobs(
        torch.zeros(0, device="meta"), torch.zeros(0, dtype=torch.long, device="meta"), 3)
    assert meta_sums.device.type == "meta" and meta_counts.device.type == "meta"
    assert meta_sums.shape == (3,) and meta_counts.shape == (3,)
    with pytest.raises(ValueError, match=re.escape("gold (3,) and chunk_ids (2,) differ")):
        student_chunk_logprobs(gold, torch.tensor([0, 1]), 2)


def test_word_start_logmass_works_over_any_leading_shape() -> None:
    """log of the word-start mass over the last (vocabulary) dimension, for [B, N, V] as for
    [N, V]; a wrong-length mask names its shape and V."""
    logprobs = torch.log_softmax(torch.randn(2, 3, 4, generator=_gen(3), dtype=torch.float64), dim=-1)
    starts = torch.tensor([True, False, True, False])
    got = word_start_logmass(logprobs, starts)
    want = torch.log(logprobs.exp()[..., 0] + logprobs.exp()[..., 2])
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)
    with pytest.raises(ValueError, match=re.escape("starts_word (3,) must be [V=4]")):
        word_start_logmass(logprobs, starts[:3])


def test_word_start_logmass_equals_the_masked_reference_in_value_and_gradient() -> None:
    """The gathered form equals the definition (every other column masked to -inf, then
    logsumexp), gradients included; with no word-starting id the mass is -inf."""
    x = torch.randn(5, 64, generator=_gen(7), dtype=torch.float64, requires_grad=True)
    starts = torch.rand(64, generator=_gen(8)) < 0.4
    got = word_start_logmass(torch.log_softmax(x, dim=-1), starts)
    (grad,) = torch.autograd.grad(got.sum(), x)
    y = x.detach().clone().requires_grad_(True)
    want = torch.logsumexp(torch.log_softmax(y, dim=-1).masked_fill(~starts, float("-inf")), dim=-1)
    (want_grad,) = torch.autograd.grad(want.sum(), y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)
    none = word_start_logmass(torch.log_softmax(x.detach(), dim=-1), torch.zeros(64, dtype=torch.bool))
    assert torch.isneginf(none).all()


# ---------------------------------------------------------------- TeacherBatch


def test_empty_teacher_batch_has_documented_dtypes_shapes_and_device() -> None:
    """No boundaries, no chunks, every target position -1; long ids, float32 values, all on
    the requested device; it validates and gives zero losses."""
    b = TeacherBatch.empty(2, 3, 4)
    long_fields = ("b_idx", "s_pos", "topk_student_ids", "chunk_of_target")
    for name in long_fields:
        assert getattr(b, name).dtype == torch.long, name
    for name in ("topk_logprobs", "boundary_weight", "chunk_teacher_logprob", "chunk_weight"):
        assert getattr(b, name).dtype == torch.float32, name
    assert b.topk_student_ids.shape == (0, 4) and b.topk_logprobs.shape == (0, 4)
    assert b.chunk_of_target.tolist() == [[-1, -1, -1], [-1, -1, -1]]
    assert b.n_boundaries == 0 and b.n_chunks == 0 and b.chunk_next is None
    b.validate(2, 3)
    out = kd_losses(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), b, _Cfg())
    assert float(out["kd"]) == 0.0 and float(out["chunk"]) == 0.0
    meta = TeacherBatch.empty(2, 3, 4, device="meta")
    for name in ("b_idx", "s_pos", "topk_student_ids", "topk_logprobs", "boundary_weight",
                 "chunk_teacher_logprob", "chunk_of_target", "chunk_weight"):
        t = getattr(meta, name)
        assert t.device.type == "meta", name
        assert t.dtype == (torch.long if name in long_fields else torch.float32), name


def _valid_batch(chunk_next: torch.Tensor | None = None) -> TeacherBatch:
    """B=2, T=3, M=2 boundaries, k=3, C=2 chunks."""
    cot = torch.full((2, 3), -1, dtype=torch.long)
    cot[0, 0:2] = 0
    cot[1, 0] = 1
    return TeacherBatch(
        b_idx=torch.tensor([0, 1]), s_pos=torch.tensor([0, 2]),
        topk_student_ids=torch.tensor([[0, 1, -1], [2, -1, -1]]),
        topk_logprobs=torch.log(torch.tensor([[0.5, 0.25, 0.125], [0.5, 0.25, 0.125]])),
        boundary_weight=torch.tensor([1.0, 0.5]), chunk_teacher_logprob=torch.tensor([-1.0, -2.0]),
        chunk_of_target=cot, chunk_weight=torch.tensor([1.0, 1.0]), chunk_next=chunk_next,
    )


def test_teacher_batch_to_moves_every_tensor() -> None:
    """``to`` returns a copy with every tensor (chunk_next too, when set) on the device."""
    moved = _valid_batch(torch.tensor([2, -1])).to("meta")
    for name, value in moved.__dict__.items():
        assert value.device.type == "meta", name
    assert _valid_batch().to("meta").chunk_next is None


@pytest.mark.parametrize(("change", "message"), [
    ({"s_pos": torch.tensor([0, 1, 2])}, "TeacherBatch.s_pos must be [M=2], got (3,)"),
    ({"boundary_weight": torch.ones(2, 1)}, "TeacherBatch.boundary_weight must be [M=2], got (2, 1)"),
    ({"topk_student_ids": torch.zeros(2, 3, 1, dtype=torch.long), "topk_logprobs": torch.zeros(2, 3, 1)},
     "TeacherBatch.topk_student_ids must be [M=2, k], got (2, 3, 1)"),
    ({"topk_logprobs": torch.zeros(3, 3)}, "TeacherBatch.topk_logprobs must be [M=2, k], got (3, 3)"),
    ({"topk_logprobs": torch.zeros(2, 4)}, "TeacherBatch.topk_student_ids and topk_logprobs differ in shape"),
    ({"b_idx": torch.tensor([0, 2])}, "TeacherBatch.b_idx outside [0, 2)"),
    ({"s_pos": torch.tensor([0, 3])}, "TeacherBatch.s_pos outside [0, 3)"),
    ({"chunk_weight": torch.ones(3)}, "TeacherBatch.chunk_weight must be [C=2], got (3,)"),
    ({"chunk_of_target": torch.tensor([[0, 2, -1], [-1, -1, -1]])}, "TeacherBatch.chunk_of_target holds chunk id >= C=2"),
    ({"chunk_next": torch.tensor([1, 2, 3])}, "TeacherBatch.chunk_next must be [C=2], got (3,)"),
    ({"chunk_next": torch.tensor([-1, 6])}, "TeacherBatch.chunk_next outside [-1, B*T=6)"),
    ({"chunk_next": torch.tensor([-5, 0])}, "TeacherBatch.chunk_next outside [-1, B*T=6)"),
    ({"chunk_next": torch.tensor([-2, 0])}, "TeacherBatch.chunk_next outside [-1, B*T=6)"),
])
def test_validate_names_the_field_and_the_expected_shape(change: dict[str, torch.Tensor], message: str) -> None:
    """Each malformed field raises ValueError whose message is exactly the documented one,
    so a user sees which field of which shape is wrong; limits are exclusive (C, B*T)."""
    batch = replace(_valid_batch(torch.tensor([2, -1])), **change)
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        batch.validate(2, 3)


def test_validate_accepts_indices_at_the_upper_limits() -> None:
    """Chunk id C-1 and chunk_next B*T-1 are valid (the last chunk, the last position)."""
    batch = replace(_valid_batch(torch.tensor([5, -1])),
                    chunk_of_target=torch.tensor([[0, 1, -1], [-1, -1, -1]]))
    batch.validate(2, 3)


# ---------------------------------------------------------------- weighted means


def test_weighted_mean_divides_by_the_weight_total_and_ignores_zero_weights() -> None:
    """``sum(w v) / sum(w)`` exactly, also for a total below 1; zero-weight entries drop out
    even when their value is inf or NaN; the result keeps the values' dtype."""
    values = torch.tensor([2.0, 4.0, math.inf, math.nan])
    weights = torch.tensor([0.25, 0.25, 0.0, 0.0], dtype=torch.float64)
    got = weighted_mean(values, weights)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(3.0, rel=1e-7)
    assert float(weighted_mean(values[:2], torch.tensor([0.1, 0.3]))) == pytest.approx(3.5, rel=1e-6)
    assert float(weighted_mean(values, torch.zeros(4))) == 0.0


def test_weight_share_is_the_mean_weight_over_valid_entries() -> None:
    """Mean of the weights where valid: one valid entry gives its weight, none gives 0."""
    w = torch.tensor([0.5, 0.25, 1.0])
    assert float(weight_share(w, torch.tensor([True, False, False]))) == 0.5
    assert float(weight_share(w, torch.tensor([True, True, False]))) == 0.375
    assert float(weight_share(w, torch.tensor([False, False, False]))) == 0.0


# ---------------------------------------------------------------- kd_losses


def test_kd_losses_errors_name_what_is_missing() -> None:
    """Wrong logits rank names the shape; no input_ids and no targets, and debiased chunks
    without starts_word, name what the chunk term needs."""
    batch = _valid_batch()
    with pytest.raises(ValueError, match="^" + re.escape("student_logits must be [B, T, V], got (2, 3)") + "$"):
        kd_losses(torch.zeros(2, 3), None, batch, _Cfg())
    with pytest.raises(ValueError, match="^kd_losses needs input_ids or targets for the chunk term$"):
        kd_losses(torch.zeros(2, 3, 4), None, batch, _Cfg())
    debiased = _valid_batch(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match="^" + re.escape(
            "kd_losses: TeacherBatch.chunk_next (debiased chunks) needs starts_word") + "$"):
        kd_losses(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), debiased, _Cfg())


def test_kd_losses_with_precomputed_logprobs_match_a_reference() -> None:
    """With float64 ``student_logprobs`` and a debiased chunk, every term is computed from
    them (float64 results) and equals the definition: the bucketed divergence at the boundary
    rows, and per chunk the gold log-probs plus (debiased) the word-start mass at
    ``chunk_next``. kd_share is the mean boundary weight over informative boundaries."""
    g = _gen(4)
    logits = torch.randn(2, 3, 4, generator=g)
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    ids = torch.tensor([[1, 3, 0], [2, 2, 1]])
    starts = torch.tensor([True, False, False, True])
    batch = _valid_batch(torch.tensor([2, -1]))  # chunk 0 (row 0, positions 0-1) then position 2
    cfg = _Cfg("jsd", jsd_beta=0.3, temperature=1.5, chunk_tau=2.0)
    out = kd_losses(logits, ids, batch, cfg, logprobs, starts_word=starts)
    assert out["kd"].dtype == torch.float64 and out["chunk"].dtype == torch.float64

    rows = logprobs[batch.b_idx, batch.s_pos]
    values, informative = bucketed_divergence(rows, batch.topk_student_ids, batch.topk_logprobs,
                                              kind="jsd", beta=0.3, temperature=1.5)
    assert informative.tolist() == [True, True]
    want_kd = (values * batch.boundary_weight.double()).sum() / batch.boundary_weight.sum()
    torch.testing.assert_close(out["kd"], want_kd, rtol=1e-12, atol=0.0)
    assert float(out["kd_share"]) == pytest.approx(0.75)

    lp0 = logprobs[0, 0, ids[0, 1]] + logprobs[0, 1, ids[0, 2]]
    lp0 = lp0 + torch.logsumexp(logprobs[0, 2][starts], dim=-1)
    lp1 = logprobs[1, 0, ids[1, 1]]  # a chunk with a single token in the window
    want = chunk_divergence(torch.stack([lp0, lp1]), batch.chunk_teacher_logprob,
                            kind="jsd", beta=0.3, tau=2.0)
    torch.testing.assert_close(out["chunk"], want.mean(), rtol=1e-12, atol=0.0)
    assert float(out["chunk_share"]) == 1.0


def test_kd_losses_single_token_chunk_counts_in_the_chunk_term() -> None:
    """A chunk with exactly one student token in the window has a likelihood to compare:
    alone in the batch it is the whole chunk term."""
    logits = torch.randn(1, 3, 4, generator=_gen(5), dtype=torch.float64)
    ids = torch.tensor([[0, 2, 1]])
    cot = torch.tensor([[-1, 0, -1]])
    batch = replace(TeacherBatch.empty(1, 3, 2), chunk_teacher_logprob=torch.tensor([-0.7]),
                    chunk_of_target=cot, chunk_weight=torch.tensor([1.0]))
    out = kd_losses(logits, ids, batch, _Cfg())
    student = torch.log_softmax(logits[0, 1], dim=-1)[1].reshape(1).float()
    want = chunk_divergence(student, torch.tensor([-0.7]))
    assert float(out["chunk"]) == pytest.approx(float(want[0]), rel=1e-5)
    assert float(out["chunk"]) > 0


def test_kd_losses_on_a_single_position_batch_with_undebiased_chunks() -> None:
    """B = T = 1 and chunk_next all -1: no logit row past the batch is ever read."""
    batch = replace(TeacherBatch.empty(1, 1, 2), chunk_teacher_logprob=torch.tensor([-1.0]),
                    chunk_weight=torch.tensor([1.0]), chunk_next=torch.tensor([-1]))
    out = kd_losses(torch.zeros(1, 1, 3), torch.zeros(1, 1, dtype=torch.long), batch, _Cfg(),
                    starts_word=torch.tensor([True, False, True]))
    assert float(out["chunk"]) == 0.0  # the chunk has no token in the window


# ---------------------------------------------------------------- same vocabulary


def test_identity_student_ids_unmaps_ids_outside_the_vocabulary() -> None:
    """Ids in [0, V) pass through (0 and V-1 included); V and beyond, and negatives, are -1."""
    got = identity_student_ids(torch.tensor([[-3, 0, 4, 5, 9]], dtype=torch.int32), 5)
    assert got.dtype == torch.long and got.tolist() == [[-1, 0, 4, -1, -1]]


def _full_vocab(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    student = torch.log_softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)
    teacher = torch.log_softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.argsort(teacher, dim=-1, descending=True)
    return student, ids, torch.gather(teacher, -1, ids)


@pytest.mark.parametrize(("kind", "beta"), [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.2), ("tvd", 0.5)])
def test_same_vocab_divergence_with_k_equal_v_is_the_full_divergence(kind: str, beta: float) -> None:
    """k = V: the exact full-vocabulary divergence of the chosen kind and beta."""
    student, ids, topk = _full_vocab(6)
    teacher = torch.empty_like(student).scatter_(-1, ids, topk)
    got = same_vocab_divergence(student, ids, topk, kind=kind, beta=beta)
    torch.testing.assert_close(got, divergence(kind, teacher, student, beta=beta), rtol=1e-9, atol=1e-12)


def test_same_vocab_divergence_defaults_and_temperature() -> None:
    """Defaults are forward KL, beta 0.5 (visible through JSD), temperature 1; a temperature
    is passed on: equal to the bucketed term on the identity map."""
    student, ids, topk = _full_vocab(7)
    ref = bucketed_divergence(student, ids, topk, kind="jsd", beta=0.5, temperature=1.0)[0]
    torch.testing.assert_close(same_vocab_divergence(student, ids, topk, kind="jsd"), ref)
    ref_t = bucketed_divergence(student, ids, topk, kind="reverse_kl", temperature=2.0)[0]
    torch.testing.assert_close(same_vocab_divergence(student, ids, topk, kind="reverse_kl", temperature=2.0), ref_t)
    assert not torch.allclose(ref_t, bucketed_divergence(student, ids, topk, kind="reverse_kl")[0])


# ---------------------------------------------------------------- fusion


def test_document_bpb_exact_for_one_byte_and_nan_without_gradient_trouble_for_none() -> None:
    """``nll / (n_bytes ln 2)`` in the NLL's precision, also for a 1-byte document (a
    denominator below 1); a 0-byte document is NaN and passes a zero (finite) gradient."""
    nll = torch.tensor([[1.0, 2.0], [3.0, 0.5], [4.0, 4.0]], dtype=torch.float64, requires_grad=True)
    n_bytes = torch.tensor([3, 1, 0])
    bpb = document_bpb(nll, n_bytes)
    ln2 = math.log(2.0)
    want = torch.tensor([[1.0 / (3 * ln2), 2.0 / (3 * ln2)], [3.0 / ln2, 0.5 / ln2]], dtype=torch.float64)
    torch.testing.assert_close(bpb[:2], want, rtol=1e-15, atol=0.0)
    assert torch.isnan(bpb[2]).all()
    torch.where(torch.isnan(bpb), torch.zeros_like(bpb), bpb).sum().backward()
    assert torch.isfinite(nll.grad).all() and nll.grad[2].tolist() == [0.0, 0.0]


def test_local_bpb_default_window_is_per_span_and_float64() -> None:
    """Window 0 by default: each span's own NLL over its own bytes, computed in float64 even
    from float32 log-probs; mismatched shapes name both."""
    lp = torch.tensor([[-1.0, -2.0], [-3.0, -0.5], [-0.25, -4.0]])
    nb = torch.tensor([2, 1, 4])
    got = local_bpb(lp, nb)
    assert got.dtype == torch.float64
    want = -lp.double() / (nb.double().unsqueeze(-1) * math.log(2.0))
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0.0)
    with pytest.raises(ValueError, match=re.escape("span_logprob must be [S, n] and span_bytes [S], got (3, 2) and (4,)")):
        local_bpb(lp, torch.tensor([1, 2, 3, 4]))


def test_target_logprobs_refuses_the_id_just_past_the_vocabulary() -> None:
    """Target id V is out of range (ids are [0, V)): a ValueError naming the range, not an
    index error from deep inside the cross-entropy kernel."""
    logits = torch.zeros(1, 2, 4)
    sel = torch.tensor([[True, False]])
    with pytest.raises(ValueError, match=re.escape("a selected target id lies outside the student vocabulary [0, 4)")):
        target_logprobs(logits, torch.tensor([[4, 0]]), sel)
    assert target_logprobs(logits, torch.tensor([[3, 0]]), sel).tolist() == [pytest.approx(-math.log(4.0))]


def test_document_weights_fixed_priors_keep_the_bpb_precision() -> None:
    """Fixed weights given as a Python list are used in the BPB tensor's dtype: float64 BPBs
    give the normalised priors to float64 precision (0.3 is not a float32 number)."""
    bpb = torch.tensor([[1.0, 2.0], [0.5, 0.5]], dtype=torch.float64)
    got = document_weights(bpb, "fixed", 1.0, [0.3, 0.7])
    assert got.dtype == torch.float64
    want = torch.tensor([[0.3, 0.7], [0.3, 0.7]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)


# ---------------------------------------------------------------- bucket_distributions


def test_bucket_distributions_errors_name_the_shapes() -> None:
    """Each shape error is a ValueError naming the tensors' actual shapes; a k mismatch alone
    (both 2-D) is refused too, and the row-count error gives the top-k rows, not k."""
    s = torch.zeros(3, 5)
    ids = torch.zeros(3, 2, dtype=torch.long)
    lps = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="^" + re.escape("student_logprobs must be [M, V], got (5,)") + "$"):
        bucket_distributions(torch.zeros(5), ids, lps)
    with pytest.raises(ValueError, match="^" + re.escape(
            "topk_student_ids (3, 2) and topk_logprobs (3, 4) must both be [M, k]") + "$"):
        bucket_distributions(s, ids, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="^" + re.escape(
            "topk_student_ids (3,) and topk_logprobs (3,) must both be [M, k]") + "$"):
        bucket_distributions(s, torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match="^" + re.escape("4 top-k rows for 3 student rows") + "$"):
        bucket_distributions(s, torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2))


def test_bucket_distributions_keep_the_student_dtype_and_exact_buckets() -> None:
    """float32 student rows give float32 buckets (the float64 teacher arithmetic is internal);
    twins merge into the first entry's slot, OTHER holds the rest of each side's mass."""
    student = torch.log_softmax(torch.randn(2, 6, generator=_gen(3)), dim=-1)
    ids = torch.tensor([[4, 4, -1], [0, 5, 2]])
    lps = torch.log(torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.3, 0.1]]))
    t, s, present = bucket_distributions(student, ids, lps)
    assert t.dtype == torch.float32 and s.dtype == torch.float32
    assert present.tolist() == [[True, False, False, True], [True, True, True, True]]
    torch.testing.assert_close(t.exp(), torch.tensor([[0.7, 0.0, 0.0, 0.3], [0.3, 0.3, 0.1, 0.3]]))
    p = student.exp()
    want_s = torch.stack([torch.stack([p[0, 4], p[0, 4] * 0, p[0, 4] * 0, 1 - p[0, 4]]),
                          torch.stack([p[1, 0], p[1, 5], p[1, 2], 1 - p[1, 0] - p[1, 5] - p[1, 2]])])
    torch.testing.assert_close(s.exp(), want_s)
    t64, s64, _ = bucket_distributions(student.double(), ids, lps)
    assert t64.dtype == torch.float64 and s64.dtype == torch.float64


# ---------------------------------------------------------------- log1mexp (round 3)


def _log1mexp_exact(x: float) -> float:
    """``log(1 - e^x)`` in decimal arithmetic with enough digits for ``x`` (an independent
    reference: no expm1/log1p, no branch at -ln 2)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 30 + int(-x / 2.3) + int(max(0.0, -math.log10(-x)))
        return float((1 - decimal.Decimal(x).exp()).ln())


def test_log1mexp_is_accurate_to_an_ulp_on_both_sides_of_minus_ln2() -> None:
    """float64 ``log1mexp`` stays within 1.5 ulp of the exact value from x = -1e-250 to -700,
    densely around the branch point -ln 2: a branch cut moved towards 0 (catastrophic
    ``log1p(-exp(x))`` near 0) or away from -ln 2 (the expm1 branch where it loses an ulp)
    breaks this."""
    xs = np.concatenate([np.linspace(-math.log(3.0), -math.log(2.0), 401),
                         -np.logspace(-250, -1, 60), -np.logspace(0, 2.85, 60)])
    want = np.array([_log1mexp_exact(float(x)) for x in xs])
    got = log1mexp(torch.from_numpy(xs)).numpy()
    ulps = np.abs(got - want) / np.spacing(np.abs(want))
    assert float(ulps.max()) <= 1.5, float(xs[ulps.argmax()])


def test_log1mexp_clamps_positive_rounding_to_zero_mass() -> None:
    """A log-mass a rounding error above 0 (a top-k that sums past 1) means ``1 - e^x = 0``:
    ``-inf``, not NaN from the log of a negative number."""
    got = log1mexp(torch.tensor([1e-12, 0.5, 0.0, -math.log(2.0) * 2], dtype=torch.float64))
    assert got[:3].tolist() == [-math.inf, -math.inf, -math.inf]
    assert float(got[3]) == pytest.approx(math.log(0.75), rel=1e-15)


# ---------------------------------------------------------------- bucket_distributions on a device


def test_bucket_distributions_build_every_mask_on_the_input_device() -> None:
    """With the inputs on another device (meta stands in for a GPU; M = 0 rows so no value is
    read back) every output is on that device: the twin mask and the mapped-set mask must not
    be created on the CPU."""
    s = torch.zeros(0, 5, device="meta")
    ids = torch.zeros(0, 3, dtype=torch.long, device="meta")
    lps = torch.zeros(0, 3, device="meta")
    t, st, present = bucket_distributions(s, ids, lps)
    assert t.device.type == st.device.type == present.device.type == "meta"
    assert t.shape == st.shape == present.shape == (0, 4)
    values, informative = bucketed_divergence(s, ids, lps, kind="reverse_kl")
    assert values.device.type == informative.device.type == "meta" and values.shape == (0,)


# ---------------------------------------------------------------- divergences (round 3)


def _two_rows() -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.25, 0.5], [0.3, 0.3, 0.4]], dtype=torch.float64)
    return p.log(), q.log()


def _reference(kind: str, p: torch.Tensor, q: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Direct float64 formulas over the given (already masked) outcomes."""
    if kind == "forward_kl":
        return (p * (p.log() - q.log())).sum(-1)
    if kind == "reverse_kl":
        return (q * (q.log() - p.log())).sum(-1)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
    return 0.5 * (p - q).abs().sum(-1)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tvd"])
def test_explicit_present_mask_is_honoured(kind: str) -> None:
    """An outcome the caller marks absent contributes nothing even though both log-probs are
    finite: the direct functions and the dispatcher pass ``present`` on instead of inferring
    it from ``-inf`` entries."""
    lp, lq = _two_rows()
    present = torch.tensor([[True, True, False], [True, False, True]])
    p, q = lp.exp(), lq.exp()
    zero = torch.zeros_like(p)
    want = _reference(kind, torch.where(present, p, zero) + (~present) * 1.0,
                      torch.where(present, q, zero) + (~present) * 1.0, beta=0.3)
    fn = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "tvd": total_variation}
    direct = (generalized_jsd(lp, lq, 0.3, present) if kind == "jsd" else fn[kind](lp, lq, present))
    torch.testing.assert_close(direct, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(divergence(kind, lp, lq, beta=0.3, present=present), want,
                               rtol=1e-12, atol=1e-15)
    full = divergence(kind, lp, lq, beta=0.3)
    assert not torch.allclose(full, want)


def test_divergences_are_zero_for_identical_inputs_and_positive_otherwise() -> None:
    """D(P, P) = 0 and D(P, Q) > 0 for every kind, matching the float64 formulas."""
    lp, lq = _two_rows()
    for kind in ("forward_kl", "reverse_kl", "jsd", "tvd"):
        assert divergence(kind, lp, lp, beta=0.3).abs().max() < 1e-15, kind
        got = divergence(kind, lp, lq, beta=0.3)
        assert bool((got > 0).all()), kind
        torch.testing.assert_close(got, _reference(kind, lp.exp(), lq.exp(), 0.3), rtol=1e-12, atol=0.0)


def test_generalized_jsd_default_beta_is_one_half_and_beta_is_open_interval() -> None:
    """Default beta 0.5 (the symmetric JSD); beta 0 and 1 (where it degenerates to 0) and
    values beyond are refused with the documented message."""
    lp, lq = _two_rows()
    got = generalized_jsd(lp, lq)
    torch.testing.assert_close(got, _reference("jsd", lp.exp(), lq.exp(), 0.5), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(got, generalized_jsd(lq, lp), rtol=1e-12, atol=0.0)
    for beta in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"jsd beta must lie strictly between 0 and 1, got {beta}") + "$"):
            generalized_jsd(lp, lq, beta)


def test_divergence_errors_name_the_problem() -> None:
    """Shape mismatch names both shapes; an unknown kind lists the valid ones; a temperature
    of 0 is refused (not a division by zero)."""
    lp, lq = _two_rows()
    with pytest.raises(ValueError, match="^" + re.escape(
            "teacher and student log-probs differ in shape: (2, 3) vs (2, 2)") + "$"):
        forward_kl(lp, lq[:, :2])
    with pytest.raises(ValueError, match="^" + re.escape(
            "unknown divergence 'kl'; choose forward_kl, reverse_kl, jsd or tvd") + "$"):
        divergence("kl", lp, lq)  # type: ignore[arg-type]
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="^" + re.escape(f"temperature must be positive, got {t}") + "$"):
            tempered(lp, t)


# ---------------------------------------------------------------- chunk term (round 3)


def test_binarize_refuses_a_non_positive_tau() -> None:
    """tau = 0 would divide by zero; the message names the chunk temperature."""
    for tau in (0.0, -2.0):
        with pytest.raises(ValueError, match="^" + re.escape(
                f"chunk temperature tau must be positive, got {tau}") + "$"):
            binarize(torch.tensor([-1.0]), tau)


def test_chunk_divergence_names_shapes_and_keeps_the_student_dtype() -> None:
    """A length mismatch names both shapes (student first); a float64 teacher against a
    float32 student gives float32 values equal to the Bernoulli forward KL."""
    with pytest.raises(ValueError, match="^" + re.escape(
            "student (2,) and teacher (3,) chunk shapes differ") + "$"):
        chunk_divergence(torch.zeros(2), torch.zeros(3))
    student = torch.tensor([-0.5, -2.0])
    teacher = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    got = chunk_divergence(student, teacher)
    assert got.dtype == torch.float32
    a, b = math.exp(-1.0), math.exp(-0.5)
    want0 = a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))
    assert float(got[0]) == pytest.approx(want0, rel=1e-5) and float(got[1]) == 0.0


def test_an_outcome_absent_on_both_sides_costs_nothing_even_if_marked_present() -> None:
    """Identical teacher and student that both give OTHER no mass: every divergence is 0 (the
    bucketed term marked OTHER present because the student has unmapped ids, and forward KL
    charged e^-100 * inf = inf there), with a finite zero gradient."""
    logits = torch.tensor([[0.0, -math.inf, -math.inf]], requires_grad=True)
    student = torch.log_softmax(logits, -1)
    for kind in ("forward_kl", "reverse_kl", "jsd", "tvd"):
        values, informative = bucketed_divergence(
            student, torch.tensor([[0]]), torch.tensor([[0.0]]), kind=kind)  # type: ignore[arg-type]
        assert values.tolist() == [0.0] and informative.tolist() == [True], kind
    both = torch.tensor([[0.0, -math.inf]])
    for fn in (forward_kl, reverse_kl, total_variation):
        assert fn(both, both, present=torch.tensor([[True, True]])).tolist() == [0.0]
    values, _ = bucketed_divergence(student, torch.tensor([[0]]), torch.tensor([[0.0]]))
    values.sum().backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_local_bpb_window_stays_on_the_inputs_device() -> None:
    """The window's padding and indices are made on the inputs' device (a CPU pad next to GPU
    log-probs fails in torch.cat); ``meta`` stands in for an accelerator."""
    out = local_bpb(torch.zeros(5, 2, device="meta"), torch.ones(5, device="meta"), window=1)
    assert out.device.type == "meta" and out.shape == (5, 2)


# ---------------------------------------------------------------- round 4


def test_check_logits_names_the_wrong_shape() -> None:
    """Logits that are not [B, T, V] raise a ValueError naming their shape (not a bare
    ValueError, not a TypeError from building the message)."""
    with pytest.raises(ValueError, match="^" + re.escape("student_logits must be [B, T, V], got shape (2, 5)") + "$"):
        target_logprobs(torch.zeros(2, 5), torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool))


@pytest.mark.parametrize(("targets_shape", "mask_shape"), [((2, 3), (2, 2)), ((2, 2), (2, 2)), ((3, 3), (2, 3))])
def test_target_logprobs_refuses_targets_or_mask_off_the_logits_grid(
    targets_shape: tuple[int, int], mask_shape: tuple[int, int]
) -> None:
    """Either a mask or the targets off the [B, T] grid of the logits is refused (a mask
    shorter than right targets would otherwise silently select fewer positions), and the
    message names targets, mask and the logits' [B, T] (not [B, T, V])."""
    logits = torch.zeros(2, 3, 4)
    message = f"targets {targets_shape} and mask {mask_shape} must match logits [B, T] = (2, 3)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        target_logprobs(logits, torch.zeros(targets_shape, dtype=torch.long), torch.ones(mask_shape, dtype=torch.bool))


def test_kd_losses_chunk_share_counts_chunks_with_at_least_one_token() -> None:
    """``chunk_share`` averages the chunk weights over chunks with >= 1 token in the window:
    a one-token chunk counts, a chunk with no token does not (its weight would dilute the
    share); the chunk term is the same weighted mean over those chunks."""
    logits = torch.randn(1, 4, 5, generator=_gen(11), dtype=torch.float64)
    ids = torch.tensor([[1, 3, 0, 4]])
    batch = replace(TeacherBatch.empty(1, 4, 2), chunk_teacher_logprob=torch.tensor([-1.5, -0.4, -2.0]),
                    chunk_of_target=torch.tensor([[0, 0, 1, -1]]), chunk_weight=torch.tensor([1.0, 0.5, 0.25]))
    out = kd_losses(logits, ids, batch, _Cfg())
    assert float(out["chunk_share"]) == 0.75  # (1.0 + 0.5) / 2; chunk 2 has no token
    lp = torch.log_softmax(logits[0], dim=-1)
    student = torch.stack([lp[0, 3] + lp[1, 0], lp[2, 4]]).float()
    d = chunk_divergence(student, torch.tensor([-1.5, -0.4]))
    assert float(out["chunk"]) == pytest.approx(float((d[0] + 0.5 * d[1]) / 1.5), rel=1e-5)


def test_document_weights_accept_integer_bpb() -> None:
    """Integer BPBs are converted to float (documented as float, but an int tensor must not
    crash or round the weights): softmax of -bpb / T."""
    got = document_weights(torch.tensor([[1, 2], [3, 3]]), "bpb_softmax", 1.0)
    assert got.dtype == torch.float32
    e = math.exp(-1.0)
    want = torch.tensor([[1 / (1 + e), e / (1 + e)], [0.5, 0.5]])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)


def test_local_bpb_pools_float32_byte_counts_in_float64() -> None:
    """Byte counts given as float32 are pooled in float64 like the log-probs: a 2^24-byte span
    next to 1-byte spans keeps the single bytes (a float32 prefix sum drops them)."""
    lp = torch.tensor([[-3.0], [-1.0], [-2.0]])
    nb = torch.tensor([2.0**24, 1.0, 1.0])
    got = local_bpb(lp, nb, window=1)
    ln2 = math.log(2.0)
    want = torch.tensor([[4.0 / ((2**24 + 1) * ln2)], [6.0 / ((2**24 + 2) * ln2)], [3.0 / (2 * ln2)]],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0.0)


def test_bucketed_unreachable_other_is_per_row_with_finite_gradients() -> None:
    """In a batch mixing a row whose student cannot reach any unmapped id (masked vocabulary)
    with an ordinary row, only the first row's OTHER is -inf; the divergence is exact on both
    rows and the gradient finite (an unreachable test over the whole batch instead of per row
    lets the all -inf log-sum-exp poison the backward with NaN)."""
    logits = torch.tensor([[0.0, -math.inf, -math.inf], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    student = torch.log_softmax(logits, -1)
    ids = torch.tensor([[0], [0]])
    lps = torch.log(torch.tensor([[1.0], [0.5]], dtype=torch.float64))
    _, s, present = bucket_distributions(student, ids, lps)
    assert present.tolist() == [[True, True], [True, True]]
    assert s[0].tolist() == [0.0, -math.inf]
    torch.testing.assert_close(s[1], torch.tensor([math.log(1 / 3), math.log(2 / 3)], dtype=torch.float64))
    values, _ = bucketed_divergence(student, ids, lps)
    want1 = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    got = values.detach()
    assert float(got[0]) == 0.0 and float(got[1]) == pytest.approx(want1, rel=1e-12)
    values.sum().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    assert logits.grad[0].tolist() == [0.0, 0.0, 0.0]
