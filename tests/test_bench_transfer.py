"""The transfer benchmark's bookkeeping (bench/quality/transfer/transfer.py, transfer_stats.py) on hand-made
numbers and segment files, without any real model: the verdict, its holds rule, the pilot label,
the report, the settings lock and the resume of a run's segment list."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bench.quality.fusion_proof.proof_stats import paired_interval
from bench.quality.transfer import transfer
from bench.quality.transfer.transfer_stats import PILOT, build_verdict, difference

GEMMA, QWEN = transfer.TEACHERS
DOMAINS = ("chinese", "code", "english")
# Gemma is better than the start on Chinese and English, worse on code
TEACHER_BPB = {GEMMA: {"overall": 1.2, "chinese": 1.6, "code": 0.8, "english": 1.2},
               QWEN: {"overall": 1.4, "chinese": 1.8, "code": 0.6, "english": 1.7}}
START = {"chinese": 2.35, "code": 0.70, "english": 1.36}


def _bpb(per: dict[str, float]) -> dict[str, float]:
    return {"overall": sum(per.values()) / len(per), **per}


def _test(seeds: list[int], kd_code: float = +0.02, kd_chinese: tuple[float, ...] = (-0.03, -0.04, -0.05),
          kd_english: float = -0.02) -> dict:
    """arm -> seed -> test BPB: KD from Gemma better than CE on Chinese and English (tight),
    worse on code; ULD a little worse than kd_gemma everywhere."""
    ce = {s: _bpb({"chinese": 2.10 + 0.01 * s, "code": 0.55, "english": 1.30 + 0.002 * s}) for s in seeds}
    kd = {s: _bpb({"chinese": ce[s]["chinese"] + kd_chinese[i % len(kd_chinese)],
                   "code": ce[s]["code"] + kd_code + 0.001 * i,
                   "english": ce[s]["english"] + kd_english - 0.001 * i}) for i, s in enumerate(seeds)}
    return {"start": {s: _bpb(START) for s in seeds}, "ce": ce, "kd_gemma": kd,
            "kd_qwen": {s: {k: v + 0.01 for k, v in ce[s].items()} for s in seeds},
            "uld_gemma": {s: {k: v + 0.005 + 0.001 * i for k, v in kd[s].items()} for i, s in enumerate(seeds)}}


def _verdict(test: dict, seeds: Any = None) -> dict[str, Any]:
    return build_verdict(test, TEACHER_BPB, transfer.VERDICT_KD, transfer.VERDICT_ULD, GEMMA, seeds=seeds)


def test_verdict_shape_and_paired_intervals() -> None:
    test = _test([0, 1, 2])
    v = _verdict(test)
    assert {"student", "seeds", "per_teacher", "uld_minus_avokit", "crossing_price", "holds"} <= set(v)
    assert v["student"] == "smollm2-135m" and v["seeds"] == 3 and v["label"] == "result"
    assert v["crossing_price"] is None and "not measured" in v["crossing_price_note"]
    g = v["per_teacher"][GEMMA]
    diffs = [test["kd_gemma"][s]["overall"] - test["ce"][s]["overall"] for s in range(3)]
    assert g["kd_minus_ce"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert g["kd_minus_ce"]["ci95"] == pytest.approx(paired_interval(diffs)["ci95"])
    assert set(g["per_domain"]) == set(DOMAINS) and set(g["per_domain"]["code"]) == {"mean", "ci95"}
    assert g["teacher_better_than_start"] == ["chinese", "english"]
    assert v["per_teacher"][QWEN]["kd_minus_ce"]["mean"] == pytest.approx(0.01)
    assert v["per_teacher"][QWEN]["teacher_better_than_start"] == ["chinese", "code"]
    u = v["uld_minus_avokit"]
    assert (u["arm"], u["reference"], u["teacher"], u["seeds"]) == ("uld_gemma", "kd_gemma", GEMMA, 3)
    assert u["mean"] == pytest.approx(0.006) and u["ci95"][0] > 0
    json.dumps(v)  # the verdict goes into the report's JSON as it is


def test_holds_needs_every_domain_where_gemma_beats_the_start() -> None:
    # KD worse than CE on code, where Gemma is worse than the start: the claim still holds
    v = _verdict(_test([0, 1, 2]))
    assert v["per_teacher"][GEMMA]["per_domain"]["code"]["ci95"][0] > 0
    assert v["holds"] is True and "chinese, english" in v["why"]
    # Chinese (Gemma better than the start there) with an interval crossing zero: it does not hold
    v = _verdict(_test([0, 1, 2], kd_chinese=(-0.05, +0.04, -0.02), kd_english=-0.2))
    assert v["per_teacher"][GEMMA]["kd_minus_ce"]["ci95"][1] < 0  # overall still below zero
    assert v["holds"] is False and "chinese" in v["why"]
    # the start unscored: which domains count is unknown, so it cannot hold
    test = _test([0, 1, 2])
    del test["start"]
    v = _verdict(test)
    assert v["per_teacher"][GEMMA]["teacher_better_than_start"] is None and v["holds"] is False


def test_fewer_than_three_seeds_are_a_pilot_and_never_hold() -> None:
    two = _verdict(_test([0, 1], kd_chinese=(-0.03, -0.031), kd_english=-0.2))
    assert two["seeds"] == 2 and two["label"] == PILOT and two["holds"] is False
    g = two["per_teacher"][GEMMA]  # the numbers alone would pass
    assert g["kd_minus_ce"]["ci95"][1] < 0 and all(g["per_domain"][d]["ci95"][1] < 0 for d in ("chinese", "english"))
    assert "pilot" in two["why"]
    one = _verdict(_test([0]))
    assert one["seeds"] == 1 and one["label"] == PILOT and one["holds"] is False
    assert one["per_teacher"][GEMMA]["kd_minus_ce"]["ci95"] is None
    assert one["per_teacher"][GEMMA]["kd_minus_ce"]["mean"] is not None
    none = _verdict({"ce": {0: _bpb(START)}})
    assert none["seeds"] == 0 and none["per_teacher"][GEMMA]["kd_minus_ce"] == {"mean": None, "ci95": None}


def test_pilot_seeds_are_left_out_by_name() -> None:
    test = _test([0, 1, 2, 3])
    v = _verdict(test, seeds=[1, 2, 3])
    assert v["seeds"] == 3 and v["per_teacher"][GEMMA]["seed_ids"] == [1, 2, 3]
    assert difference(test, "kd_gemma", "ce", [1, 2, 3])["seeds"] == [1, 2, 3]


# --- the report and the training bookkeeping on hand-made run folders ---------------------------

SETTINGS = {"steps": 30, "segment_steps": 10, "batch_size": 4, "seq_len": 256, "lr": 1e-4, "warmup": 10,
            "score_max_length": 512, "mixed_precision": "no"}


def _segment(step: int, val: float, test: float) -> dict[str, Any]:
    return {"step": step, "train_wall_s": 10.0, "score_wall_s": 2.0, "load": 1.0,
            "validation": _bpb(dict.fromkeys(DOMAINS, val)), "test": _bpb(dict.fromkeys(DOMAINS, test))}


def _data(runs: Path) -> None:
    (runs / "data" / "corpus").mkdir(parents=True)
    (runs / "data" / "corpus" / "manifest.json").write_text("{}")
    corpus = {"documents": {"train": 3}, "domains": {}, "domain_texts": {}, "domain_bytes": {}}
    (runs / "data" / "data.json").write_text(json.dumps({
        "corpus": corpus, "corpus_manifest_sha256": "abc", "student": "smollm2-135m", "student_dir": "/x",
        "student_tokens": {"train": {"total": 1000}}, "teachers_test_bpb": TEACHER_BPB,
        "teacher_caches": {GEMMA: {"compute_dtype": "float32"}}, "created": "now"}))
    (runs / "settings.json").write_text(json.dumps(SETTINGS))


def _write_run(runs: Path, arm: str, seed: int, segments: list[dict[str, Any]]) -> None:
    folder = runs / arm / f"s{seed}"
    folder.mkdir(parents=True)
    (folder / "segments.json").write_text(json.dumps(segments))
    proc = {"commit": "c0ffee" * 7, "dtype": "float32", "cpu": "AMD EPYC", "corpus_manifest_sha256": "abc"}
    (folder / "run.json").write_text(json.dumps({"processes": [proc]}))


def test_report_chooses_on_validation_and_writes_the_verdict(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _data(runs)
    for s in range(3):
        _write_run(runs, "start", s, [_segment(0, 2.0, 2.0)])
        _write_run(runs, "ce", s, [_segment(10, 1.9, 1.8), _segment(20, 1.8, 1.7 + 0.01 * s), _segment(30, 1.85, 1.0)])
        # KD: chosen at step 30 on validation; its test is 0.1 below CE's chosen step
        _write_run(runs, "kd_gemma", s, [_segment(10, 1.9, 1.9), _segment(20, 1.85, 1.9),
                                         _segment(30, 1.7, 1.6 + 0.01 * s + 0.002 * s * s)])
    _write_run(runs, "kd_qwen", 0, [_segment(10, 1.9, 1.9)])  # still training: not counted
    out = tmp_path / "results" / "transfer"
    result = transfer.report(runs, out, None, crossing=tmp_path / "no-crossing.json")
    saved = json.loads(out.with_suffix(".json").read_text())
    v = saved["verdict"]
    assert v == json.loads(json.dumps(result["verdict"]))
    assert saved["chosen_step"]["ce"]["0"] == 20 and saved["chosen_step"]["kd_gemma"]["0"] == 30
    assert v["per_teacher"][GEMMA]["kd_minus_ce"]["mean"] == pytest.approx(-0.1 + 0.002 * 5 / 3)
    assert v["per_teacher"][QWEN]["seeds"] == 0 and v["holds"] is True  # KD better on every domain
    # at equal steps (the last, 30: no checkpoint chosen) CE's overtrained test is 1.0: KD is worse there
    eq = v["equal_steps"]
    assert eq["step"] == 30 and eq["per_teacher"][GEMMA]["seeds"] == 3
    assert eq["per_teacher"][GEMMA]["kd_minus_ce"]["mean"] == pytest.approx(0.6 + 0.01 + 0.002 * 5 / 3)
    assert any(u.startswith("kd_qwen/s0") for u in saved["unfinished"])
    assert saved["budget"]["tokens_per_run"] == 30 * 4 * 256
    assert saved["records"]["commit"] == ["c0ffee" * 7] and saved["records"]["dtype"] == ["float32"]
    md = out.with_suffix(".md").read_text()
    assert "**Verdict (3 seeds): holds**" in md and "Pilot" not in md
    assert "at equal steps (step 30 for both arms" in md
    assert "| start |" in md and "teacher gemma3-270m" in md and "issue 31 item 3a): not measured" in md
    # the same runs counted on two seeds only: a pilot, never a result
    pilot = transfer.report(runs, out, [0, 1], crossing=tmp_path / "no-crossing.json")["verdict"]
    assert pilot["seeds"] == 2 and pilot["holds"] is False and pilot["label"] == PILOT
    assert "Pilot, not a result" in out.with_suffix(".md").read_text()


def test_report_carries_an_earlier_uld_comparison_only_when_its_runs_have_none(tmp_path: Path) -> None:
    """A test that trains no ULD arm names the earlier results file its ULD comparison comes from;
    runs that trained one keep their own."""
    runs = tmp_path / "runs"
    _data(runs)
    for s in range(3):
        _write_run(runs, "ce", s, [_segment(10, 1.9, 1.8), _segment(20, 1.8, 1.7 + 0.01 * s), _segment(30, 1.85, 1.0)])
        _write_run(runs, "kd_gemma", s, [_segment(10, 1.9, 1.9), _segment(20, 1.85, 1.9),
                                         _segment(30, 1.7, 1.6 + 0.01 * s)])
    earlier = tmp_path / "results" / "transfer_first.json"
    earlier.parent.mkdir(parents=True)
    uld = {"teacher": GEMMA, "arm": "uld_gemma", "reference": "kd_gemma_gated", "seeds": 3, "seed_ids": [1, 2, 3],
           "mean": 0.0078, "ci95": [0.0044, 0.0111], "per_domain": {"code": {"mean": 0.001, "ci95": [-0.002, 0.005]}}}
    earlier.write_text(json.dumps({"verdict": {"uld_minus_avokit": uld}}))
    out = tmp_path / "results" / "transfer"
    v = transfer.report(runs, out, None, crossing=tmp_path / "none.json", uld_from=earlier)["verdict"]
    assert v["uld_minus_avokit"] == {**uld, "source": "transfer_first.json"}
    assert "from [transfer_first.md](transfer_first.md)" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="--uld-from .*missing.json"):
        transfer.report(runs, out, None, crossing=tmp_path / "none.json", uld_from=tmp_path / "missing.json")
    for s in range(3):  # runs with their own ULD arm: nothing is carried
        _write_run(runs, "uld_gemma", s, [_segment(10, 1.9, 1.9), _segment(20, 1.85, 1.9),
                                          _segment(30, 1.7, 1.65 + 0.01 * s)])
    own = transfer.report(runs, out, None, crossing=tmp_path / "none.json", uld_from=earlier)["verdict"]
    assert own["uld_minus_avokit"]["seeds"] == 3 and "source" not in own["uld_minus_avokit"]
    assert own["uld_minus_avokit"]["mean"] == pytest.approx(0.05)


def _args(**kw: Any) -> argparse.Namespace:
    base = {"steps": 30, "segment_steps": 10, "batch_size": 4, "seq_len": 256, "lr": 1e-4, "warmup": 10,
            "score_max_length": 512}
    return argparse.Namespace(**{**base, **kw})


def test_settings_lock_lets_steps_grow_only(tmp_path: Path) -> None:
    assert transfer.lock_settings(tmp_path, _args())["steps"] == 30
    assert transfer.lock_settings(tmp_path, _args(steps=None))["steps"] == 30  # as recorded
    assert transfer.lock_settings(tmp_path, _args(steps=50))["steps"] == 50
    with pytest.raises(SystemExit, match="runs only grow"):
        transfer.lock_settings(tmp_path, _args(steps=40))
    with pytest.raises(SystemExit, match="other settings"):
        transfer.lock_settings(tmp_path, _args(steps=50, lr=2e-4))
    with pytest.raises(SystemExit, match="not a multiple"):
        transfer.lock_settings(tmp_path, _args(steps=55))
    with pytest.raises(SystemExit, match="give --steps"):
        transfer.lock_settings(tmp_path / "new", _args(steps=None))


def test_settings_lock_keeps_the_recorded_segment_steps(tmp_path: Path) -> None:
    assert transfer.lock_settings(tmp_path, _args(steps=40, segment_steps=20))["segment_steps"] == 20
    # a later train that names neither --steps nor --segment-steps continues with the recorded ones
    assert transfer.lock_settings(tmp_path, _args(steps=None, segment_steps=None))["segment_steps"] == 20
    with pytest.raises(SystemExit, match="other settings"):
        transfer.lock_settings(tmp_path, _args(steps=None, segment_steps=10))
    assert transfer.lock_settings(tmp_path / "new", _args(segment_steps=None))["segment_steps"] == 10


class Killed(Exception):
    pass


def test_a_killed_run_continues_from_its_last_scored_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake training (deterministic: a checkpoint per segment, resumed from the newest one)
    killed between saving step 20 and scoring it; the rerun drops the unscored checkpoint, goes
    on from step 10 and scores 20 and 30 once each; raised steps train on without rescoring."""
    import avokit.student
    import avokit.train

    runs = tmp_path / "runs"
    _data(runs)
    monkeypatch.setattr(transfer, "student_dir", lambda: tmp_path / "smollm2")
    monkeypatch.setattr(avokit.student, "load_student_tokenizer", lambda path: "tok")
    scored: list[int] = []
    starts: list[int] = []
    kill_at: list[int] = [20]

    def fake_scores(model: Any, tok: Any, runs_: Path, max_length: int) -> dict[str, Any]:
        scored.append(model)
        return {"validation": _bpb(dict.fromkeys(DOMAINS, 2.0 - model / 100)), "test": _bpb(dict.fromkeys(DOMAINS, 2.0)),
                "score_wall_s": 0.0, "load": 0.0}

    def fake_training(rec: Any, baseline: bool, progress: bool, on_checkpoint: Any) -> Path:
        assert baseline is False and rec.train.lr == 1e-4 and rec.train.min_lr_ratio == 1.0
        assert rec.student.pretrained == str(tmp_path / "smollm2") and rec.student.tokenizer.kind == "path"
        assert [t.name for t in rec.teachers] == [GEMMA] and rec.train.loss.targets == "dense"
        assert (rec.run_dir / "cache" / GEMMA).is_symlink() and (rec.run_dir / "corpus").is_symlink()
        root = rec.run_dir / "student" / "checkpoints"
        done = [int(p.name.split("-")[1]) for p in root.glob("step-*")] if root.is_dir() else []
        starts.append(max(done, default=0))
        for step in range(max(done, default=0) + 10, rec.train.steps + 1, 10):
            (root / f"step-{step:08d}").mkdir(parents=True)
            if step in kill_at:
                kill_at.clear()
                raise Killed  # saved, not yet scored
            on_checkpoint(step, step)  # the "model" is its step
        return rec.run_dir / "student"

    monkeypatch.setattr(transfer, "split_scores", fake_scores)
    monkeypatch.setattr(avokit.train, "run_training", fake_training)
    settings = dict(SETTINGS)
    with pytest.raises(Killed):
        transfer.train_arm(runs, "kd_gemma", 0, settings)
    run_dir = runs / "kd_gemma" / "s0"
    assert [s["step"] for s in json.loads((run_dir / "segments.json").read_text())] == [10]
    transfer.train_arm(runs, "kd_gemma", 0, settings)
    segments = json.loads((run_dir / "segments.json").read_text())
    assert [s["step"] for s in segments] == [10, 20, 30] and scored == [10, 20, 30] and starts == [0, 10]
    assert segments[1]["validation"]["overall"] == pytest.approx(1.8)
    assert not (run_dir / "student" / "checkpoints").exists()  # finished: the checkpoints are gone
    run = json.loads((run_dir / "run.json").read_text())
    assert len(run["processes"]) == 2 and run["processes"][0]["dtype"] == "float32"
    assert run["teachers_test_bpb"] == TEACHER_BPB and run["processes"][0]["corpus_manifest_sha256"]
    transfer.train_arm(runs, "kd_gemma", 0, settings)  # finished: nothing runs
    assert starts == [0, 10]
    # more steps: no checkpoint is left, so training restarts at 0 and only the new steps are scored
    transfer.train_arm(runs, "kd_gemma", 0, {**settings, "steps": 50})
    assert [s["step"] for s in json.loads((run_dir / "segments.json").read_text())] == [10, 20, 30, 40, 50]
    assert scored == [10, 20, 30, 40, 50] and starts == [0, 10, 0]


def test_arms_table_makes_valid_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "student_dir", lambda: tmp_path / "smollm2")
    runs = tmp_path / "runs"
    for arm, (teachers, changes, _) in transfer.ARMS.items():
        if changes is None:
            continue
        rec = transfer.arm_recipe(runs, arm, 3, SETTINGS)
        assert rec.run_dir == (runs / arm / "s3").resolve() and rec.train.seed == 3
        assert rec.train.steps == 30 and rec.train.checkpoint_every == 10 and rec.train.mixed_precision == "no"
        assert [t.name for t in rec.teachers] == (teachers or [GEMMA])
        assert rec.corpus.validation_fraction == 0.15 and len(rec.corpus.sources) == 3
    assert transfer.arm_recipe(runs, "uld_gemma", 0, SETTINGS).train.loss.token_loss == "uld"
    assert transfer.arm_recipe(runs, "uld_gemma", 0, SETTINGS).train.loss.chunk_debias is True
    assert transfer.arm_recipe(runs, "kd_qwen", 0, SETTINGS).train.loss.token_loss == "bucketed"
    assert set(transfer.DEFAULT_ARMS) <= set(transfer.ARMS)
    assert set(transfer.VERDICT_KD.values()) | set(transfer.VERDICT_ULD[:2]) <= set(transfer.DEFAULT_ARMS)
    for kd_arms, uld in transfer.DESIGNS.values():  # every design compares arms that exist, per teacher
        assert all(transfer.ARMS[arm][0] == [t] for t, arm in kd_arms.items()) and set(uld[:2]) <= set(transfer.ARMS)
    gated = transfer.arm_recipe(runs, "kd_gemma_gated", 0, SETTINGS).train.loss
    assert gated.kd_gate == "teacher_better" and gated.targets == "dense" and gated.chunk_weight == 0.5


def test_python_files_are_one_source_text_each(tmp_path: Path) -> None:
    from bench.quality.transfer.transfer_data import write_python_heads

    recipe = transfer.data_recipe(tmp_path / "runs")
    path = write_python_heads(recipe)
    assert path == (tmp_path / "runs" / "data" / "python-files.jsonl").resolve()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 30 and len({r["origin"] for r in rows}) == 30
    assert all(200 <= len(r["text"]) <= 1000 and r["license"] for r in rows)


def test_gradient_alignment_scores_the_validation_direction_one_and_its_opposite_minus_one() -> None:
    import torch

    from bench.quality.transfer.transfer_grad import alignment

    g_val = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert alignment(g_val, g_val) == pytest.approx({"cos": 1.0, "sign": 1.0}, abs=1e-6)
    assert alignment(-3 * g_val, g_val) == pytest.approx({"cos": -1.0, "sign": -1.0}, abs=1e-6)
    other = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    partial = alignment(other, g_val)
    assert abs(partial["cos"]) < 0.2 and abs(partial["sign"]) < 0.2  # unrelated directions score ~0
