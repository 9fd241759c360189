"""Build the student model: a Llama- or Qwen3-style causal LM from the recipe, or a pretrained dir."""

from __future__ import annotations

import os
from typing import Any

from avokit.errors import AvokitError
from avokit.recipe.student import StudentConfig


def student_hf_config(config: StudentConfig, tokenizer: Any) -> Any:
    """The ``transformers`` config for a from-scratch student sized by ``config``.

    The vocabulary is exactly ``len(tokenizer)`` (no padding), so logit width == tokenizer size
    and evaluation never has to guess which logits are real.
    """
    from transformers import LlamaConfig, Qwen3Config

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    }
    if config.arch == "llama":
        return LlamaConfig(**common)
    return Qwen3Config(head_dim=config.hidden_size // config.num_heads, **common)


def build_student(config: StudentConfig, tokenizer: Any) -> Any:
    """A ``PreTrainedModel`` student: randomly initialised from ``config``, or ``config.pretrained``.

    A pretrained model whose embedding table differs from ``len(tokenizer)`` is resized to it
    (new rows are initialised by transformers). Special token ids in the model's config and
    generation config are set from the tokenizer so ``generate`` stops at EOS.
    """
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if config.pretrained is not None:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(config.pretrained), dtype="float32")
        except Exception as err:  # missing/corrupt files surface as several exception types
            raise AvokitError(f"student.pretrained: cannot load {config.pretrained}: {err}") from err
        embeddings: Any = model.get_input_embeddings()
        if embeddings.weight.shape[0] != len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    else:
        model = AutoModelForCausalLM.from_config(student_hf_config(config, tokenizer))
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr)
        setattr(model.config, attr, value)
        if model.generation_config is not None:
            setattr(model.generation_config, attr, value)
    return model


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
