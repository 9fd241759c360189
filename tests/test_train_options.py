"""Trainer options that must not change what is learned: gradient accumulation (same global
batch) and gradient checkpointing (same math, less memory)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from test_train import make_recipe, write_corpus


def _run(root: Path, tok_dir: Path, **train: Any) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    from safetensors.torch import load_file

    from avokit.train import run_training

    train = {"steps": 3, "eval_every": 100, "checkpoint_every": 100, "log_every": 1, **train}
    recipe = make_recipe(root, **train)
    write_corpus(recipe.run_dir, n_train=24, n_heldout=2)
    shutil.copytree(tok_dir, recipe.run_dir / "tokenizer")  # one tokenizer for every run
    out = run_training(recipe, baseline=True, progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return load_file(str(out / "model.safetensors")), log


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), (name, float((a[name] - b[name]).abs().max()))


def test_grad_accumulation_and_checkpointing_learn_the_same_weights(tmp_path: Path) -> None:
    from avokit.student import train_student_tokenizer
    from avokit.train.data import read_split

    seed_run = make_recipe(tmp_path / "tok")
    write_corpus(seed_run.run_dir, n_train=24, n_heldout=2)
    tok_dir = tmp_path / "student-tokenizer"
    train_student_tokenizer([d.text for d in read_split(seed_run.run_dir, "train")], 512, tok_dir)

    full, full_log = _run(tmp_path / "full", tok_dir, batch_size=8, grad_accum=1)
    accum, accum_log = _run(tmp_path / "accum", tok_dir, batch_size=4, grad_accum=2)
    ckpt, ckpt_log = _run(tmp_path / "ckpt", tok_dir, batch_size=8, gradient_checkpointing=True)

    # 4 rows x 2 micro-batches are the same 8 rows: same tokens, same mean loss, same update
    assert [r["tokens"] for r in accum_log] == [r["tokens"] for r in full_log]
    for a, b in zip(full_log, accum_log):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
    _close(full, accum, atol=1e-4)
    # checkpointing recomputes activations; the gradients (and so the weights) are the same
    assert [round(r["loss"], 5) for r in ckpt_log] == [round(r["loss"], 5) for r in full_log]
    _close(full, ckpt, atol=1e-5)
    # and training did move the weights (the comparisons above are not between untouched inits)
    assert full_log[-1]["loss"] < full_log[0]["loss"] - 0.05


def test_raising_steps_continues_a_finished_run(tmp_path: Path) -> None:
    """A finished run whose train.steps is raised trains on from its last step; with a
    constant schedule that is the run straight to the higher count (same data order)."""
    from safetensors.torch import load_file

    from avokit.student import train_student_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    seed_run = make_recipe(tmp_path / "tok")
    write_corpus(seed_run.run_dir, n_train=24, n_heldout=2)
    tok_dir = tmp_path / "student-tokenizer"
    train_student_tokenizer([d.text for d in read_split(seed_run.run_dir, "train")], 512, tok_dir)
    straight, straight_log = _run(tmp_path / "straight", tok_dir, steps=5, min_lr_ratio=1.0)

    short = make_recipe(tmp_path / "extended", steps=3, eval_every=100, checkpoint_every=100, log_every=1,
                        min_lr_ratio=1.0)
    write_corpus(short.run_dir, n_train=24, n_heldout=2)
    shutil.copytree(tok_dir, short.run_dir / "tokenizer")
    out = run_training(short, baseline=True, progress=False)
    assert json.loads((out / "training_done.json").read_text())["steps"] == 3
    assert run_training(short, baseline=True, progress=False) == out  # finished: skipped
    longer = short.model_copy(update={"train": short.train.model_copy(update={"steps": 5})})
    run_training(longer, baseline=True, progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [round(r["loss"], 5) for r in log] == [round(r["loss"], 5) for r in straight_log]
    _close(straight, load_file(str(out / "model.safetensors")), atol=1e-5)


def test_on_checkpoint_sees_each_checkpoint_and_changes_nothing(tmp_path: Path) -> None:
    """The hook gets the model at every checkpoint (it may score it in eval mode); training
    then goes on exactly as without a hook."""
    from safetensors.torch import load_file

    from avokit.student import train_student_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    seed_run = make_recipe(tmp_path / "tok")
    write_corpus(seed_run.run_dir, n_train=24, n_heldout=2)
    tok_dir = tmp_path / "student-tokenizer"
    train_student_tokenizer([d.text for d in read_split(seed_run.run_dir, "train")], 512, tok_dir)
    plain, _ = _run(tmp_path / "plain", tok_dir, steps=5, checkpoint_every=2)
    hooked = make_recipe(tmp_path / "hooked", steps=5, eval_every=100, checkpoint_every=2, log_every=1)
    write_corpus(hooked.run_dir, n_train=24, n_heldout=2)
    shutil.copytree(tok_dir, hooked.run_dir / "tokenizer")
    seen: list[tuple[int, float]] = []

    def hook(step: int, model: Any) -> None:
        assert model.training  # the previous call's eval() was undone
        model.eval()  # as a scorer does; the loop must put it back in training mode
        with torch.no_grad():
            seen.append((step, float(model.get_input_embeddings().weight.sum())))

    out = run_training(hooked, baseline=True, progress=False, on_checkpoint=hook)
    assert [s for s, _ in seen] == [2, 4, 5]
    assert len({w for _, w in seen}) == 3  # a different model each time: the live weights
    _close(plain, load_file(str(out / "model.safetensors")), atol=0)


def test_unreadable_corpus_split_is_one_error_naming_the_file(tmp_path: Path) -> None:
    import pytest

    from avokit.errors import AvokitError
    from avokit.train.data import read_split

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(AvokitError, match=r"corpus/train.parquet: unreadable Parquet"):
        read_split(tmp_path, "train")
