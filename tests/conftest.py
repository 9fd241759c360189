"""Shared pytest fixtures: tiny random causal LMs built from config with real tokenizers.

Other parts may append fixtures below; keep each one small and documented.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# Models under `dtype: auto` run in float32 in the suite on every CPU, so exact-value tests do
# not depend on the machine; the bf16 branch is tested by forcing it (tests/test_precision.py).
os.environ["AVOKIT_CPU_BF16"] = "0"

TINY_ARCHS = ("llama", "gemma3", "qwen3", "gpt_oss")


def _tiny_config(arch: str, vocab_size: int, tokenizer: Any) -> Any:
    """A 2-layer, 32-wide config of ``arch`` (random weights stay in the tens of kB per layer)."""
    import transformers as tf

    common: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "max_position_embeddings": 256, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(**common)
    if arch == "gemma3":
        # final_logit_softcapping exercises the soft-capped head; small window for sliding layers
        return tf.Gemma3TextConfig(**common, sliding_window=16, final_logit_softcapping=30.0,
                                   query_pre_attn_scalar=8)
    if arch == "gpt_oss":
        common.pop("intermediate_size")
        # its YaRN rope expects max_position_embeddings = 32 x original (4096)
        common["max_position_embeddings"] = 131072
        return tf.GptOssConfig(**common, intermediate_size=32, num_local_experts=4,
                               num_experts_per_tok=2, sliding_window=16)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose from {TINY_ARCHS}")


def build_tiny_model_dir(
    out_dir: Path, tokenizer: Any, arch: str = "llama", pad_vocab: int = 0, seed: int = 0
) -> Path:
    """Save a tiny random ``arch`` causal LM (safetensors) plus ``tokenizer`` into ``out_dir``.

    ``pad_vocab`` extra logit rows beyond the tokenizer length make a padded vocabulary.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _tiny_config(arch, len(tokenizer) + pad_vocab, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # random init is tiny (std 0.02): widen the output head so distributions are peaked
    # enough that top-k and word-start masses are meaningfully different from uniform
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(50.0)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """SmolLM2's byte-level BPE tokenizer (49,152 ids), from the registry's cached copy."""
    from avokit.teachers.registry import registry_tokenizer

    return registry_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_tokenizer() -> Any:
    """Gemma 3's SentencePiece tokenizer (262,144 ids), from the registry's cached copy."""
    from avokit.teachers.registry import registry_tokenizer

    return registry_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(tokenizer, arch="llama", pad_vocab=0, seed=0) -> Path``: a tiny random HF model
    dir (built once per argument set per session)."""
    built: dict[tuple[int, str, int, int], Path] = {}

    def make(tokenizer: Any, arch: str = "llama", pad_vocab: int = 0, seed: int = 0) -> Path:
        key = (id(tokenizer), arch, pad_vocab, seed)
        if key not in built:
            out = tmp_path_factory.mktemp(f"tiny-{arch}-{pad_vocab}-{seed}")
            built[key] = build_tiny_model_dir(out, tokenizer, arch, pad_vocab, seed)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved as safetensors."""
    return tiny_model_factory(smollm2_tokenizer, "llama")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway tests' model registry: one tiny model, ``avo-tiny``. A module that needs
    another registry defines its own ``registry`` (a module's fixture takes precedence)."""
    from gateway_support import build_registry

    return build_registry(tmp_path_factory.mktemp("reg") / "registry").parent


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway tests' mock upstream (a vLLM-like server): every answer is 8 tokens, at once.
    A module that needs other timing defines its own ``upstream``."""
    from gateway_support import run_mock_upstream

    yield from run_mock_upstream(tmp_path_factory.mktemp("up"), MOCK_TOKENS="8", MOCK_DELAY_S="0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Captured output may hold lone UTF-16 surrogates (the gateway's invalid-Unicode tests log
    what they send); escape them in the report, which pytest-xdist sends between processes as
    UTF-8 and would otherwise fail on."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]
