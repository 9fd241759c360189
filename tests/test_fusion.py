"""Teacher fusion weights: fixed, BPB softmax, MinCE."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avokit.losses.fusion import document_bpb, document_weights, mean_teacher_weights

bpb_rows = st.integers(1, 4).flatmap(
    lambda n: st.lists(
        st.lists(st.floats(0.2, 6.0), min_size=n, max_size=n), min_size=1, max_size=6
    )
)


@settings(max_examples=40, deadline=None)
@given(bpb_rows, st.sampled_from(["fixed", "bpb_softmax", "min_ce"]), st.floats(0.01, 5.0))
def test_rows_sum_to_one_and_min_ce_picks_the_argmin(rows, mode, temperature) -> None:
    bpb = torch.tensor(rows, dtype=torch.float64)
    w = document_weights(bpb, mode, temperature)
    assert w.shape == bpb.shape
    assert torch.allclose(w.sum(-1), torch.ones(len(rows), dtype=torch.float64))
    assert (w >= 0).all()
    if mode == "min_ce":
        best = bpb.min(-1, keepdim=True).values
        assert torch.equal(w > 0, bpb == best)
    if mode == "bpb_softmax":
        # lower BPB never gets less weight
        for r in range(len(rows)):
            order = torch.argsort(bpb[r])
            assert (w[r, order][1:] <= w[r, order][:-1] + 1e-12).all()


def test_bpb_softmax_values_and_its_zero_temperature_limit_is_min_ce() -> None:
    bpb = torch.tensor([[1.0, 1.5, 3.0], [2.0, 0.9, 0.95]])
    w = document_weights(bpb, "bpb_softmax", 0.5)
    want = torch.softmax(-bpb / 0.5, -1)
    assert torch.allclose(w, want)
    cold = document_weights(bpb, "bpb_softmax", 1e-4)
    assert torch.allclose(cold, document_weights(bpb, "min_ce", 1.0), atol=1e-6)
    assert document_weights(torch.tensor([[1.0, 1.0, 2.0]]), "min_ce", 1.0).tolist() == [
        [0.5, 0.5, 0.0]
    ]


def test_fixed_weights_prior_zero_weight_and_missing_teachers() -> None:
    bpb = torch.tensor([[1.0, 2.0, math.nan], [1.0, math.inf, 2.0], [math.nan, math.inf, math.nan]])
    fixed = document_weights(bpb, "fixed", 1.0, [1.0, 3.0, 1.0])
    assert fixed[0].tolist() == pytest.approx([0.25, 0.75, 0.0])
    assert fixed[1].tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert fixed[2].tolist() == [0.0, 0.0, 0.0]  # no teacher covers it: KD vanishes there
    prior = document_weights(
        torch.tensor([[1.0, 1.0]]), "bpb_softmax", 1.0, torch.tensor([1.0, 3.0])
    )
    assert prior[0].tolist() == pytest.approx([0.25, 0.75])
    off = document_weights(torch.tensor([[0.5, 1.0]]), "min_ce", 1.0, [0.0, 1.0])
    assert off[0].tolist() == [0.0, 1.0]  # a switched-off teacher is never the argmin


def test_bad_inputs_are_named() -> None:
    bpb = torch.ones(2, 2)
    with pytest.raises(ValueError, match="fixed"):
        document_weights(bpb, "fixed", 1.0, [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        document_weights(bpb, "fixed", 1.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="temperature"):
        document_weights(bpb, "bpb_softmax", 0.0)
    with pytest.raises(ValueError, match="mode"):
        document_weights(bpb, "average", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="D, n_teachers"):
        document_weights(torch.ones(3), "fixed", 1.0)


def test_document_bpb_and_logged_means() -> None:
    nll = torch.tensor([[math.log(2) * 8, math.log(2) * 4], [1.0, 1.0]])
    bpb = document_bpb(nll, torch.tensor([4, 0]))
    assert bpb[0].tolist() == pytest.approx([2.0, 1.0])
    assert torch.isnan(bpb[1]).all()
    w = document_weights(bpb, "min_ce", 1.0)
    assert mean_teacher_weights(w, ["gemma", "smol"]) == {"gemma": 0.0, "smol": 0.5}
    assert mean_teacher_weights(torch.zeros(0, 2), ["a", "b"]) == {"a": 0.0, "b": 0.0}
    with pytest.raises(ValueError, match="teacher names"):
        mean_teacher_weights(w, ["only-one"])


def test_common_spans_hand_case_and_teacher_sums() -> None:
    import numpy as np

    from avokit.align.spans import common_spans

    # bytes 0..8; teacher A ends 2,4,5,8; teacher B ends 3,4,8 (covers all); student ends 1,2,4,6,8
    spans = common_spans([np.array([2, 4, 5, 8]), np.array([3, 4, 8])],
                         [np.array([-1.0, -2.0, -0.5, -3.0]), np.array([-4.0, -1.0, -2.0])],
                         np.array([1, 2, 4, 6, 8]))
    assert spans.bounds.tolist() == [0, 4, 8] and spans.n_bytes.tolist() == [4, 4]
    assert spans.logprob.tolist() == [[-3.0, -5.0], [-3.5, -2.0]]
    assert spans.span_of_student.tolist() == [0, 0, 0, 1, 1]
    # a teacher covering only a prefix (max_length) cuts the spans there
    short = common_spans([np.array([2, 4]), np.array([3, 4, 8])], [np.array([-1.0, -2.0]), np.array([-4.0, -1.0, -2.0])],
                         np.array([1, 2, 4, 6, 8]))
    assert short.bounds.tolist() == [0, 4] and short.logprob.tolist() == [[-3.0, -5.0]]
    assert short.span_of_student.tolist() == [0, 0, 0, -1, -1]


def test_local_bpb_pools_the_window_like_a_brute_force_sum() -> None:
    import math

    from avokit.losses.fusion import local_bpb

    torch.manual_seed(0)
    lp = -torch.rand(9, 3, dtype=torch.float64) * 5
    nb = torch.randint(1, 7, (9,))
    assert torch.allclose(local_bpb(lp, nb, 0), -lp / (nb.unsqueeze(1) * math.log(2)))
    got = local_bpb(lp, nb, 2)
    for i in range(9):
        lo, hi = max(0, i - 2), min(9, i + 3)
        want = -lp[lo:hi].sum(0) / (nb[lo:hi].sum() * math.log(2))
        assert torch.allclose(got[i], want)
    with pytest.raises(ValueError, match="window"):
        local_bpb(lp, nb, -1)


def test_per_document_priors_equal_row_by_row_fusion() -> None:
    """A [D, n] prior (e.g. per-domain weights) gives each row what that row's own [n] prior gives."""
    bpb = torch.tensor([[1.0, 2.0, 0.5], [1.5, math.inf, 1.0], [0.7, 0.8, 0.9]], dtype=torch.float64)
    priors = torch.tensor([[1.0, 0.0, 0.0], [0.2, 1.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    for mode in ("fixed", "bpb_softmax", "min_ce"):
        whole = document_weights(bpb, mode, 0.3, priors)
        for r in range(3):
            assert torch.allclose(whole[r], document_weights(bpb[r:r + 1], mode, 0.3, priors[r])[0])
    assert document_weights(bpb, "bpb_softmax", 0.3, priors)[0].tolist() == [1.0, 0.0, 0.0]  # routed
    with pytest.raises(ValueError, match=r"fixed weights must be \[3\] or \[3, 3\]"):
        document_weights(bpb, "fixed", 1.0, torch.ones(2, 3))
