"""The crossing-price study's bookkeeping (bench/quality/crossing/crossing.py, crossing_stats.py): the
price paired by seed on hand-made numbers, and the arms' recipes: the shared variant really
takes avokit's same-vocabulary path (identity map, no byte-conditional targets), the own
variant the byte alignment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_train import make_docs, write_cache, write_corpus

from bench.quality.crossing import crossing
from bench.quality.crossing.crossing_stats import crossing_price, price_from_test
from bench.quality.fusion_proof.proof_stats import paired_interval

DOMAINS = ("chinese", "code", "english")


def _bpb(per: dict[str, float]) -> dict[str, float]:
    return {"overall": sum(per.values()) / len(per), **per}


def _test() -> dict[str, dict[int, dict[str, float]]]:
    """Seeds 0-3: KD gains 0.10 on Chinese with the shared tokenizer, 0.04 with its own BPE
    (so crossing keeps 40% there); code and English gain alike."""
    out: dict[str, dict[int, dict[str, float]]] = {a: {} for a in crossing.ARMS}
    for s in range(4):
        ce = {"chinese": 3.0 + 0.05 * s, "code": 2.0, "english": 2.5 - 0.01 * s}
        own = {k: v + 0.2 for k, v in ce.items()}
        out["ce_shared"][s] = _bpb(ce)
        out["kd_shared"][s] = _bpb({"chinese": ce["chinese"] - 0.10 - 0.01 * s, "code": 1.98, "english": ce["english"] - 0.02})
        out["ce_own"][s] = _bpb(own)
        out["kd_own"][s] = _bpb({"chinese": own["chinese"] - 0.04, "code": own["code"] - 0.02,
                                 "english": own["english"] - 0.02 + 0.001 * s})
    return out


def test_price_is_the_paired_difference_of_the_two_gaps() -> None:
    test = _test()
    p = price_from_test(test, seeds=[1, 2, 3])
    assert p["seed_ids"] == [1, 2, 3] and p["label"] == "result"

    def gap(kd: str, ce: str, s: int, k: str) -> float:
        return test[kd][s][k] - test[ce][s][k]

    per_seed = [gap("kd_own", "ce_own", s, "overall") - gap("kd_shared", "ce_shared", s, "overall") for s in (1, 2, 3)]
    assert p["mean"] == pytest.approx(sum(per_seed) / 3) and p["mean"] > 0
    assert p["ci95"] == pytest.approx(paired_interval(per_seed)["ci95"])
    chinese = [gap("kd_own", "ce_own", s, "chinese") - gap("kd_shared", "ce_shared", s, "chinese") for s in (1, 2, 3)]
    assert p["per_domain"]["chinese"]["mean"] == pytest.approx(sum(chinese) / 3)
    assert p["per_domain"]["code"]["mean"] == pytest.approx(0.0)
    shared = p["kd_minus_ce_shared"]["per_domain"]["chinese"]["mean"]
    assert shared == pytest.approx(-(0.11 + 0.12 + 0.13) / 3)
    assert p["kept_fraction"]["chinese"] == pytest.approx(-0.04 / shared)
    assert p["kept_fraction"]["code"] == pytest.approx(1.0)
    assert "measured price" in p["reading"]  # seeds 1-3 agree closely: the interval lies above zero


def test_pilot_seeds_and_unpaired_runs_are_left_out() -> None:
    test = _test()
    del test["kd_own"][3]  # seed 3 did not finish every arm: it pairs with nothing
    p = price_from_test(test, seeds=[1, 2, 3])
    assert p["seed_ids"] == [1, 2] and p["label"] == "pilot, not a result" and "pilot" in p["reading"]
    assert price_from_test(test)["seed_ids"] == [0, 1, 2]  # no seeds given: every complete seed
    # no same-vocabulary gain -> no share of it to keep
    flat = _test()
    flat["kd_shared"] = {s: dict(v) for s, v in flat["ce_shared"].items()}
    assert price_from_test(flat)["kept_fraction"]["overall"] is None


def test_crossing_price_reads_a_results_json() -> None:
    """What the lead puts into transfer.json's verdict: from the written JSON (string seeds)."""
    results = json.loads(json.dumps({"chosen_test": _test(), "seeds_counted": [1, 2, 3], "teacher": "smollm2-135m"}))
    v = crossing_price(results)
    assert v["seed_ids"] == [1, 2, 3] and v["mean"] == pytest.approx(price_from_test(_test(), [1, 2, 3])["mean"])
    assert set(v["per_domain"]) == set(DOMAINS) and v["teacher"] == "smollm2-135m"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> tuple[Path, Path]:
    """A runs folder with a small corpus and a real cache of a tiny teacher over SmolLM2's
    tokenizer, and a folder holding that tokenizer (the shared student's)."""
    root = tmp_path_factory.mktemp("crossing")
    write_corpus(root / "data", n_train=12, n_heldout=2)
    write_cache(root / "data" / "cache" / crossing.TEACHER, crossing.TEACHER, smollm2_tokenizer, make_docs(2, 1))
    shared = root / "smollm2-tokenizer"
    smollm2_tokenizer.save_pretrained(str(shared))
    return root / "runs", shared


def _settings() -> dict[str, Any]:
    return {"steps": 4, "segment_steps": 2, "batch_size": 2, "seq_len": 64, "lr": 1e-3, "warmup": 1,
            "score_max_length": 128, "mixed_precision": "no"}


def _recipe(runs: tuple[Path, Path], arm: str) -> Any:
    root, shared = runs
    (root / "data").mkdir(parents=True, exist_ok=True)
    for part in ("corpus", "cache"):
        link = root / "data" / part
        if not link.exists():
            link.symlink_to(root.parent / "data" / part)
    return crossing.arm_recipe(root, arm, 1, _settings(), shared_dir=shared)


def test_shared_arm_takes_the_same_vocabulary_path(runs: tuple[Path, Path]) -> None:
    from avokit.train.run import ensure_student_tokenizer

    rec = _recipe(runs, "kd_shared")
    assert rec.student.tokenizer.kind == "path" and rec.train.loss.targets == "boundary"
    assert rec.train.seed == 1 and rec.train.steps == 4 and rec.train.checkpoint_every == 2
    path = crossing.vocabulary_path(rec, ensure_student_tokenizer(rec))
    assert path["shares_vocabulary"] and path["identity_map"] and not path["dense"]
    assert path["student_vocab"] == path["teacher_vocab"] == 49152
    crossing.check_path("kd_shared", path)
    with pytest.raises(SystemExit, match="crossing"):
        crossing.check_path("kd_own", path)


def test_own_arm_crosses_through_the_byte_alignment(runs: tuple[Path, Path]) -> None:
    from avokit.train.run import ensure_student_tokenizer

    rec = _recipe(runs, "kd_own")
    assert rec.student.tokenizer.kind == "train" and rec.train.loss.targets == "dense" and rec.train.loss.chunk_debias
    path = crossing.vocabulary_path(rec, ensure_student_tokenizer(rec))
    assert not path["shares_vocabulary"] and not path["identity_map"] and path["dense"]
    assert path["student_vocab"] < path["teacher_vocab"]
    with pytest.raises(SystemExit, match="same-vocabulary"):
        crossing.check_path("kd_shared", path)
    # the CE arms differ from their KD arms only in the loss: same student, tokenizer and schedule
    ce = _recipe(runs, "ce_own")
    assert ce.student == rec.student and ce.train.loss.targets == "boundary"
    assert ce.train.model_dump(exclude={"loss"}) == rec.train.model_dump(exclude={"loss"})
