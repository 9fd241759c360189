"""The complementarity benchmark's pure functions on small synthetic records (no teachers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.quality.complementarity.complementarity_math import (
    bayes_closed_nll,
    common_boundaries,
    mix_nll,
    mix_nll_grid,
    score_spans,
    sequential_mix_nll,
    simplex_grid,
    span_logprobs,
    span_winners,
    two_fold_fit,
)
from bench.quality.complementarity.complementarity_stats import (
    DomainTable,
    bootstrap_gains,
    point_estimate,
    win_shares,
)

LN2 = math.log(2.0)

# A 10-byte document tokenized three ways:
#   A ends tokens at 2, 5, 7, 10; B at 3, 5, 10; C at 1, 2, 5, 6, 10.
# Common to all three: 5 and 10, so spans [0, 5) and [5, 10).
ENDS = [np.array([2, 5, 7, 10]), np.array([3, 5, 10]), np.array([1, 2, 5, 6, 10])]
GOLD = [np.array([-0.1, -0.2, -0.3, -0.4]), np.array([-1.0, -2.0, -3.0]),
        np.array([-0.5, -0.5, -0.5, -0.25, -0.25])]


def test_common_boundaries_of_three_tokenizations() -> None:
    assert common_boundaries(ENDS).tolist() == [5, 10]


def test_span_logprobs_sums_tokens_between_common_boundaries() -> None:
    sp = span_logprobs(ENDS, GOLD)
    # hand sums: A 0.1+0.2 | 0.3+0.4; B 1+2 | 3; C 0.5*3 | 0.25*2
    np.testing.assert_allclose(sp.logp, [[-0.3, -0.7], [-3.0, -3.0], [-1.5, -0.5]])
    assert sp.n_bytes.tolist() == [5, 5] and sp.covered == 10


def test_span_logprobs_drops_bytes_after_last_common_boundary() -> None:
    # B stops at byte 5 (a teacher that scored only a prefix): everyone is cut at 5
    sp = span_logprobs([ENDS[0], np.array([3, 5])], [GOLD[0], np.array([-1.0, -2.0])])
    np.testing.assert_allclose(sp.logp, [[-0.3], [-3.0]])
    assert sp.covered == 5


def test_mix_nll_hand_value() -> None:
    lp = np.log(np.array([[0.5, 0.1], [0.1, 0.5]]))
    # each span: 0.5 * 0.5 + 0.5 * 0.1 = 0.3
    assert mix_nll(lp, np.array([0.5, 0.5])) == pytest.approx(-2 * math.log(0.3))
    # a zero weight leaves exactly the other teacher
    assert mix_nll(lp, np.array([1.0, 0.0])) == pytest.approx(-math.log(0.05))
    with pytest.raises(ValueError):
        mix_nll(lp, np.array([0.7, 0.7]))


def test_mix_nll_grid_matches_mix_nll() -> None:
    lp = span_logprobs(ENDS, GOLD).logp
    grid = simplex_grid(3, 0.25)
    assert grid.shape == (15, 3) and np.allclose(grid.sum(1), 1.0)
    np.testing.assert_allclose(mix_nll_grid(lp, grid), [mix_nll(lp, w) for w in grid])


def test_sequential_bayes_hand_value_and_closed_form() -> None:
    lp = np.log(np.array([[0.5, 0.1], [0.1, 0.5]]))
    # span 1: 0.5*0.5 + 0.5*0.1 = 0.3; posterior (0.25, 0.05)/0.3 = (5/6, 1/6);
    # span 2: 5/6*0.1 + 1/6*0.5 = 1/6. Total probability 0.3/6 = 0.05.
    assert sequential_mix_nll(lp) == pytest.approx(-math.log(0.05))
    assert bayes_closed_nll(lp) == pytest.approx(-math.log(0.5 * 0.05 + 0.5 * 0.05))
    rng = np.random.default_rng(1)
    big = np.log(rng.uniform(0.01, 1.0, size=(3, 40)))
    assert sequential_mix_nll(big) == pytest.approx(bayes_closed_nll(big))


def test_fixed_share_hand_value_and_limits() -> None:
    lp = np.log(np.array([[0.5, 0.1], [0.1, 0.5]]))
    # alpha = 0.5: posterior (5/6, 1/6) -> 0.5 * it + 0.25 = (2/3, 1/3);
    # span 2: 2/3*0.1 + 1/3*0.5 = 7/30. Total 0.3 * 7/30 = 0.07.
    assert sequential_mix_nll(lp, alpha=0.5) == pytest.approx(-math.log(0.07))
    # alpha = 1 forgets everything: the uniform mix in every span
    assert sequential_mix_nll(lp, alpha=1.0) == pytest.approx(mix_nll(lp, np.array([0.5, 0.5])))


def test_span_winners_marks_ties() -> None:
    lp = np.array([[-1.0, -2.0, -0.5], [-2.0, -1.0, -0.5], [-3.0, -3.0, -4.0]])
    assert span_winners(lp).tolist() == [0, 1, -1]


def test_two_fold_fit_uses_the_other_half() -> None:
    # column 0 is best on even docs, column 1 on odd: each half gets the other half's pick
    nll = np.array([[1.0, 5.0], [5.0, 1.0], [1.0, 5.0], [5.0, 1.0]])
    out, chosen = two_fold_fit(nll)
    assert chosen == [1, 0]
    assert out.tolist() == [5.0, 5.0, 5.0, 5.0]


def _uniform_fusion(bpb: np.ndarray) -> np.ndarray:
    return np.full(bpb.shape, 1.0 / bpb.size)


def _table(docs: list[np.ndarray], span_bytes: int = 4) -> DomainTable:
    from bench.quality.complementarity.complementarity_math import Spans

    grid = simplex_grid(2, 0.5)
    scores = [score_spans(Spans(lp, np.full(lp.shape[1], span_bytes)), grid, [0.1], _uniform_fusion)
              for lp in docs]
    return DomainTable.from_scores(scores)


def test_score_spans_and_point_estimate_hand_values() -> None:
    # teacher a is better on doc 1, teacher b on doc 2, by the same amount
    d1 = np.log(np.array([[0.5, 0.5], [0.25, 0.25]]))
    d2 = np.log(np.array([[0.25, 0.25], [0.5, 0.5]]))
    tables = {"x": _table([d1, d2])}
    est = point_estimate(tables, ["a", "b"])
    n_bytes = 16.0
    # each teacher: 2*ln2 + 2*ln4 = 6 ln2 nats over 16 bytes = 0.375 BPB
    assert est["a"]["x"] == pytest.approx(6 * LN2 / LN2 / n_bytes)
    assert est["best_single"]["x"] == pytest.approx(0.375)
    # oracle per document: 2 ln2 per doc -> 4 bits / 16 bytes
    assert est["oracle_document"]["x"] == pytest.approx(0.25)
    # uniform mix: every span 0.375 -> 4 * -log2(0.375) bits / 16
    assert est["uniform_span"]["x"] == pytest.approx(-4 * math.log2(0.375) / 16)
    # one domain: the overall columns are that domain's figure
    assert est["uniform_span"]["overall_balanced"] == pytest.approx(est["uniform_span"]["x"])
    assert est["uniform_span"]["overall_bytes"] == pytest.approx(est["uniform_span"]["x"])
    shares = win_shares(tables, ["a", "b"])
    assert shares["documents"]["x"] == {"a": 0.5, "b": 0.5}
    assert shares["spans"]["x"] == {"a": 0.5, "b": 0.5, "tie": 0.0}


def test_overall_best_single_is_one_teacher_for_all_domains() -> None:
    # domain x: a 1 bit/byte better; domain y: b 0.5 better. Per domain the best differ; one
    # teacher for both domains (balanced) is a: mean(a) = (x_a + y_a)/2 < mean(b).
    good, bad, mid = np.log([[0.5]]), np.log([[0.125]]), np.log([[0.25]])
    x = _table([np.vstack([good, bad])], span_bytes=1)  # a 1 bit, b 3 bits
    y = _table([np.vstack([mid, good])], span_bytes=1)  # a 2 bits, b 1 bit
    est = point_estimate({"x": x, "y": y}, ["a", "b"])
    assert est["best_single"]["overall_balanced"] == pytest.approx(1.5)  # a: (1 + 2) / 2
    assert est["best_teacher_per_domain"]["overall_balanced"] == pytest.approx(1.0)  # (1 + 1) / 2


def test_bootstrap_interval_contains_the_point_gain() -> None:
    rng = np.random.default_rng(0)
    docs = [np.log(rng.uniform(0.05, 1.0, size=(2, 12))) for _ in range(30)]
    tables = {"x": _table(docs)}
    est = point_estimate(tables, ["a", "b"])
    ci = bootstrap_gains(tables, ["a", "b"], 300, seed=0)
    gain = est["best_single"]["x"] - est["uniform_span"]["x"]
    assert ci["uniform_span"]["x"]["lo"] <= gain <= ci["uniform_span"]["x"]["hi"]
    # the oracle per span never loses to a single teacher, in any resample
    assert ci["oracle_span"]["x"]["lo"] >= 0.0 and ci["oracle_span"]["x"]["p_gain_positive"] == 1.0


def test_balanced_order_keeps_domains_level() -> None:
    from collections import Counter

    from bench.quality.complementarity.complementarity_capture import balanced_order

    # corpus order: three English shards, then two code, then one Chinese
    shards = [Counter(english=10), Counter(english=10), Counter(english=10),
              Counter(code=10), Counter(code=10), Counter(chinese=30)]
    # next shard: the first of the domain with the fewest bytes so far (ties: corpus order)
    assert balanced_order(shards) == [0, 3, 5, 1, 4, 2]
    # with splits: within a domain, the split with the smallest share done goes next, so the
    # held-out shards are not all left to the end
    eng = [Counter(english=10)] * 4 + [Counter(english=10)]
    assert balanced_order(eng, ["train"] * 4 + ["heldout"]) == [0, 4, 1, 2, 3]
