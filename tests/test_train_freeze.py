"""``train.freeze``: the frozen part of a pretrained student keeps its starting values through a
real training run, the rest trains, the log says how much trained, and bad settings are refused
naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from avokit.errors import AvokitError
from avokit.recipe import recipe_from_dict
from avokit.recipe.train import FreezeConfig, TrainConfig


def _recipe(tmp: Path, student_dir: Path, freeze: dict[str, Any]) -> Any:
    (tmp / "docs.jsonl").write_text("".join(json.dumps({"text": f"Document {i} tells a story. " * 12}) + "\n"
                                            for i in range(12)))
    data = {"name": "frz", "corpus": {"sources": [{"kind": "jsonl", "path": "docs.jsonl"}]},
            "teachers": [{"name": "t", "kind": "registry", "model": "gemma3-270m"}],
            "student": {"pretrained": str(student_dir)},
            "train": {"steps": 2, "batch_size": 2, "seq_len": 32, "lr": 1e-2, "warmup_steps": 0,
                      "checkpoint_every": 2, "log_every": 1, "eval_every": 100, "freeze": freeze}}
    return recipe_from_dict(data, tmp)


def test_frozen_parameters_keep_their_start_and_the_rest_trains(tmp_path: Path, tiny_llama_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from avokit.corpus import build_corpus
    from avokit.train import run_training

    rec = _recipe(tmp_path, tiny_llama_dir, {"embeddings": True, "layers": 1})
    build_corpus(rec)
    out = run_training(rec, baseline=True, progress=False)
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    frozen = [n for n in start if n.startswith(("model.embed_tokens.", "model.layers.0."))]
    moving = [n for n in start if n.startswith("model.layers.1.") and n.endswith("weight")]
    assert frozen and moving  # the tiny model has the parts this test is about
    for name in frozen:
        torch.testing.assert_close(trained[name], start[name], atol=0, rtol=0)
    assert all(not torch.equal(trained[n], start[n]) for n in moving)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert not model.config.tie_word_embeddings  # so the output head is not frozen with them
    expect = sum(p.numel() for n, p in model.named_parameters()
                 if not n.startswith(("model.embed_tokens.", "model.layers.0.")))
    assert log[-1]["params_trained"] == expect < log[-1]["params"]


def test_nothing_frozen_trains_every_parameter(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from avokit.corpus import build_corpus
    from avokit.train import run_training

    rec = _recipe(tmp_path, tiny_llama_dir, {})
    build_corpus(rec)
    out = run_training(rec, baseline=True, progress=False)
    last = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    assert last["params_trained"] == last["params"]


def test_bad_freezes_are_refused_naming_the_field(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from avokit.train.freeze import freeze_student

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    blocks = model.config.num_hidden_layers
    with pytest.raises(AvokitError, match=rf"train.freeze.layers={blocks + 1}: the student has {blocks}"):
        freeze_student(model, FreezeConfig(layers=blocks + 1))
    # every block and the embeddings frozen: the untied head and the final norm still train
    assert freeze_student(model, FreezeConfig(embeddings=True, layers=blocks)) > 0
    model.lm_head.requires_grad_(False)
    model.model.norm.requires_grad_(False)
    with pytest.raises(AvokitError, match="leaves nothing to train"):
        freeze_student(model, FreezeConfig(embeddings=True, layers=blocks))
    with pytest.raises(ValueError, match="train.freeze: parallel 'fsdp'"):
        TrainConfig(parallel="fsdp", freeze={"layers": 1})
    with pytest.raises(ValueError, match="layers"):
        FreezeConfig(layers=-1)
