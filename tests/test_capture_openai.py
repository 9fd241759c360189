"""A teacher behind an OpenAI-compatible endpoint is captured the same way as a local one:
the same `run_capture`, the same cache format, the same records (fake vLLM serving a tiny
model's real prompt log-probs; the endpoint is the boundary we do not own)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_capture import TEXTS, tree
from test_teachers_openai import (  # noqa: F401  (hf_teacher, server: fixtures)
    MAX_LEN,
    TOP_K,
    FakeVLLM,
    hf_teacher,
    server,
)

from avokit.cache import CacheReader
from avokit.capture import run_capture
from avokit.recipe import recipe_from_dict
from avokit.teachers import HFTeacher


def test_endpoint_teacher_captured_like_local(tmp_path: Path, tiny_llama_dir: Path,
                                              server: tuple[str, FakeVLLM],  # noqa: F811
                                              hf_teacher: HFTeacher) -> None:  # noqa: F811
    url, _ = server
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    recipe = recipe_from_dict({
        "name": "api",
        "runs_dir": str(tmp_path / "runs"),
        "corpus": {"sources": [{"kind": "jsonl", "path": str(corpus)}], "min_chars": 20,
                   "max_chars": 200, "heldout_fraction": 0.25},
        "teachers": [
            # a prompt carries its last target too: max_length + 1 prompt tokens = same windows
            {"name": "api", "kind": "openai", "base_url": url, "model": "tiny",
             "tokenizer": str(tiny_llama_dir), "max_length": MAX_LEN + 1},
            {"name": "local", "kind": "hf", "path": str(tiny_llama_dir), "max_length": MAX_LEN,
             "device": "cpu"},
        ],
        "capture": {"top_k": TOP_K, "batch_size": 3, "docs_per_shard": 2, "logprob_bits": 16},
    }, tmp_path)
    run_capture(recipe)
    api_dir, local_dir = (recipe.run_dir / "cache" / n for n in ("api", "local"))
    api, local = CacheReader(api_dir), CacheReader(local_dir)
    assert api.manifest.teacher_fingerprint != local.manifest.teacher_fingerprint
    assert api.manifest.tokenizer_fingerprint == local.manifest.tokenizer_fingerprint
    assert [s.file for s in api.manifest.shards] == [s.file for s in local.manifest.shards]
    assert list(api) == list(local) and len(api) == len(TEXTS)
    bound = api.manifest.max_logprob_error
    for doc_id in local:
        a, b = api[doc_id], local[doc_id]
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_array_equal(a.byte_ends, b.byte_ends)
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
        np.testing.assert_allclose(a.gold_logprob, b.gold_logprob, atol=2e-4)
        np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, atol=2 * bound + 2e-4)
        # an endpoint only returns the top-k: its word-start mass is the top-k lower bound
        assert np.all(a.boundary_logmass <= b.boundary_logmass + 1e-4)
    # the tokenizer is saved with the cache for an endpoint teacher too
    assert any(name.startswith("tokenizer/") for name in tree(api_dir))
