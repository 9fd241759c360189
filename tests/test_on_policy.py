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


def test_only_the_students_own_tokens_are_targets() -> None:
    from avokit.corpus import Document
    from avokit.student import train_student_tokenizer
    from avokit.train.data import pack_documents
    from avokit.train.on_policy import _generated_only

    tok = train_student_tokenizer(DOCS * 4, 300, Path("/tmp/avokit-test-onpolicy-tok"))
    packed = pack_documents([Document("a", "Hello world, again.", "t"), Document("b", "xy", "t")], tok, 1,
                            tok.eos_token_id, require_row=False)
    keep = _generated_only(packed, [len(b"Hello world"), 0])
    starts = np.concatenate([[0], packed.byte_ends[0][:-1]])
    assert np.array_equal(keep[0], (starts >= 11).astype(np.float32)) and 0 < keep[0].sum() < keep[0].size
    assert keep[1].all()


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

    killed = recipe(tmp_path / "b")  # the same corpus and caches, copied
    shutil.copytree(straight.run_dir, killed.run_dir, ignore=shutil.ignore_patterns("student"))
    with pytest.raises(TrainingInterrupted):
        run_training(killed, progress=False, stop_after=lambda s: s == 2)
    resumed = run_training(killed, progress=False)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
