"""The fusion proof's statistics (bench/quality/fusion_proof/proof_stats.py) on hand-made numbers."""

from __future__ import annotations

import pytest

from bench.quality.fusion_proof.proof_stats import (
    build_proof,
    chosen,
    chosen_test_bpb,
    gap_closure,
    paired_interval,
)


def test_paired_interval_by_hand() -> None:
    # diffs -1, -2, -3: mean -2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3)
    out = paired_interval([-1.0, -2.0, -3.0])
    half = 4.302653 / 3 ** 0.5
    assert out["mean"] == -2.0 and out["sd"] == pytest.approx(1.0)
    assert out["ci95"] == pytest.approx([-2.0 - half, -2.0 + half], abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_interval([0.1])


def test_checkpoint_is_chosen_on_validation_never_on_test() -> None:
    segs = [{"step": 10, "validation": {"overall": 3.0}, "test": {"overall": 1.0}},
            {"step": 20, "validation": {"overall": 2.5}, "test": {"overall": 9.0}},
            {"step": 30, "validation": {"overall": 2.5}, "test": {"overall": 0.5}}]
    assert chosen(segs)["step"] == 20  # lowest validation, earliest on a tie; test is ignored
    assert chosen_test_bpb({"v": {0: {"segments": segs}, 1: {"segments": []}}}) == {"v": {0: {"overall": 9.0}}}


def test_gap_closure() -> None:
    assert gap_closure(4.0, 3.0, 2.0) == 0.5
    assert gap_closure(2.0, 1.9, 2.0) is None


def _run(overall: float, code: float, text: float) -> dict[str, float]:
    return {"overall": overall, "code": code, "text": text}


def test_proof_pairs_seeds_and_picks_best_single_per_domain() -> None:
    test = {
        "a_ce": {s: _run(4.0, 4.0, 4.0) for s in range(3)},
        # b_x is the best single overall and on text; b_y is best on code
        "b_x": {s: _run(3.0 + 0.01 * s, 3.5, 2.5) for s in range(3)},
        "b_y": {s: _run(3.2, 3.0 + 0.01 * s, 3.4) for s in range(3)},
        "d": {0: _run(2.9, 3.05, 2.45), 1: _run(2.92, 3.07, 2.46), 2: _run(2.93, 3.06, 2.44),
              7: _run(0.0, 0.0, 0.0)},  # a seed the others lack is not paired
    }
    teachers = {"t1": _run(2.0, 1.5, 2.5), "t2": _run(2.5, 2.5, 1.5)}
    proof = build_proof(test, ["b_x", "b_y"], "d", "a_ce", teachers)
    assert proof["seeds"] == 3 and proof["seed_ids"] == [0, 1, 2] and proof["best_single"] == "b_x"
    diffs = [2.9 - 3.0, 2.92 - 3.01, 2.93 - 3.02]
    assert proof["fused_minus_best_single"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert proof["fused_minus_best_single"]["ci95"] == pytest.approx(paired_interval(diffs)["ci95"])
    assert proof["per_domain"]["code"]["best_single"] == "b_y"
    assert proof["per_domain"]["text"]["best_single"] == "b_x"
    code = [3.05 - 3.0, 3.07 - 3.01, 3.06 - 3.02]
    assert proof["per_domain"]["code"]["diff_mean"] == pytest.approx(sum(code) / 3)
    # closure: (CE - fused) / (CE - best teacher), on seed means
    fused_overall = (2.9 + 2.92 + 2.93) / 3
    assert proof["gap_closure"]["overall"] == pytest.approx((4.0 - fused_overall) / (4.0 - 2.0))
    assert proof["gap_closure"]["text"] == pytest.approx((4.0 - 2.45) / (4.0 - 1.5))
    # better overall, but worse than b_y on code beyond its interval: the proof does not hold
    assert proof["fused_minus_best_single"]["ci95"][1] < 0
    assert proof["per_domain"]["code"]["diff_ci95"][0] > 0 and proof["holds"] is False
    with pytest.raises(ValueError, match="need at least 2"):
        build_proof({**test, "b_y": {0: _run(3.2, 3.0, 3.4)}}, ["b_x", "b_y"], "d", "a_ce", teachers)


def test_paired_differences_use_shared_seeds_only() -> None:
    from bench.quality.fusion_proof.proof_stats import paired_differences

    test = {"a": {0: {"overall": 1.0, "x": 2.0}, 1: {"overall": 2.0, "x": 2.0}, 2: {"overall": 9.0, "x": 9.0}},
            "b": {0: {"overall": 0.5, "x": 1.0}, 1: {"overall": 1.0, "x": 1.0}}}
    d = paired_differences(test, "a", "b")
    assert d is not None and d["seeds"] == [0, 1]
    assert d["overall"]["mean"] == 0.75 and d["x"]["mean"] == 1.0 and d["x"]["ci95"] == [1.0, 1.0]
    assert paired_differences({"a": test["a"], "b": {0: test["b"][0]}}, "a", "b") is None
