"""Evaluation core: bits per byte by hand, determinism, scoring paths agree, tasks, intervals, gate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avokit.errors import AvokitError
from avokit.evaluate.bpb import bpb_from_records, score_bpb
from avokit.evaluate.gate import check_gate
from avokit.evaluate.scoring import loglikelihoods, rolling_loglikelihood, score_token_pairs
from avokit.evaluate.tasks import Task, TaskError, TaskItem, load_task, run_task, wilson
from avokit.recipe.evaluation import GateConfig
from avokit.records import TeacherRecords

TEXT = "The cat sat on the mat. Ünïcödé bytes count: 3 € signs €€."


def _record(doc_id: str, byte_ends: list[int], gold: list[float]) -> TeacherRecords:
    n = len(gold)
    return TeacherRecords(doc_id, np.zeros(n, np.int32), np.array(byte_ends, np.int64),
                          np.array(gold, np.float32), np.zeros((n, 1), np.int32),
                          np.zeros((n, 1), np.float32), np.zeros(n, np.float32))


def test_bpb_from_records_hand_value() -> None:
    # "héllo" is 6 UTF-8 bytes; NLL = ln2 * (1 + 2 + 3) nats = 6 bits -> exactly 1 bit per byte.
    rec = _record("d", [2, 3, 6], [-math.log(2), -2 * math.log(2), -3 * math.log(2)])
    res = bpb_from_records("m", [rec], {"d": "héllo"})
    assert res.n_bytes == 6 and res.n_tokens == 3
    assert res.bpb == pytest.approx(1.0, abs=1e-6)


def test_bpb_refuses_partial_coverage() -> None:
    rec = _record("d", [2, 3], [-1.0, -1.0])
    with pytest.raises(AvokitError, match="scored 3 of its 6 bytes"):
        bpb_from_records("m", [rec], {"d": "héllo"})


def _manual_nll(model_dir: Path, start_id: int, text: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = [start_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    return float(-logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


def test_bpb_of_tiny_model_matches_hand_computation(tiny_llama_dir: Path) -> None:
    from avokit.teachers.hf import HFTeacher

    teacher = HFTeacher.from_dir(tiny_llama_dir, name="tiny", device="cpu")
    texts = {"a": TEXT, "b": "Short one."}
    res = score_bpb(teacher, texts, batch_size=2)
    nll = sum(_manual_nll(tiny_llama_dir, teacher.start_token_id, t) for t in texts.values())
    n_bytes = sum(len(t.encode()) for t in texts.values())
    assert res.n_bytes == n_bytes
    assert res.bpb == pytest.approx(nll / (math.log(2) * n_bytes), rel=1e-4)
    # scored twice, same numbers (deterministic, no hidden state between calls)
    again = score_bpb(teacher, texts, batch_size=1)
    assert again.bpb == pytest.approx(res.bpb, rel=1e-6)
    assert again.per_doc == pytest.approx(res.per_doc, rel=1e-6)


def test_scoring_paths_agree(tiny_llama_dir: Path) -> None:
    """Rolling log-likelihood, a context-free request and the hand computation are one number;
    short windows still score every token exactly once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    manual = -_manual_nll(tiny_llama_dir, start, TEXT)
    assert rolling_loglikelihood(model, tok, TEXT, max_length=256) == pytest.approx(manual, rel=1e-5)
    assert loglikelihoods(model, tok, [("", TEXT)])[0].logprob == pytest.approx(manual, rel=1e-5)
    short = rolling_loglikelihood(model, tok, TEXT, max_length=8)
    assert math.isfinite(short) and short != pytest.approx(manual, rel=1e-9)  # less context, other number
    # batching and padding do not change a request's score
    reqs = [("Question: what sat?\nAnswer:", " the cat"), ("Hi", " there, a much longer continuation")]
    one = [loglikelihoods(model, tok, [r], batch_size=1)[0].logprob for r in reqs]
    both = [r.logprob for r in loglikelihoods(model, tok, reqs, batch_size=2)]
    assert both == pytest.approx(one, rel=1e-4)


class _FullLogits(torch.nn.Module):
    """The same model behind a forward without ``logits_to_keep``: every position projected."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_kept_positions_score_like_full_logits(tiny_llama_dir: Path) -> None:
    """Projecting only the continuation positions (``logits_to_keep``) is the full-logit
    computation: same log-probs and greedy flags, rows of very different lengths in a batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(5, 400, (c,), generator=gen).tolist(), torch.randint(5, 400, (k,), generator=gen).tolist())
             for c, k in [(0, 3), (7, 1), (30, 5), (2, 12), (19, 2), (40, 40), (1, 1)]]
    # a greedy continuation, so the flag is tested both ways
    with torch.no_grad():
        nxt = int(model(torch.tensor([[1, 9, 17]])).logits[0, -1].argmax())
    pairs.append(([9, 17], [nxt]))
    for batch_size in (1, 3, 8):
        fast = score_token_pairs(model, 1, pairs, max_length=48, batch_size=batch_size)
        full = score_token_pairs(_FullLogits(model), 1, pairs, max_length=48, batch_size=batch_size)
        assert [r.n_tokens for r in fast] == [r.n_tokens for r in full]
        assert [r.is_greedy for r in fast] == [r.is_greedy for r in full]
        assert [r.logprob for r in fast] == pytest.approx([r.logprob for r in full], rel=1e-5, abs=1e-5)
    assert fast[-1].is_greedy


def _write_task(tmp: Path, rows: list[dict[str, Any]], **spec: Any) -> Path:
    (tmp / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    body = {"name": "toy", "data": "t.jsonl", "prompt": "Q: {q}\nA:", **spec}
    (tmp / "t.yaml").write_text(json.dumps(body))
    return tmp / "t.yaml"


def test_task_format_and_errors(tmp_path: Path) -> None:
    rows = [{"id": f"i{i}", "q": f"question {i}", "choices": ["yes", "no"], "answer": i % 2} for i in range(10)]
    task = load_task(_write_task(tmp_path, rows))
    assert task.items[1] == TaskItem("i1", "Q: question 1\nA:", (" yes", " no"), 1)
    sub = task.subset(4)
    assert [i.item_id for i in sub.items] == [i.item_id for i in task.subset(4).items]
    assert len(sub.items) == 4 and sub.n_available == 10
    with pytest.raises(TaskError, match="missing answer field 'answer'"):
        load_task(_write_task(tmp_path, [{"q": "x", "choices": ["a"]}]))
    with pytest.raises(TaskError, match="uses field 'q'"):
        load_task(_write_task(tmp_path, [{"choices": ["a"], "answer": 0}]))
    with pytest.raises(TaskError, match="not an index into 2 choices"):
        load_task(_write_task(tmp_path, [{"q": "x", "choices": ["a", "b"], "answer": 5}]))
    with pytest.raises(TaskError, match="task file not found"):
        load_task(tmp_path / "nope.yaml")


def test_run_task_multiple_choice_and_generation(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    items = [TaskItem(f"m{i}", f"Q{i}:", (" a", " bb b", " c"), i % 3) for i in range(6)]
    mc = Task("mc", "multiple_choice", items)
    r1, r2 = run_task(model, tok, mc), run_task(model, tok, mc, batch_size=1)
    assert r1.correct == r2.correct and r1.correct_norm == r2.correct_norm
    # acc is the argmax of log-likelihoods: check one item by hand
    lls = [x.logprob for x in loglikelihoods(model, tok, [("Q0:", c) for c in items[0].choices])]
    assert r1.correct["m0"] == (int(np.argmax(lls)) == 0)
    s = r1.scores()
    assert s["acc"].n == 6 and 0 <= s["acc"].low <= s["acc"].value <= s["acc"].high <= 1
    gen = Task("g", "generation", [TaskItem("g0", "Say:", answer="zzzz-never")], max_new_tokens=4)
    assert run_task(model, tok, gen).correct == {"g0": False}


def test_wilson_interval_known_values() -> None:
    s = wilson([False] * 10)
    assert (s.value, s.low) == (0.0, 0.0) and s.high == pytest.approx(0.2775, abs=1e-3)
    s = wilson([True] * 50 + [False] * 50)
    assert s.low == pytest.approx(0.4038, abs=1e-3) and s.high == pytest.approx(0.5962, abs=1e-3)
    assert wilson([]).n == 0


def test_gate_names_failed_thresholds() -> None:
    cfg = GateConfig(max_bpb=2.0, min_task_accuracy={"arc_easy": 0.5, "piqa": 0.6}, max_contamination=0.01)
    v = check_gate(cfg, student_bpb=2.5, baseline_bpb=2.4, task_acc={"arc_easy": 0.55}, contamination_rate=0.0)
    assert not v.passed
    failed = {c.name for c in v.failed()}
    assert failed == {"max_bpb", "min_task_accuracy.piqa", "must_beat_baseline"}
    ok = check_gate(cfg, 1.5, 1.6, {"arc_easy": 0.55, "piqa": 0.7}, 0.0)
    assert ok.passed and all(c.passed for c in ok.checks)
    dirty = check_gate(GateConfig(max_contamination=0.05, must_beat_baseline=False), 1.0, None, {}, 0.2)
    assert [c.name for c in dirty.failed()] == ["max_contamination"]
