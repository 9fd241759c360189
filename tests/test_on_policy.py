"""On-policy distillation (train.on_policy): the student's own samples scored live by teachers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avokit.recipe.train import LossConfig, OnPolicyConfig


def _setup(teacher_dir: Path, student_tok: Any, cfg: OnPolicyConfig, docs: list[str]) -> Any:
    """An OnPolicy over one live teacher that shares the student's tokenizer (identity map),
    prompts from ``docs``, packing without a separate start token (the teacher's context)."""
    from avokit.align import byteify
    from avokit.teachers.hf import HFTeacher
    from avokit.train.kd_data import TeacherSource
    from avokit.train.on_policy import OnPolicy

    teacher = HFTeacher.from_dir(teacher_dir, name="t", device="cpu", max_length=256)
    start = teacher.start_token_id
    prompts = [np.array([start, *student_tok(d, add_special_tokens=False)["input_ids"][:8]]) for d in docs]
    source = TeacherSource("t", 1.0, {}, np.arange(len(student_tok), dtype=np.int64))

    def fuse(packed: Any, sources: Any) -> tuple[np.ndarray, None]:
        return np.ones((len(packed.doc_ids), len(sources)), np.float32), None

    loss_cfg = LossConfig(divergence=cfg.divergence)
    return OnPolicy(cfg, [teacher], [source], student_tok, byteify(student_tok), prompts, start, None, 0, fuse,
                    loss_cfg)


DOCS = ["The cat sat on the mat and looked at the garden.", "Numbers: one, two, three, four, five, six."]


def test_a_student_equal_to_its_teacher_has_zero_on_policy_loss(tiny_model_factory: Any,
                                                                 smollm2_tokenizer: Any) -> None:
    """Reverse KL over exact top-k + tail buckets and the chunk term are 0 where the student is
    the teacher (same weights, tokenizer and context), and positive for another student."""
    from transformers import AutoModelForCausalLM

    from avokit.train.on_policy import on_policy_loss, sample

    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama")
    onp = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(max_new_tokens=12, top_k=8), DOCS)
    same = AutoModelForCausalLM.from_pretrained(teacher_dir).train()
    # one sample: its row is the teacher's context exactly (in a packed row a second sample
    # would also see the first)
    loss, parts, shares = on_policy_loss(same, same, onp, step=3, micro=0, batch_size=1, device="cpu")
    assert float(parts["kd"]) < 1e-5 and float(parts["chunk"]) < 1e-5 and float(parts["ce"]) == 0.0
    other = AutoModelForCausalLM.from_pretrained(tiny_model_factory(smollm2_tokenizer, "llama", seed=1)).train()
    loss, parts, _ = on_policy_loss(other, other, onp, step=3, micro=0, batch_size=2, device="cpu")
    assert float(parts["kd"]) > 0.01 and loss.requires_grad
    # the samples start with the prompt, are seeded by (step, micro), and differ between steps
    a = sample(other, onp, 3, 0, 2, "cpu")
    assert a == sample(other, onp, 3, 0, 2, "cpu") and a != sample(other, onp, 4, 0, 2, "cpu")
    assert all(text[:n] in DOCS[0] + DOCS[1] and len(text) > n for text, n in a)


def test_on_policy_loss_draws_its_prompts_once(tiny_model_factory: Any, smollm2_tokenizer: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples and the domains they are weighed by come from one draw of prompt picks."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from avokit.train import on_policy

    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama")
    onp = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(max_new_tokens=4, top_k=8), DOCS)
    onp = replace(onp, prompt_domains=["english", "numbers"])
    seen: list[list[str]] = []
    real_fuse = onp.fuse

    def fuse(packed: Any, sources: Any) -> Any:
        seen.append(list(packed.domains))
        return real_fuse(packed, sources)

    calls: list[np.ndarray] = []
    real = on_policy.prompt_picks
    monkeypatch.setattr(on_policy, "prompt_picks", lambda *a: calls.append(real(*a)) or calls[-1])
    student = AutoModelForCausalLM.from_pretrained(teacher_dir).train()
    on_policy.on_policy_loss(student, student, replace(onp, fuse=fuse), step=5, micro=1, batch_size=2, device="cpu")
    assert len(calls) == 1
    assert seen == [[onp.prompt_domains[i] for i in calls[0]]]


def test_samples_are_scored_with_the_caches_prefix_cuts(tiny_model_factory: Any, smollm2_tokenizer: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A teacher whose cache stores prefix cuts scores the student's samples with them too, so
    the samples' dense targets are built as the corpus's are; a teacher without: none."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from avokit.train import on_policy

    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama")
    onp = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(max_new_tokens=6, top_k=8), DOCS)
    seen: list[tuple[int, list[bool]]] = []
    real = on_policy.live_records

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        seen.append((kwargs["inside_top_k"], [r.cuts is not None for r in out.values()]))
        return out

    monkeypatch.setattr(on_policy, "live_records", spy)
    student = AutoModelForCausalLM.from_pretrained(teacher_dir).train()
    for cuts in ([4], []):
        loss, _, _ = on_policy.on_policy_loss(student, student, replace(onp, inside_top_k=cuts), step=1, micro=0,
                                              batch_size=2, device="cpu")
        assert torch.isfinite(loss)
    assert seen == [(4, [True, True]), (0, [False, False])]


def test_on_policy_loss_by_hand_for_a_uniform_student(tiny_model_factory: Any, smollm2_tokenizer: Any) -> None:
    """A student whose head is zero predicts 1/V for every token; with one teacher over the same
    vocabulary the on-policy terms are then, by hand from the teacher's own records of the
    sample: reverse KL of the buckets {top-k ids, rest}, and the reverse binary KL of each
    one-token chunk, averaged over the tokens the student wrote (never the prompt's)."""
    import math

    from transformers import AutoModelForCausalLM

    from avokit.train.on_policy import on_policy_loss, sample

    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama")
    k = 4
    onp = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(max_new_tokens=10, top_k=k), DOCS)
    student = AutoModelForCausalLM.from_pretrained(teacher_dir).train()
    with torch.no_grad():
        student.get_output_embeddings().weight.zero_()
    V = student.config.vocab_size
    _, parts, _ = on_policy_loss(student, student, onp, step=5, micro=0, batch_size=1, device="cpu")
    ((text, n_prompt),) = sample(student, onp, 5, 0, 1, "cpu")
    rec = onp.teachers[0].score([text], ["x"], k)[0]
    starts = np.concatenate([[0], rec.byte_ends[:-1]])
    mine = np.nonzero(starts >= len(text[:n_prompt].encode()))[0]
    assert mine.size > 0
    kd, chunk = [], []
    for i in mine:
        p = [math.exp(x) for x in rec.topk_logprobs[i]]
        q = [1 / V] * k
        p.append(1 - sum(p))
        q.append(1 - k / V)
        kd.append(sum(qi * math.log(qi / pi) for qi, pi in zip(q, p)))
        a_t, a_s = math.exp(min(float(rec.gold_logprob[i]), -1e-6)), 1 / V
        chunk.append(a_s * math.log(a_s / a_t) + (1 - a_s) * math.log((1 - a_s) / (1 - a_t)))
    assert float(parts["kd"]) == pytest.approx(sum(kd) / len(kd), rel=1e-4)
    assert float(parts["chunk"]) == pytest.approx(sum(chunk) / len(chunk), rel=1e-4)


def test_only_the_students_own_tokens_are_targets(tmp_path: Path) -> None:
    from avokit.corpus import Document
    from avokit.student import train_student_tokenizer
    from avokit.train.data import pack_documents
    from avokit.train.on_policy import prompt_token_counts

    tok = train_student_tokenizer(DOCS * 4, 300, tmp_path / "tok")
    packed = pack_documents([Document("a", "Hello world, again.", "t"), Document("b", "xy", "t")], tok, 1,
                            tok.eos_token_id, require_row=False)
    context = prompt_token_counts(packed, [len(b"Hello world"), 0])
    starts = np.concatenate([[0], packed.byte_ends[0][:-1]])
    assert context[0] == (starts < 11).sum() and 0 < context[0] < packed.doc_len[0]
    assert context[1] == 0


def test_mix_is_a_fixed_share_of_micro_batches() -> None:
    from avokit.train.on_policy import OnPolicy

    onp = OnPolicy(OnPolicyConfig(mix=0.3), [], [], None, None, [], 0, None, 7, None, None)  # type: ignore[arg-type]
    picks = [onp.takes(step, m) for step in range(400) for m in range(2)]
    assert 0.25 < np.mean(picks) < 0.35 and picks == [onp.takes(s, m) for s in range(400) for m in range(2)]
    assert not any(OnPolicy(OnPolicyConfig(mix=0.0), [], [], None, None, [], 0, None, 7, None, None).takes(s, 0)
                   for s in range(50))


def test_on_policy_training_loads_teachers_once_and_resumes_exactly(tmp_path: Path, monkeypatch: Any,
                                                                    tiny_model_factory: Any,
                                                                    smollm2_tokenizer: Any) -> None:
    """Two live teachers with different tokenizers (SmolLM2's and a small trained byte-level
    BPE, cheap to map); every step has an on-policy micro-batch; each teacher is loaded once
    per run; a run killed after step 2 resumes to the same weights."""
    from conftest import build_tiny_model_dir
    from safetensors.torch import load_file
    from test_generate import _recipe
    from test_train import make_docs

    import avokit.teachers.load as load_mod
    from avokit.pipeline import distill
    from avokit.recipe import recipe_from_dict
    from avokit.student import train_student_tokenizer
    from avokit.train import run_training
    from avokit.train.loop import TrainingInterrupted

    loads: list[str] = []
    real = load_mod.load_teacher

    def counting(config: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(config.name)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(load_mod, "load_teacher", counting)
    smol = tiny_model_factory(smollm2_tokenizer, "llama")
    other_tok = train_student_tokenizer([d.text for d in make_docs(16, 9)], 300, tmp_path / "other-tok")
    other = build_tiny_model_dir(tmp_path / "other-teacher", other_tok, "llama", seed=2)

    def recipe(root: Path) -> Any:
        base = _recipe(root, smol, [{"kind": "corpus"}]).model_dump(mode="json", exclude={"generate", "base_dir"})
        base["teachers"].append({"name": "other", "kind": "hf", "path": str(other)})
        base["train"]["on_policy"] = {"mix": 1.0, "prompt_tokens": 6, "max_new_tokens": 8, "top_k": 8}
        base["train"].update(steps=4, checkpoint_every=2, eval_every=2, grad_accum=1)
        return recipe_from_dict(base, root)

    straight = recipe(tmp_path / "a")
    distill(straight, stages=("corpus", "capture"))
    loads.clear()
    out = run_training(straight, progress=False)
    assert sorted(loads) == ["other", "smol"]  # once each for 4 on-policy steps
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(r["ce"] == 0.0 and r["kd"] > 0 for r in log)  # every step on the student's own text
    # each line's on-policy clock covers the micro-batches since the previous line (log_every 2)
    assert [r["step"] for r in log] == [2, 4] and all(r["on_policy"]["micro_batches"] == 2 for r in log)
    for r in log:
        onp = r["on_policy"]
        assert onp["sample_s"] > 0 and sorted(onp["score_s"]) == ["other", "smol"] and min(onp["score_s"].values()) > 0
        assert 0 < onp["written_tokens"] < onp["tokens"]

    killed = recipe(tmp_path / "b")  # the same corpus and caches, copied
    shutil.copytree(straight.run_dir, killed.run_dir, ignore=shutil.ignore_patterns("student"))
    with pytest.raises(TrainingInterrupted):
        run_training(killed, progress=False, stop_after=lambda s: s == 2)
    resumed = run_training(killed, progress=False)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_gates_none_drops_the_runs_gates_on_the_samples_only() -> None:
    from avokit.recipe.train import TrainConfig
    from avokit.train.run import on_policy_loss_config

    loss = {"kd_gate": "teacher_better", "chunk_gate": "teacher_better", "kd_weight": 0.5}
    kept = on_policy_loss_config(TrainConfig(loss=loss, on_policy={"divergence": "jsd"}))
    assert (kept.kd_gate, kept.chunk_gate, kept.divergence, kept.kd_weight) == (
        "teacher_better", "teacher_better", "jsd", 0.5)
    cfg = TrainConfig(loss=loss, on_policy={"gates": "none"})
    off = on_policy_loss_config(cfg)
    assert (off.kd_gate, off.chunk_gate, off.divergence, off.kd_weight) == ("none", "none", "reverse_kl", 0.5)
    assert cfg.loss.kd_gate == "teacher_better"  # the corpus micro-batches keep them


def test_combine_add_is_the_corpus_loss_plus_the_weighted_samples_loss(tiny_model_factory: Any,
                                                                        smollm2_tokenizer: Any) -> None:
    """``combine: add`` keeps the corpus micro-batch and adds the samples' loss with ``weight``:
    exactly the sum of the two losses computed apart (the samples are seeded by step and
    micro-batch), where ``replace`` is the samples' loss alone."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from avokit.corpus import Document
    from avokit.train.data import pack_documents
    from avokit.train.loop import _micro_loss, _step_loss
    from avokit.train.on_policy import on_policy_loss

    teacher_dir = tiny_model_factory(smollm2_tokenizer, "llama")
    student = AutoModelForCausalLM.from_pretrained(tiny_model_factory(smollm2_tokenizer, "llama", seed=1)).train()
    docs = [Document(f"d{i}", text * 3, "t") for i, text in enumerate(DOCS)]
    packed = pack_documents(docs, smollm2_tokenizer, 16, smollm2_tokenizer.eos_token_id)
    rows, acc = np.arange(2), Accelerator(cpu=True)
    added = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(mix=1.0, max_new_tokens=6, top_k=8, combine="add",
                                                                  weight=0.3), DOCS)
    corpus, corpus_parts, _ = _micro_loss(student, packed, rows, None, LossConfig(), "cpu")
    samples, sample_parts, _ = on_policy_loss(student, student, added, 5, 0, 2, "cpu")
    loss, parts, _ = _step_loss(acc, student, packed, rows, None, LossConfig(), added, 5, 0)
    assert loss.requires_grad
    corpus, samples, loss = corpus.detach(), samples.detach(), loss.detach()
    assert float(loss) == pytest.approx(float(corpus) + 0.3 * float(samples), rel=1e-5)
    assert float(parts["ce"]) == pytest.approx(float(corpus_parts["ce"])) and float(parts["ce"]) > 0
    assert float(parts["kd"]) == pytest.approx(0.3 * float(sample_parts["kd"]), rel=1e-5)
    replaced = _setup(teacher_dir, smollm2_tokenizer, OnPolicyConfig(mix=1.0, max_new_tokens=6, top_k=8), DOCS)
    only, only_parts, _ = _step_loss(acc, student, packed, rows, None, LossConfig(), replaced, 5, 0)
    only = only.detach()
    assert float(only) == pytest.approx(float(samples), rel=1e-5) and float(only_parts["ce"]) == 0.0
    with pytest.raises(ValueError, match="on_policy.weight"):
        OnPolicyConfig(weight=0.5)  # a weight means nothing where the samples replace the corpus rows
