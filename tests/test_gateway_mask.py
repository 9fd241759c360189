"""The grammar mask's apply path (avokit.gateway.engines.constrained): the vectorised,
branch-free apply equals a straightforward reference bit for bit, on random bitmasks and vocab
sizes that are not multiples of 32; rows without a grammar get no mask work at all."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avokit.gateway.engines import constrained

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import build_registry

MODEL = "avo-tiny"


def _reference(logits: torch.Tensor, bitmask: np.ndarray, rows: list[int]) -> torch.Tensor:
    """Token t of row rows[j] is allowed iff bit t % 32 of word t // 32 of bitmask[j] is set
    (tokens beyond the words: banned); one Python loop over rows and tokens, no tricks."""
    out = logits.clone()
    words = bitmask.shape[1]
    for j, i in enumerate(rows):
        for t in range(logits.shape[1]):
            w = t // 32
            allowed = w < words and (int(bitmask[j, w]) >> (t % 32)) & 1
            if not allowed:
                out[i, t] = float("-inf")
    return out


def _random_case(seed: int, batch: int, vocab: int, words: int, density: float
                 ) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    bits = rng.random((batch, words * 32)) < density
    bitmask = np.packbits(bits, axis=1, bitorder="little").view(np.int32)
    rows = sorted(rng.choice(batch, size=int(rng.integers(1, batch + 1)), replace=False).tolist())
    logits = torch.from_numpy(rng.standard_normal((batch, vocab)).astype(np.float32))
    return logits, np.ascontiguousarray(bitmask[:len(rows)]), rows


# vocab sizes: under one word, odd, the bitmask longer than the head (tokenizer > head), the
# head longer than the bitmask (padded head rows: banned)
CASES = [(1, 1), (31, 1), (33, 2), (97, 4), (1001, 32), (1001, 31), (2049, 64)]


@pytest.mark.parametrize("path", ["numpy", "torch"])
@pytest.mark.parametrize("vocab,words", CASES)
def test_apply_equals_the_reference_on_random_bitmasks(path: str, vocab: int, words: int) -> None:
    for seed, density in enumerate([0.0, 0.03, 0.5, 0.97, 1.0]):
        logits, bitmask, rows = _random_case(seed, 6, vocab, words, density)
        want = _reference(logits, bitmask, rows)
        got = logits.clone()
        if path == "numpy":  # the CPU path apply_bitmask takes
            constrained.apply_bitmask(got, bitmask, rows)
        else:  # the accelerator path, run on CPU tensors
            constrained._apply_torch(got, torch.from_numpy(bitmask), rows, vocab)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (seed, rows)


def test_apply_on_a_strided_view_of_the_model_output() -> None:
    """The engine masks ``out.logits[:, -1, :]``, a non-contiguous view: the edit lands there."""
    vocab = 49157  # SmolLM2-sized and odd
    rng = np.random.default_rng(7)
    full = torch.from_numpy(rng.standard_normal((4, 3, vocab)).astype(np.float32))
    logits = full[:, -1, :]
    assert not logits.is_contiguous()
    bits = rng.random((2, 1537 * 32)) < 0.5
    bitmask = np.packbits(bits, axis=1, bitorder="little").view(np.int32)
    before = full.clone()
    constrained.apply_bitmask(logits, bitmask, [1, 3])
    # the previous implementation (np.unpackbits per row + masked_fill) as a second reference
    for j, i in enumerate([1, 3]):
        allowed = torch.from_numpy(bits[j, :vocab].copy())
        want = before[i, -1].masked_fill(~allowed, float("-inf"))
        assert torch.equal(full[i, -1], want)
    for i in (0, 2):
        assert torch.equal(full[i], before[i])  # rows without a grammar: untouched
    assert torch.equal(full[:, :-1], before[:, :-1])


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_token_masks_match_llguidance_for_a_real_grammar(
        which: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """TokenMasks fills its buffer through llguidance: the banned tokens are exactly those the
    matcher's own bitmask (compute_bitmask) leaves out, step after step, for the tests' small
    tokenizer and SmolLM2's 49,152-token one."""
    from avokit.gateway.engines.base import load_tokenizer
    from avokit.gateway.grammars import GrammarCompiler, response_format_spec
    from avokit.gateway.protocol import ResponseFormat

    if which == "tiny":
        build_registry(tmp_path, MODEL)
        tok = load_tokenizer(tmp_path / MODEL)
    else:
        tok = request.getfixturevalue("smollm2_tokenizer")
    compiler = GrammarCompiler()
    fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x",
        "schema": {"type": "object", "properties": {"a": {"enum": ["x", "yy"]}},
                   "required": ["a"], "additionalProperties": False}}})
    spec = response_format_spec(fmt, "response_format", compiler.limits)
    assert spec is not None
    c = compiler.constraint(which, tok, spec)
    masks = constrained.TokenMasks(c.n_vocab, rows=1)  # grows to the batch
    vocab = c.n_vocab + 3  # a head padded past the tokenizer
    matchers = [constrained.start(c), constrained.start(c)]
    gen = torch.Generator().manual_seed(0)
    steps = 0
    while not constrained.complete(matchers[0]):
        logits = torch.randn(3, vocab, generator=gen)
        before = logits.clone()
        assert masks.mask_rows(logits, [(0, matchers[0]), (2, matchers[1])]) == []
        own = np.frombuffer(matchers[0].compute_bitmask(), dtype=np.int32)[None]
        assert torch.equal(logits[0], _reference(before, own, [0])[0])
        assert torch.equal(logits[1], before[1])
        token = int(torch.argmax(logits[0]))
        for m in matchers:
            assert constrained.advance(m, token)
        steps += 1
    assert steps >= 3 and masks.buffer.shape[0] == 2
    compiler.close()


def test_rows_without_grammar_do_no_mask_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """A batch of free rows never reaches the mask code; in a mixed batch llguidance fills a
    mask for the constrained row only, and the apply edits that row only."""
    import llguidance.numpy

    from avokit.gateway.engines.base import GenParams, scan_registry
    from avokit.gateway.engines.transformers_engine import TransformersEngine
    from avokit.gateway.grammars import GrammarCompiler, response_format_spec
    from avokit.gateway.protocol import ResponseFormat

    fills: list[Any] = []
    applied: list[list[int]] = []
    real_fill, real_apply = llguidance.numpy.fill_next_token_bitmask, constrained.apply_bitmask

    def counting_fill(matcher: Any, bitmask: Any, index: int = 0) -> None:
        fills.append(matcher)
        real_fill(matcher, bitmask, index)

    def counting_apply(logits: torch.Tensor, bitmask: Any, rows: list[int]) -> None:
        applied.append(list(rows))
        real_apply(logits, bitmask, rows)

    monkeypatch.setattr(llguidance.numpy, "fill_next_token_bitmask", counting_fill)
    monkeypatch.setattr(constrained, "apply_bitmask", counting_apply)
    build_registry(tmp_path, MODEL)

    async def run() -> None:
        engine = TransformersEngine(scan_registry(tmp_path), max_batch_size=4, batch_wait_ms=50)
        tok = engine.tokenizer(MODEL)
        compiler = GrammarCompiler()
        spec = response_format_spec(ResponseFormat(type="json_object"), "response_format",
                                    compiler.limits)
        assert spec is not None
        c = compiler.constraint(MODEL, tok, spec)
        ids = list(tok("Hello").input_ids)
        try:
            free = [GenParams(ids, 6, temperature=1.0, seed=s) for s in range(3)]
            await asyncio.gather(*(engine.complete(MODEL, p) for p in free))
            assert fills == [] and applied == []  # the fast path: no mask work at all
            mixed = free + [GenParams(ids, 6, temperature=1.0, seed=9, constraint=c)]
            results = await asyncio.gather(*(engine.complete(MODEL, p) for p in mixed))
        finally:
            await engine.aclose()
            compiler.close()
        steps = results[3][1].completion_tokens
        assert steps >= 1
        # one fill per step of the constrained row, for no other matcher
        assert len(fills) in (steps, steps + 1) and len({id(m) for m in fills}) == 1
        assert all(len(rows) == 1 for rows in applied) and len(applied) == len(fills)

    asyncio.run(run())
