"""The student's size for the dry-run plan: parameters and FLOPs per token, read from its config.

A from-scratch student's config comes from the recipe's size fields; a pretrained one's from
its own ``config.json`` (a registry model's converted copy, where this machine has one). The
model is built on the meta device, so no weights are loaded and no memory is used.

Forward FLOPs per token (Kaplan et al. 2020, "Scaling Laws for Neural Language Models",
table 1): 2 per parameter that takes part in a matrix product, plus ``2 x layers x context x
attention width`` for the attention scores and their weighted sum. An untied input embedding
is a table lookup, not a product, so it is left out; a tied one is the output head and counts.
Training costs three forward passes per token (forward, and backward for activations and
weights), less what ``train.freeze`` spares: a frozen block needs no weight gradients, nor
activation gradients when nothing below it trains (frozen embeddings); a tied head frozen with
the embeddings needs no weight gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avokit.recipe import Recipe
from avokit.recipe.train import FreezeConfig


@dataclass(frozen=True)
class StudentSize:
    """``params``: None where the pretrained student is not on this machine."""

    params: int | None
    forward_flops_per_token: float
    source: str  # where the figures come from
    train_flops_per_token: float  # forward + backward, after what train.freeze spares


class _VocabOnly:
    """Stands in for the not-yet-trained student tokenizer: only its size matters here."""

    bos_token_id = eos_token_id = pad_token_id = None

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size


def forward_flops_per_token(config: Any, params: int, context: int) -> float:
    """Forward FLOPs per token of a model with ``config`` (a ``transformers`` config) and
    ``params`` parameters, at ``context`` tokens (see the module docstring)."""
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    lookup = 0 if getattr(text, "tie_word_embeddings", False) else text.vocab_size * text.hidden_size
    return 2.0 * (params - lookup) + 2.0 * text.num_hidden_layers * context * heads * head_dim


def train_flops_per_token(model: Any, forward: float, context: int, freeze: FreezeConfig) -> float:
    """Forward plus backward FLOPs per training token of ``model`` (its shape only: the meta
    device will do) with ``freeze`` applied (see the module docstring); ``forward``: its
    forward FLOPs per token at ``context``."""
    text = model.config.get_text_config()
    if not freeze.any:
        return 3.0 * forward
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    spared = 0.0
    if freeze.layers:
        from avokit.train.freeze import transformer_blocks

        per_pass = 1.0 + float(freeze.embeddings)  # weight grads; activation grads too if nothing below trains
        for block in transformer_blocks(model)[:freeze.layers]:
            block_forward = 2.0 * sum(p.numel() for p in block.parameters()) + 2.0 * context * heads * head_dim
            spared += per_pass * block_forward
    if freeze.embeddings and getattr(text, "tie_word_embeddings", False):
        spared += 2.0 * text.vocab_size * text.hidden_size  # the head's weight gradient
    return 3.0 * forward - spared


def _meta_size(config: Any, context: int, source: str, freeze: FreezeConfig | None = None) -> StudentSize:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    forward = forward_flops_per_token(config, params, context)
    return StudentSize(params, forward, source, train_flops_per_token(model, forward, context, freeze or FreezeConfig()))


def _pretrained_folder(recipe: Recipe) -> tuple[Path | None, str]:
    """The pretrained student's folder on this machine (None: not here) and how it was found."""
    name = recipe.student.registry_name
    if name is None:
        folder = recipe.student.pretrained_dir(recipe.base_dir)
        return folder, f"config.json of {folder}"
    from avokit.teachers.materialize import find_converted

    folder = find_converted(name)
    return folder, f"config.json of registry model {name} ({folder})"


def student_size(recipe: Recipe) -> StudentSize:
    """Parameters and forward FLOPs per token (at ``train.seq_len``) of the recipe's student."""
    from transformers import AutoConfig

    from avokit.student.model import student_hf_config

    context = recipe.train.seq_len
    if recipe.student.pretrained is None:
        cfg = student_hf_config(recipe.student, _VocabOnly(recipe.student.tokenizer.vocab_size))
        return _meta_size(cfg, context, "the recipe's student size fields", recipe.train.freeze)
    folder, source = _pretrained_folder(recipe)
    if folder is not None and (folder / "config.json").is_file():
        return _meta_size(AutoConfig.from_pretrained(folder), context, source, recipe.train.freeze)
    name = recipe.student.registry_name
    if name is not None:  # not converted here yet: the catalog knows its size, not its shape
        from avokit.catalog import teacher_entry

        params = teacher_entry(name).params
        frozen = ", train.freeze not counted" if recipe.train.freeze.any else ""
        return StudentSize(params, 2.0 * params, f"registry catalog ({name} not converted on this machine "
                                                 f"yet: attention FLOPs{frozen} not counted)", 6.0 * params)
    return StudentSize(None, 0.0, f"unknown: {folder} is not on this machine", 0.0)
