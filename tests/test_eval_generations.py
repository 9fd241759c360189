"""Generation quality in the report: held-out prompts, the models' own greedy continuations,
the teachers' bits per byte of them; and the untouched pretrained student as the "start" row."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avokit.corpus import Document, build_corpus
from avokit.evaluate.distinct import REPETITIVE_DISTINCT2, char_distinct, summarise_distinct
from avokit.evaluate.generations import LN2, continuation_nll, cut_prompt, heldout_prompts
from avokit.recipe.evaluation import GenerationConfig
from avokit.recipe.load import recipe_from_dict

WORDS = "river stone garden lamp window copper forest silver bridge candle harbor meadow".split()


def test_prompts_end_before_a_word_or_after_cjk_punctuation() -> None:
    assert cut_prompt("The river ran under the bridge", 14) == "The river ran"
    assert cut_prompt("这个酒店很好，早餐也不错。房间干净", 30) == "这个酒店很好，"  # 21 bytes, up to the comma
    assert cut_prompt("东京东京东京", 7) == "东京"  # no break: a whole-character cut
    docs = [Document(i, text, "test", domain=dom) for i, text, dom in (
        ("a1", "short", "en"), ("a2", "x " * 40, "en"), ("c1", "y " * 40, "code"), ("a3", "z " * 40, "en"),
        ("a4", "w " * 40, "en"))]
    prompts = heldout_prompts(docs, GenerationConfig(prompts_per_domain=2, prompt_bytes=16))
    assert [(p.doc_id, p.domain) for p in prompts] == [("c1", "code"), ("a2", "en"), ("a3", "en")]
    assert all(d.text.startswith(p.text) and p.text + p.rest == d.text
               for p in prompts for d in docs if d.doc_id == p.doc_id)


def test_continuation_nll_counts_the_tokens_past_the_seam() -> None:
    ends, gold = np.array([3, 6, 10, 14]), np.array([-1.0, -2.0, -3.0, -4.0], dtype=np.float32)
    assert continuation_nll(ends, gold, 6) == (7.0, 8)  # tokens 3 and 4, bytes 6..14
    assert continuation_nll(ends, gold, 8) == (7.0, 8)  # a token straddles the seam: counted whole
    assert continuation_nll(ends, gold, 14) == (0.0, 0)


@pytest.fixture()
def pretrained_run(tmp_path: Path, tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any) -> Any:
    """A recipe with a pretrained (tiny) student and one tiny teacher; trained models stand in as
    copies of other tiny models, so start, baseline, student and teacher all differ."""
    rng = random.Random(0)
    (tmp_path / "docs.jsonl").write_text("".join(
        json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(50)) + "."}) + "\n" for _ in range(20)))
    recipe = recipe_from_dict({
        "name": "gen", "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}], "heldout_fraction": 0.3},
        "teachers": [{"name": "judge", "kind": "hf", "path": str(tiny_model_factory(smollm2_tokenizer, seed=0)),
                      "device": "cpu"}],
        "student": {"pretrained": str(tiny_model_factory(smollm2_tokenizer, seed=3))},
        "eval": {"tasks": [], "max_length": 128, "teacher_bpb": "live",
                 "generation": {"prompts_per_domain": 2, "prompt_bytes": 64, "max_new_tokens": 8}},
        "gate": {"max_contamination": 1.0, "must_beat_baseline": False},
    }, tmp_path)
    build_corpus(recipe)
    for m, seed in (("student", 1), ("baseline", 2)):
        shutil.copytree(tiny_model_factory(smollm2_tokenizer, seed=seed), recipe.run_dir / m)
    return recipe


def test_report_has_the_start_row_and_teacher_judged_continuations(pretrained_run: Any) -> None:
    from avokit.evaluate import run_eval
    from avokit.evaluate.bpb import score_bpb
    from avokit.teachers import HFTeacher
    from avokit.teachers.base import Sampling

    recipe = pretrained_run
    report = run_eval(recipe)
    m = json.loads((report / "metrics.json").read_text())
    assert list(m["bpb"]) == ["start", "baseline", "student", "judge"]
    start = HFTeacher.from_dir(Path(recipe.student.pretrained), device="cpu", max_length=128)
    from avokit.corpus import load_split

    texts = {d.doc_id: d.text for d in load_split(recipe, "heldout")}
    assert m["bpb"]["start"]["bpb"] == pytest.approx(score_bpb(start, texts, batch_size=8).bpb, rel=1e-6)
    assert len({m["bpb"][k]["bpb"] for k in ("start", "baseline", "student")}) == 3

    gen = m["generations"]
    assert gen["judges"] == ["judge"] and len(gen["prompts"]) == 2
    first = gen["prompts"][0]
    assert set(first["continuations"]) == {"start", "baseline", "student", "reference"}
    # the continuation is the model's own greedy text for that prompt
    again = start.generate(first["prompt"], Sampling(max_new_tokens=8, temperature=0.0), n=1, seed=0)[0]
    assert first["continuations"]["start"] == again.rstrip("\ufffd") != ""
    start.close()
    # the judge's figure is its byte-level score of the continuation given the prompt
    judge = HFTeacher.from_dir(Path(recipe.teachers[0].path), device="cpu", max_length=128)
    (rec,) = judge.score([first["prompt"] + again], ["x"], top_k=1)
    nll, n_bytes = continuation_nll(rec.byte_ends, rec.gold_logprob, len(first["prompt"].encode()))
    assert first["bpb"]["judge"]["start"] == pytest.approx(nll / (LN2 * n_bytes), rel=1e-5)
    judge.close()
    judged = gen["bpb"]["judge"]
    assert len({judged[k]["all"] for k in ("start", "baseline", "student", "reference")}) == 4
    assert gen["mean"]["student"]["all"] == pytest.approx(judged["student"]["all"])
    # repetition beside the BPB: the continuation's own character distinct-n, and its mean per model
    assert first["distinct"]["start"] == char_distinct(first["continuations"]["start"])
    assert gen["repetitive_below"] == REPETITIVE_DISTINCT2
    texts_by = {k: [p["continuations"][k] for p in gen["prompts"]] for k in ("start", "baseline", "student")}
    for k, written in texts_by.items():
        assert gen["repetition"][k]["all"] == summarise_distinct([char_distinct(t) for t in written])

    # the start's lineage: a directory, so no catalog licence; its weights are the scored ones
    assert m["pretrained_start"] == {"name": recipe.student.pretrained, "kind": "hf", "license": "unknown",
                                     "upstream": None, "provenance": None,
                                     "fingerprint": m["models"]["start"]["fingerprint"], "capture_dtype": None,
                                     "bf16_check": None}
    assert m["models"]["start"]["fingerprint"]
    md = (report / "report.md").read_text()
    assert "## Generation quality" in md and "| start |" in md and "`start` is the pretrained student" in md
    assert f"`{first['doc_id']}`" in md and "BPB by judge" in md
    assert "| distinct-1 | distinct-2 | repetitive |" in md and "| continuation | distinct-1 | distinct-2 | BPB by judge |" in md
    d = first["distinct"]["start"]
    assert f" | {d['distinct1']:.3f} | {d['distinct2']:.3f}" in md and "Repetition, over Unicode characters" in md

