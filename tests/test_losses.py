"""Divergences, cross-entropy and the chunk term against first-principles numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avokit.losses.ce import cross_entropy, gold_logprobs, target_logprobs
from avokit.losses.chunk import binarize, chunk_divergence, student_chunk_logprobs
from avokit.losses.divergences import divergence, generalized_jsd, tempered, total_variation

KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")


def ref_divergence(kind: str, p: np.ndarray, q: np.ndarray, beta: float = 0.5) -> float:
    """Dense float64 reference written from the definitions (0 log 0 = 0)."""

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * (np.log(a[nz]) - np.log(b[nz]))))

    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    return 0.5 * float(np.abs(p - q).sum())


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


logit_vectors = st.integers(min_value=2, max_value=12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-8, 8), min_size=n, max_size=n),
        st.lists(st.floats(-8, 8), min_size=n, max_size=n),
    )
)


@settings(max_examples=40, deadline=None)
@given(logit_vectors, st.sampled_from(KINDS), st.floats(0.05, 0.95))
def test_divergences_match_dense_reference_and_are_nonnegative(pair, kind, beta) -> None:
    a, b = (np.asarray(v, dtype=np.float64) for v in pair)
    lp = torch.log_softmax(torch.tensor(a), -1)
    lq = torch.log_softmax(torch.tensor(b), -1)
    got = float(divergence(kind, lp, lq, beta=beta))
    want = ref_divergence(kind, _softmax64(a), _softmax64(b), beta)
    assert got == pytest.approx(want, abs=1e-9, rel=1e-6)
    assert got >= -1e-12
    assert float(divergence(kind, lp, lp.clone(), beta=beta)) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(logit_vectors)
def test_jsd_symmetric_at_half_and_tvd_in_unit_interval(pair) -> None:
    lp, lq = (torch.log_softmax(torch.tensor(v, dtype=torch.float64), -1) for v in pair)
    assert float(generalized_jsd(lp, lq, 0.5)) == pytest.approx(
        float(generalized_jsd(lq, lp, 0.5)), abs=1e-12
    )
    tvd = float(total_variation(lp, lq))
    assert 0.0 <= tvd <= 1.0


def test_disjoint_supports_give_tvd_one_and_finite_reverse_kl() -> None:
    lp = torch.tensor([0.0, -math.inf])
    lq = torch.tensor([-math.inf, 0.0])
    assert float(total_variation(lp, lq)) == pytest.approx(1.0)
    # teacher says "impossible" where the student puts all its mass: large, finite (floored)
    assert math.isfinite(float(divergence("reverse_kl", lp, lq)))
    assert float(divergence("reverse_kl", lp, lq)) > 50


@pytest.mark.parametrize("kind", KINDS)
def test_absent_outcomes_change_nothing_and_gradients_stay_finite(kind: str) -> None:
    logits = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    student = torch.log_softmax(logits, -1)
    teacher = torch.log_softmax(torch.tensor([0.2, 0.1, -1.0]), -1)
    base = divergence(kind, teacher, student)
    padded = divergence(
        kind,
        torch.cat([teacher, torch.tensor([-math.inf])]),
        torch.cat([student, torch.tensor([-math.inf])]),
    )
    assert padded.item() == pytest.approx(base.item(), abs=1e-7)
    padded.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_with_impossible_teacher_outcomes_and_extreme_student(kind: str) -> None:
    logits = torch.tensor([[30.0, -1e4, 0.0, -50.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, -math.inf, -1e30, -math.inf]])
    value = divergence(kind, teacher, torch.log_softmax(logits, -1)).sum()
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_tempered_flattens_and_is_identity_at_one() -> None:
    lp = torch.log_softmax(torch.tensor([2.0, 0.0, -1.0, -math.inf]), -1)
    assert torch.allclose(tempered(lp, 1.0), lp)
    hot = tempered(lp, 4.0).exp()
    assert hot[3] == 0 and float(hot[:3].max() - hot[:3].min()) < float(
        lp.exp()[:3].max() - lp.exp()[:3].min()
    )
    assert float(hot.sum()) == pytest.approx(1.0)


# ---------------------------------------------------------------- cross-entropy


def _ce_reference(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for p in range(ids.shape[1] - 1):
            if mask[b, p]:
                row = logits[b, p].double()
                total += float(torch.logsumexp(row, 0) - row[ids[b, p + 1]])
                count += 1
    return total / count


def test_cross_entropy_matches_reference_and_ignores_masked_positions() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    ids = torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[:, -1] = False
    mask[0, :3] = False  # a prompt
    mask[2, 4:] = False  # padding
    want = _ce_reference(logits, ids, mask)
    assert float(cross_entropy(logits, ids, mask)) == pytest.approx(want, rel=1e-5)
    pre = torch.log_softmax(logits, -1)
    assert float(cross_entropy(logits, ids, mask, pre)) == pytest.approx(want, rel=1e-5)

    perturbed = logits.clone()
    perturbed[~mask] += 100 * torch.randn(int((~mask).sum()), 11, generator=g)
    perturbed.requires_grad_(True)
    loss = cross_entropy(perturbed, ids, mask)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert perturbed.grad[~mask].abs().max() == 0


def test_cross_entropy_with_explicit_targets_uses_the_last_position() -> None:
    logits = torch.randn(2, 4, 5)
    targets = torch.randint(0, 5, (2, 4))
    mask = torch.ones(2, 4, dtype=torch.bool)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1))
    got = cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long), mask, targets=targets)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_cross_entropy_empty_mask_is_zero_with_a_graph_and_last_position_is_refused() -> None:
    logits = torch.randn(2, 4, 5, requires_grad=True)
    ids = torch.randint(0, 5, (2, 4))
    loss = cross_entropy(logits, ids, torch.zeros(2, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="last position"):
        cross_entropy(logits, ids, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside the student vocabulary"):
        target_logprobs(logits, torch.full((2, 4), 9), torch.ones(2, 4, dtype=torch.bool))


# ---------------------------------------------------------------- chunk term


def test_student_chunk_logprobs_sum_tokens_per_chunk() -> None:
    gold = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    sums, counts = student_chunk_logprobs(gold, torch.tensor([0, 0, 2, 0]), 3)
    assert sums.tolist() == [-6.0, 0.0, -0.5]
    assert counts.tolist() == [3, 0, 1]
    with pytest.raises(ValueError, match="chunk ids"):
        student_chunk_logprobs(gold, torch.tensor([0, 0, 3, 0]), 3)


@settings(max_examples=40, deadline=None)
@given(st.floats(-30, -1e-3), st.floats(-30, -1e-3), st.floats(0.5, 8.0), st.sampled_from(KINDS))
def test_chunk_divergence_is_the_binary_divergence_of_tempered_chunk_probabilities(
    lt, ls, tau, kind
) -> None:
    got = float(
        chunk_divergence(
            torch.tensor([ls], dtype=torch.float64),
            torch.tensor([lt], dtype=torch.float64),
            kind=kind,
            tau=tau,
        )[0]
    )
    a, b = math.exp(lt / tau), math.exp(ls / tau)
    want = ref_divergence(kind, np.array([a, 1 - a]), np.array([b, 1 - b]))
    assert got == pytest.approx(want, abs=1e-9, rel=1e-6)
    assert got >= -1e-12
    same = chunk_divergence(torch.tensor([lt]), torch.tensor([lt]), kind=kind, tau=tau)
    assert float(same[0]) == pytest.approx(0.0, abs=1e-7)


def test_chunk_gradients_finite_at_extremes_and_temperature_revives_long_chunks() -> None:
    student = torch.tensor([0.0, -1e-9, -200.0, -5000.0, -3.0], requires_grad=True)
    teacher = torch.tensor([0.0, -5.0, -1.0, -math.inf, -1e30])
    for kind in KINDS:
        value = chunk_divergence(student, teacher, kind=kind, tau=1.0).sum()
        (grad,) = torch.autograd.grad(value, student)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), kind
    # a 40-nat chunk the student gets 20 nats wrong: invisible at tau=1, a real signal at tau=10
    s = torch.tensor([-60.0], requires_grad=True)
    (g1,) = torch.autograd.grad(chunk_divergence(s, torch.tensor([-40.0]), tau=1.0).sum(), s)
    (g10,) = torch.autograd.grad(chunk_divergence(s, torch.tensor([-40.0]), tau=10.0).sum(), s)
    assert abs(float(g1)) < 1e-12 < 1e-3 < abs(float(g10))
    assert binarize(torch.tensor([-1.0]), 1.0).exp().sum().item() == pytest.approx(1.0)


def test_gold_logprobs_select_the_next_input_token() -> None:
    logits = torch.randn(1, 3, 4)
    ids = torch.tensor([[0, 3, 1]])
    select = torch.tensor([[True, True, False]])
    lp = torch.log_softmax(logits, -1)
    got = gold_logprobs(logits, ids, select)
    assert torch.allclose(got, torch.stack([lp[0, 0, 3], lp[0, 1, 1]]), atol=1e-6)
