"""Writing tiny float32 models as GGUF files, for tests of the GGUF paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def write_gguf(model: Any, out: Path, arch: str) -> Path:
    """Write a float32 Llama or Qwen3 as GGUF the way llama.cpp's converter does (Llama's q/k
    rows permuted for its rope layout; Qwen3 as is, with its q/k norms)."""
    gguf = pytest.importorskip("gguf")
    c = model.config
    gguf_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3}[arch]
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(0)  # all float32
    names = gguf.get_tensor_name_map(gguf_arch, c.num_hidden_layers)

    def permute(x: np.ndarray, n_head: int) -> np.ndarray:
        return (x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:])
                .swapaxes(1, 2).reshape(x.shape))

    for key, value in model.state_dict().items():
        arr = value.float().numpy()
        if arch == "llama" and key.endswith("q_proj.weight"):
            arr = permute(arr, c.num_attention_heads)
        if arch == "llama" and key.endswith("k_proj.weight"):
            arr = permute(arr, c.num_key_value_heads)
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, key  # every tensor must land somewhere
        writer.add_tensor(gguf_name, np.ascontiguousarray(arr))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
