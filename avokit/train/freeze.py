"""Freezing part of the student before training (``train.freeze``)."""

from __future__ import annotations

from typing import Any

from avokit.errors import AvokitError
from avokit.recipe.train import FreezeConfig


def transformer_blocks(model: Any) -> list[Any]:
    """The student's transformer blocks, lowest first (Llama- and Qwen-style models keep them in
    ``model.model.layers``); raises :class:`AvokitError` for a model laid out otherwise."""
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    if blocks is None:
        raise AvokitError(f"train.freeze.layers: cannot find the transformer blocks of a "
                          f"{type(model).__name__} (looked for model.model.layers)")
    return list(blocks)


def freeze_student(model: Any, cfg: FreezeConfig) -> int:
    """Turn off the gradients of what ``cfg`` freezes; returns how many parameter elements
    still train. Raises :class:`AvokitError` when the freeze asks for more blocks than the
    model has or would leave nothing to train."""
    if cfg.layers:
        blocks = transformer_blocks(model)
        if cfg.layers > len(blocks):
            raise AvokitError(f"train.freeze.layers={cfg.layers}: the student has {len(blocks)} transformer blocks")
        for block in blocks[:cfg.layers]:
            block.requires_grad_(False)
    if cfg.embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trained == 0:
        raise AvokitError(f"train.freeze: embeddings={cfg.embeddings}, layers={cfg.layers} leaves nothing to train")
    return trained
