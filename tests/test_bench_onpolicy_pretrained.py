"""The on-policy study with a pretrained student (bench/quality/onpolicy_pretrained): the
equal-time checkpoint, the verdict and its ``holds`` rule, the cost and the options lock on
hand-made numbers; the start's orchestration with a fake trainer; and a real short run of every
arm with tiny random models (two teachers with different tokenizers, a tiny "pretrained"
student), its evaluation and report."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bench.quality.onpolicy_pretrained import arms, evaluation, stats, training
from bench.quality.onpolicy_pretrained.arms import Options
from bench.quality.transfer.transfer_data import GEMMA, QWEN

SEGMENTS = [{"step": s, "train_wall_s": 100.0} for s in (10, 20, 30, 40)]


def test_equal_time_picks_the_last_offline_checkpoint_not_above_the_budget() -> None:
    assert stats.equal_time(SEGMENTS, 250.0) == {"step": 20, "offline_train_s": 200.0, "budget_s": 250.0,
                                                 "offline_shorter": False}
    assert stats.equal_time(SEGMENTS, 300.0)["step"] == 30  # equal is not above
    assert stats.equal_time(list(reversed(SEGMENTS)), 399.9)["step"] == 30  # cumulative in step order
    assert stats.equal_time(SEGMENTS, 50.0)["step"] == 0  # even the first segment took longer: the start
    longer = stats.equal_time(SEGMENTS, 1000.0)
    assert longer["step"] == 40 and longer["offline_shorter"] is True


def _point(judged: float, bpb: float) -> dict[str, float]:
    return {stats.PRIMARY: judged, stats.BPB: bpb, "distinct2": 0.5, "distinct3": 0.6}


def _points(on: list[float], on_bpb: list[float], seq: list[float] | None = None) -> dict[str, dict[int, Any]]:
    offline = {s: _point(2.0 + 0.1 * s, 1.0 + 0.01 * s) for s in range(len(on))}
    out = {"offline": offline, "offline@on_time": offline,
           "on": {s: _point(offline[s][stats.PRIMARY] + d, offline[s][stats.BPB] + b)
                  for s, (d, b) in enumerate(zip(on, on_bpb))}}
    if seq is not None:
        out["seq"] = {s: _point(offline[s][stats.PRIMARY] + d, 1.0) for s, d in enumerate(seq)}
    return out


def test_verdict_has_the_issues_shape_and_holds_only_when_every_condition_does() -> None:
    timing = {s: {"step": 20, "on_train_s": 300.0} for s in range(3)}
    v = stats.verdict(_points([-0.10, -0.12, -0.11], [0.001, -0.002, 0.0], seq=[0.0, 0.1, -0.1]), timing)
    assert {"seeds", "primary", "on_minus_offline", "seq_minus_offline", "bpb_on_minus_offline", "equal_time",
            "holds"} <= set(v)
    assert v["seeds"] == 3 and v["primary"] == "teacher_judged_bpb" and v["holds"] is True
    assert v["on_minus_offline"]["mean"] == pytest.approx(-0.11) and v["on_minus_offline"]["ci95"][1] < 0
    assert len(v["seq_minus_offline"]["ci95"]) == 2 and v["equal_time"]["on_minus_offline"]["mean"] == pytest.approx(-0.11)
    assert v["equal_time"]["per_seed"][0]["step"] == 20
    json.dumps(v)
    # the same gain with test BPB worse beyond its interval
    worse = stats.verdict(_points([-0.10, -0.12, -0.11], [0.02, 0.03, 0.025]), timing)
    assert worse["holds"] is False and "BPB" in worse["why"]
    # the primary interval reaches zero
    spread = stats.verdict(_points([-0.30, 0.10, -0.01], [0.0, 0.0, 0.0]), timing)
    assert spread["on_minus_offline"]["ci95"][1] > 0 and spread["holds"] is False
    # two seeds: never holds; one seed: no interval at all
    assert stats.verdict(_points([-0.1, -0.12], [0.0, 0.0]), timing)["holds"] is False
    one = stats.verdict(_points([-0.1], [0.0]), timing)
    assert one["on_minus_offline"] is None and one["holds"] is False and one["seq_minus_offline"] is None


def _evaluation(bits: dict[str, list[float]], n_bytes: list[int], domains: list[str]) -> dict[str, Any]:
    """An evaluation as onpolicy_eval writes it: per-prompt bits and bytes per teacher, and the
    per-teacher, per-domain pooled bits per byte they make."""
    rows = [{"doc_id": f"d{i}", "domain": dom, "bits": {t: b[i] for t, b in bits.items()},
             "bytes": dict.fromkeys(bits, n_bytes[i])} for i, dom in enumerate(domains)]
    pooled = {t: {dom: sum(b[i] for i in range(len(domains)) if domains[i] == dom)
                  / sum(n_bytes[i] for i in range(len(domains)) if domains[i] == dom) for dom in set(domains)}
              for t, b in bits.items()}
    return {"teacher_bpb": {t: {"pooled": 0.0, **v} for t, v in pooled.items()}, "teacher_nll": 0.0,
            "distinct2": 0.5, "distinct3": 0.5, "per_prompt": rows}


def test_sampling_noise_is_zero_for_identical_points_and_matches_the_primary_metric() -> None:
    domains = ["english"] * 5 + ["math"] * 5
    n_bytes = [40, 55, 61, 38, 70, 44, 52, 47, 66, 59]
    base = {GEMMA: [float(30 + 7 * i % 11) for i in range(10)], QWEN: [float(35 + 5 * i % 13) for i in range(10)]}
    a = _evaluation(base, n_bytes, domains)
    same = stats.sampling_noise(a, a)
    assert same is not None and same["mean"] == 0.0 and same["sd"] == 0.0
    shifted = {t: [x - 0.2 * n for x, n in zip(v, n_bytes)] for t, v in base.items()}  # 0.2 bits/byte less everywhere
    b = _evaluation(shifted, n_bytes, domains)
    noise = stats.sampling_noise(b, a, draws=300)
    exact = stats.eval_metrics(b)[stats.PRIMARY] - stats.eval_metrics(a)[stats.PRIMARY]
    assert noise is not None and noise["mean"] == pytest.approx(exact) == pytest.approx(-0.2)
    assert noise["sd"] < 1e-9 and noise["ci95"][1] == pytest.approx(-0.2)  # a uniform shift does not depend on the draw
    noisy = {t: [x + (3.0 if i % 2 else -3.0) * (1 + i) for i, x in enumerate(v)] for t, v in base.items()}
    wide = stats.sampling_noise(_evaluation(noisy, n_bytes, domains), a, draws=300)
    assert wide is not None and wide["sd"] > 0.01 and wide["ci95"][0] < wide["mean"] < wide["ci95"][1]
    assert stats.sampling_noise({**b, "per_prompt": b["per_prompt"][::-1]}, a) is None  # other prompts: not paired
    # two draws per document ('#k'): resampled together, the full-sample difference unchanged
    twice = [_evaluation({t: v + v for t, v in x.items()}, n_bytes + n_bytes, domains + domains) for x in (shifted, base)]
    for ev in twice:
        ev["per_prompt"] = [{**r, "doc_id": f"d{i % 10}#{i // 10}"} for i, r in enumerate(ev["per_prompt"])]
    drawn = stats.sampling_noise(twice[0], twice[1], draws=50)
    assert drawn is not None and drawn["mean"] == pytest.approx(-0.2) and drawn["sd"] < 1e-9
    assert stats.sampling_noise({k: v for k, v in b.items() if k != "per_prompt"}, a) is None


def test_cost_counts_the_samples_tokens_and_the_live_share() -> None:
    segs = [{"step": 1, "train_wall_s": 30.0}, {"step": 2, "train_wall_s": 10.0}, {"step": 3, "train_wall_s": 99.0}]
    log = [{"step": 1, "on_policy": {"micro_batches": 1, "sample_s": 4.0, "score_s": {"a": 10.0, "b": 6.0},
                                     "tokens": 100, "written_tokens": 60}},
           {"step": 2, "on_policy": {"micro_batches": 0, "sample_s": 0.0, "score_s": {}, "tokens": 0,
                                     "written_tokens": 0}},
           {"step": 3, "on_policy": {"micro_batches": 1, "sample_s": 9.0, "score_s": {"a": 9.0}, "tokens": 90}}]
    c = stats.cost(segs, log, batch=2, seq_len=32, steps=2)
    assert c["train_wall_s"] == 40.0 and c["s_per_step"] == 20.0
    assert c["tokens"] == 64 + 100 and c["tokens_per_s"] == pytest.approx(164 / 40)  # one corpus + one sampled step
    assert c["sampling_share"] == pytest.approx(0.1) and c["scoring_share"] == pytest.approx(0.4)
    assert c["score_s"] == {"a": 10.0, "b": 6.0} and c["on_policy_micro_batches"] == 1
    offline = stats.cost(segs, [{"step": 1}, {"step": 2}], batch=2, seq_len=32, steps=2)
    assert offline["tokens"] == 128 and offline["sampling_share"] == 0.0


def _ns(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{f.name: None for f in dataclasses.fields(Options)}, **kw)


def test_options_are_locked_and_offline_steps_only_grow(tmp_path: Path) -> None:
    base = {k: v for k, v in vars(_ns()).items() if k not in ("mix", "offline_steps")}
    opts = arms.lock_options(tmp_path, argparse.Namespace(**base, mix=0.25, offline_steps=None), steps=20)
    assert opts.mix == 0.25 and opts.offline_steps == 20  # not given: as long as the others
    assert arms.lock_options(tmp_path, _ns(), steps=20).mix == 0.25  # as recorded
    assert arms.lock_options(tmp_path, argparse.Namespace(**base, mix=None, offline_steps=40), 20).offline_steps == 40
    with pytest.raises(SystemExit, match="other options"):
        arms.lock_options(tmp_path, argparse.Namespace(**base, mix=0.5, offline_steps=None), steps=20)
    with pytest.raises(SystemExit, match="below the 40 recorded"):
        arms.lock_options(tmp_path, argparse.Namespace(**base, mix=None, offline_steps=30), steps=20)
    with pytest.raises(SystemExit, match="below --steps"):
        arms.lock_options(tmp_path / "new", argparse.Namespace(**base, mix=None, offline_steps=10), steps=20)
    no_draws = {**base, "eval_samples": 0}
    with pytest.raises(SystemExit, match="--eval-samples must be at least 1"):
        arms.lock_options(tmp_path / "none", argparse.Namespace(**no_draws, mix=None, offline_steps=None), steps=20)
    assert not (tmp_path / "none" / arms.OPTIONS).exists()  # refused before anything is recorded
    assert arms.parse_start("offline:20") == "offline:20" and Options(start="offline:20").start_steps == 20
    for bad in ("offline", "offline:0", "warm:3"):
        with pytest.raises(argparse.ArgumentTypeError):
            arms.parse_start(bad)


def test_a_warm_start_trains_first_and_every_arm_of_the_seed_starts_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --start offline:N the warm run (N steps, one segment, from the pretrained model)
    trains first, its last segment is the start's step-0 scores, and then on, seq, offline
    (offline for --offline-steps) train from its weights."""
    runs = tmp_path / "runs"
    (runs / "data").mkdir(parents=True)
    (runs / "data" / "data.json").write_text(json.dumps({"student_dir": "smol", "teachers_test_bpb": {}}))
    (runs / "seqdata").mkdir()
    (runs / "seqdata" / "generate.json").write_text("{}")
    monkeypatch.setattr(arms, "student_dir", lambda: tmp_path / "smollm2")
    calls: list[tuple[str, int, int, str]] = []

    def fake_train_arm(study: Any, runs_: Path, arm: str, seed: int, settings: dict[str, Any], keep: bool) -> None:
        calls.append((arm, settings["steps"], settings["segment_steps"], str(study.student_dir())))
        folder = runs_ / arm / f"s{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "segments.json").write_text(json.dumps([{"step": settings["steps"], "train_wall_s": 7.0,
                                                           "validation": {"overall": 1.0}, "test": {"overall": 2.0}}]))

    monkeypatch.setattr(training, "train_arm", fake_train_arm)
    monkeypatch.setattr(training, "record_run", lambda *a: None)
    opts = Options(start="offline:5", offline_steps=30)
    settings = {"steps": 20, "segment_steps": 10}
    training.train(runs, opts, settings, ["offline", "seq", "start", "on"], [4])
    warm = str((runs / "warm" / "s4" / "student").resolve())
    assert calls == [("warm", 5, 5, str(tmp_path / "smollm2")), ("on", 20, 10, warm), ("seq", 20, 10, warm),
                     ("offline", 30, 10, warm)]
    start = json.loads((runs / "start" / "s4" / "segments.json").read_text())
    assert start == [{"step": 0, "train_wall_s": 0.0, "warm_train_wall_s": 7.0, "validation": {"overall": 1.0},
                      "test": {"overall": 2.0}}]
    assert evaluation.model_folder(runs, opts, "start", 4, 0) == Path(warm)
    with pytest.raises(SystemExit, match="cannot train"):
        training.train(runs, opts, settings, ["warm"], [4])
    # live top-k other than the caches': refused before anything trains
    (runs / "data" / "data.json").write_text(json.dumps({"teacher_caches": {GEMMA: {"top_k": 16}}}))
    with pytest.raises(SystemExit, match=r"top-k \{'gemma3-270m': 16\}"):
        training.train(runs, opts, settings, ["on"], [5])


# --- a real short run of every arm with tiny models ---------------------------------------------


def _world(root: Path, tiny_model_factory: Any, smollm2_tokenizer: Any) -> tuple[Any, Path, Path]:
    """A fusion-study-like data folder (two domains, two tiny teachers with different
    tokenizers, captured with prefix cuts), the tiny student, and the DataSource."""
    import yaml
    from conftest import build_tiny_model_dir
    from test_train import make_docs

    from avokit.student import train_student_tokenizer
    from bench.quality.study import data as study_data
    from bench.quality.study.data import DataSource

    prose = [d.text for d in make_docs(14, 3)]
    sums = [f"Question: Tom has {i} apples and buys {i + 3} more. How many now?\nAnswer: {i} + {i + 3} = {2 * i + 3}."
            for i in range(12)]
    for name, texts in (("prose.jsonl", prose), ("math.jsonl", sums)):
        (root / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    other_tok = train_student_tokenizer(prose + sums, 300, root / "other-tok")
    teachers = {GEMMA: tiny_model_factory(smollm2_tokenizer, "llama"),
                QWEN: build_tiny_model_dir(root / "qwen", other_tok, "llama", seed=2)}
    (root / "data.yaml").write_text(yaml.safe_dump({
        "name": "data", "runs_dir": "unused",
        "corpus": {"sources": [{"kind": "jsonl", "path": str(root / "prose.jsonl"), "domain": "english"},
                               {"kind": "jsonl", "path": str(root / "math.jsonl"), "domain": "math"}],
                   "min_chars": 20, "max_chars": 300, "heldout_fraction": 0.25, "validation_fraction": 0.15},
        "teachers": [{"name": t, "kind": "hf", "path": str(p), "max_length": 128, "device": "cpu"}
                     for t, p in teachers.items()],
        "student": {"tokenizer": {"kind": "train", "vocab_size": 512}},
        "capture": {"top_k": 8, "inside_top_k": 4, "batch_size": 4}, "train": {"steps": 1}}))
    source = DataSource(root / "data.yaml", "unused", (GEMMA, QWEN))
    student = tiny_model_factory(smollm2_tokenizer, "llama", seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_data, "student_dir", lambda: student)
        for t in teachers:
            study_data.capture(source, root / "fusion", t)
        study_data.prepare(source, root / "fusion", [])
    return source, student, root / "fusion" / "data"


OPTS = ["--mix", "1.0", "--top-k", "8", "--prompt-tokens", "6", "--max-new-tokens", "8", "--gen-prompts", "2",
        "--gen-tokens", "24", "--eval-prompts", "2", "--eval-prompt-tokens", "6", "--eval-new-tokens", "8",
        "--eval-samples", "2"]
SETTINGS = ["--steps", "2", "--segment-steps", "1", "--offline-steps", "3", "--batch-size", "2", "--seq-len", "32",
            "--warmup", "1", "--score-max-length", "64", "--seeds", "0"]


def test_every_arm_trains_evaluates_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                tiny_model_factory: Any, smollm2_tokenizer: Any) -> None:
    from avokit.cache import CacheReader
    from avokit.corpus import read_documents
    from bench.quality.onpolicy_pretrained.onpolicy import parser, run

    source, student, data = _world(tmp_path, tiny_model_factory, smollm2_tokenizer)
    monkeypatch.setattr(arms, "DATA", source)
    monkeypatch.setattr(arms, "student_dir", lambda: student)
    runs, out = tmp_path / "runs", tmp_path / "results" / "onpolicy_pretrained"

    def cli(*argv: str) -> None:
        run(parser().parse_args([argv[0], "--runs", str(runs), *argv[1:]]))

    cli("prepare", "--data", str(data), *OPTS)
    assert (runs / "data").resolve() == data.resolve()
    generated = read_documents(runs / "seqdata" / "generated" / "documents.parquet")
    assert generated and all(d.source.startswith("generated:") for d in generated)
    for t in (GEMMA, QWEN):  # both teachers captured the teacher-written text, with the caches' prefix cuts
        cache = CacheReader(runs / "seqdata" / "cache" / t)
        mine = [d.doc_id for d in generated if d.doc_id in set(cache.doc_ids("train"))]
        assert mine and cache[mine[0]].cuts is not None

    cli("train", *SETTINGS, *OPTS, "--arms", "start", "offline", "on", "seq")
    on_log = [json.loads(x) for x in (runs / "on" / "s0" / "student" / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["on_policy"]["micro_batches"] for r in on_log) == 2  # mix 1: every step sampled by the student
    assert all(r["ce"] == 0.0 and r["on_policy"]["sample_s"] > 0 for r in on_log)
    assert sorted(on_log[0]["on_policy"]["score_s"]) == sorted([GEMMA, QWEN])
    def trained_docs(arm: str) -> set[str]:
        lines = (runs / arm / "s0" / "student" / "fusion_weights.jsonl").read_text().splitlines()
        return {json.loads(x).get("doc_id") for x in lines[1:]}  # the first line is the fusion's settings

    assert {d.doc_id for d in generated} <= trained_docs("seq")  # seq trained on the teacher-written text
    assert not any(d.startswith("gen:") for d in trained_docs("offline"))
    assert sorted(p.name for p in (runs / "offline" / "s0" / "models").iterdir()) == ["step1", "step2"]
    run_json = json.loads((runs / "on" / "s0" / "run.json").read_text())
    assert run_json["start"]["kind"] == "pretrained" and run_json["options"]["mix"] == 1.0
    assert run_json["train"]["on_policy"]["gates"] == "none" and run_json["train"]["fusion"]["mode"] == "span_softmax"
    with pytest.raises(SystemExit, match="other options"):
        cli("train", *SETTINGS, "--mix", "0.5")

    points = evaluation.points(runs, Options(**json.loads((runs / "options.json").read_text())),
                               json.loads((runs / "settings.json").read_text()), 0)
    assert {k: v for k, v in points.items() if k != "offline@on_time"} == {
        "start": ("start", 0), "offline": ("offline", 2), "on": ("on", 2), "seq": ("seq", 2)}
    cli("evaluate", "--seeds", "0")
    cli("evaluate", "--seeds", "0", "--design", "pilot")
    from bench.quality.onpolicy.onpolicy import stratified

    n_prompts = len(stratified(read_documents(data / "corpus" / "heldout.parquet"), 2, 23))
    for arm, step in points.values():
        path = evaluation.eval_file(runs, Options(start="pretrained", eval_samples=2), arm, 0, step, "test")
        ev = json.loads(path.read_text())
        assert ev["split"] == "test" and set(ev["teacher_bpb"]) == {GEMMA, QWEN} and ev["prompts"] == n_prompts == 4
        # two draws per prompt, each its own row, named after its document
        assert sorted(r["doc_id"] for r in ev["per_prompt"]) == sorted(
            f"{r['doc_id'].split('#')[0]}#{k}" for r in ev["per_prompt"][:4] for k in (0, 1))
    assert (runs / "on" / "s0" / "eval-validation-k2" / "step2.json").is_file()
    kept = {int(p.name[4:]) for p in (runs / "offline" / "s0" / "models").iterdir()}
    assert kept <= {step for arm, step in points.values() if arm == "offline"} and 2 in kept  # the rest pruned

    cli("report", "--out", str(out))
    res = json.loads(out.with_suffix(".json").read_text())
    v = res["verdict"]
    assert v["seeds"] == 1 and v["holds"] is False and v["on_minus_offline"] is None and v["bpb"] == "test_bpb"
    assert res["cost"]["on"]["per_seed"]["0"]["on_policy_micro_batches"] == 2
    assert res["cost"]["on"]["mean"]["sampling_share"] > 0 and res["cost"]["offline"]["per_seed"]["0"]["steps"] == 3
    assert set(res["samples"]["domains"]) == {"english", "math"} and res["provenance"]["corpus_sha256"]
    noise = res["sampling_noise"]["on"]["0"]  # from the evaluations' per-prompt bits
    assert noise["mean"] == pytest.approx(res["points"]["on"]["0"][stats.PRIMARY]
                                          - res["points"]["offline"]["0"][stats.PRIMARY])
    md = out.with_suffix(".md").read_text()
    assert "## Verdict" in md and "| on − offline, teacher_judged_bpb, equal steps |" in md and "Side by side" in md
    pilot = tmp_path / "results" / "pilot"
    cli("report", "--design", "pilot", "--out", str(pilot))
    assert json.loads(pilot.with_suffix(".json").read_text())["pilot"]["chosen"] == "on"
