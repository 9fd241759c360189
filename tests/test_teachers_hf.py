"""HF backend on tiny random models: chunked scoring equals a direct full-logit computation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf_support import write_gguf

from avokit.errors import AvokitError
from avokit.recipe.teachers import TeacherConfig
from avokit.teachers import HFTeacher, load_teacher
from avokit.teachers.fingerprint import tokenizer_fingerprint, weight_files, weights_fingerprint
from avokit.teachers.scoring import plan_windows, word_start_mask

DOCS = [
    "The quick brown fox jumps over the lazy dog.\nIt was\ta naïve café — 東京 🍣!",
    "Short",
    "",
    ("A longer document that goes well past sixteen tokens, because it keeps talking about "
     "numbers like 12345 and 67890, and about more words, so rolling windows are needed."),
]
MAX_LEN = 16


def reference(teacher: HFTeacher, ids: list[int], top_k: int) -> dict[str, np.ndarray]:
    """Direct computation: model(...).logits, float32 log_softmax over the full width,
    re-run for every rolling window exactly as the plan says."""
    seq = [teacher.start_token_id] + ids
    n = len(ids)
    real = teacher.token_bytes.size
    mask = torch.from_numpy(word_start_mask(teacher.token_bytes, 10**7)[:real])
    out = {k: [] for k in ("gold", "ids", "lp", "bound")}
    for w in plan_windows(0, n, MAX_LEN):
        x = torch.tensor([seq[w.a : w.b]])
        with torch.no_grad():
            logits = teacher.model(input_ids=x).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)[w.first :]
        tgt = torch.tensor(seq[w.a + w.first + 1 : w.b + 1])
        out["gold"].append(lp.gather(1, tgt[:, None]).squeeze(1))
        vals, top = lp[:, :real].topk(top_k, dim=-1)
        out["ids"].append(top)
        out["lp"].append(vals)
        out["bound"].append(torch.logsumexp(lp[:, :real][:, mask], dim=-1))
    if n == 0:
        return {"gold": np.zeros(0), "ids": np.zeros((0, top_k)), "lp": np.zeros((0, top_k)),
                "bound": np.zeros(0)}
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def assert_matches(teacher: HFTeacher, top_k: int = 8) -> None:
    records = teacher.score(DOCS, [f"d{i}" for i in range(len(DOCS))], top_k)
    for text, rec in zip(DOCS, records):
        assert rec.byte_ends[-1:].tolist() == ([len(text.encode())] if text else [])
        ref = reference(teacher, rec.token_ids.tolist(), top_k)
        np.testing.assert_allclose(rec.gold_logprob, ref["gold"], atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(rec.topk_logprobs, ref["lp"], atol=2e-4, rtol=1e-4)
        np.testing.assert_array_equal(rec.topk_ids, ref["ids"])
        np.testing.assert_allclose(rec.boundary_logmass, ref["bound"], atol=2e-4, rtol=1e-4)
        assert rec.topk_ids.dtype == np.int32 and rec.topk_logprobs.dtype == np.float32
        assert np.all(np.diff(rec.topk_logprobs, axis=1) <= 0)


@pytest.mark.parametrize(
    ("arch", "pad_vocab"), [("llama", 0), ("gemma3", 0), ("qwen3", 40), ("gpt_oss", 0)]
)
def test_scores_equal_full_logits(
    arch: str, pad_vocab: int, tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any
) -> None:
    # SmolLM2's 49k tokenizer for every architecture keeps this fast; Gemma's real
    # SentencePiece tokenizer is exercised by the real-teacher test.
    tok = smollm2_tokenizer
    path = tiny_model_factory(tok, arch, pad_vocab)
    # vocab_chunk=7 and batch_size=3 force several head chunks and several padded batches
    teacher = HFTeacher.from_dir(path, name=arch, device="cpu", max_length=MAX_LEN,
                                 batch_size=3, vocab_chunk=7)
    width = teacher.model.get_output_embeddings().weight.shape[0]
    assert width == len(tok) + pad_vocab and teacher.info.vocab_size == len(tok)
    assert_matches(teacher)
    if arch == "gemma3":  # the soft-capped head (final_logit_softcapping) is what was matched
        assert teacher._spec.softcap == 30.0
    if pad_vocab:  # normalised over the padded width, top-k only among real ids
        rec = teacher.score([DOCS[0]], ["d"], 64)[0]
        assert rec.topk_ids.max() < len(tok)


def test_plan_windows_cover_every_position_once() -> None:
    for n in (1, 15, 16, 17, 40, 97):
        windows = plan_windows(0, n, MAX_LEN)
        scored = np.concatenate([np.arange(w.a + w.first, w.b) for w in windows])
        np.testing.assert_array_equal(scored, np.arange(n))
        assert all(w.b - w.a <= MAX_LEN for w in windows)
        assert all(w.first == MAX_LEN // 2 for w in windows[1:])
    assert plan_windows(0, 0, MAX_LEN) == []


def test_load_teacher_hf_and_errors(tiny_llama_dir: Path, tmp_path: Path) -> None:
    cfg = TeacherConfig(name="tiny", kind="hf", path=tiny_llama_dir, device="cpu",
                        start_token="<|endoftext|>")
    teacher = load_teacher(cfg, tmp_path)
    assert teacher.info.backend == "hf" and teacher.info.vocab_size == 49152
    assert teacher.info.boundary_mass == "full"
    assert teacher.start_token_id == 0  # <|endoftext|> in SmolLM2's vocabulary
    with pytest.raises(AvokitError, match="nowhere"):
        load_teacher(TeacherConfig(name="x", kind="hf", path=Path("nowhere")), tmp_path)
    with pytest.raises(AvokitError, match="start_token"):
        load_teacher(cfg.model_copy(update={"start_token": "<not-a-token>"}), tmp_path)
    with pytest.raises(AvokitError, match="top_k"):
        teacher.score(["hi"], ["a"], 10**6)


def test_fingerprints(tiny_llama_dir: Path, tmp_path: Path, smollm2_tokenizer: Any) -> None:
    from avokit.align.bytes import byteify

    files = weight_files(tiny_llama_dir)
    assert [f.suffix for f in files] == [".safetensors"]
    before = weights_fingerprint(files)
    copy = tmp_path / files[0].name
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 0xFF  # a change in the last bytes of the file
    copy.write_bytes(bytes(data))
    assert weights_fingerprint([copy]) != before
    assert weights_fingerprint(files) == before
    tb = byteify(smollm2_tokenizer)
    fp = tokenizer_fingerprint(tb)
    assert fp == tokenizer_fingerprint(byteify(smollm2_tokenizer))
    changed = tb.table.copy()
    changed[500] = changed[500] + b"x"
    assert fp != tokenizer_fingerprint(dataclasses.replace(tb, table=changed))


def test_cli_list_shows_vocab_sizes() -> None:
    from typer.testing import CliRunner

    from avokit.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["teachers", "list"], env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.output
    assert "262144" in result.output and "49152" in result.output and "151936" in result.output
    assert "Qwen2" in result.output and "494.0M" in result.output
    assert "gemma3-270m" in result.output and "Apache-2.0" in result.output


def test_cli_check_prints_perplexity_and_top_tokens(tiny_llama_dir: Path) -> None:
    from typer.testing import CliRunner

    from avokit.cli.main import build_app

    result = CliRunner().invoke(build_app(), ["teachers", "check", str(tiny_llama_dir),
                                              "--top-k", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "perplexity on the check paragraph: " in out and "tok/s" in out
    assert "bits per byte on the check paragraph: " in out
    assert "top 3 next tokens after 'The capital of France is':" in out
    rows = [line for line in out.splitlines() if line.startswith(("│ '", '│ "'))]
    assert len(rows) == 3, out  # one table row per token: repr(token) | probability


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_gguf_backend_equals_hf(arch: str, tiny_model_factory: Callable[..., Path],
                                tmp_path: Path, smollm2_tokenizer: Any) -> None:
    # Gemma 3 GGUF loading is exercised on real weights by the registry teacher gemma3-270m;
    # gpt-oss has no GGUF writer here that transformers' loader reads back.
    from transformers import AutoModelForCausalLM

    model_dir = tiny_model_factory(smollm2_tokenizer, arch)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if arch == "qwen3":
        # transformers reads no head_dim from a Qwen3 GGUF and takes Qwen3's 128 (every
        # released Qwen3 has it): rebuild the tiny model with that head size
        model.config.head_dim = 128
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(50.0)  # peaked, as in conftest
        model_dir = tmp_path / "hf"
        model.save_pretrained(model_dir)
        smollm2_tokenizer.save_pretrained(model_dir)
    path = write_gguf(model, tmp_path / "tiny.gguf", arch)
    # the GGUF holds no tokenizer metadata: pass the tokenizer (as registry teachers do)
    teacher = HFTeacher.from_gguf(path, device="cpu", tokenizer=smollm2_tokenizer,
                                  max_length=MAX_LEN, batch_size=3, vocab_chunk=7)
    assert teacher.info.backend == "gguf" and teacher.info.name == "tiny"
    assert type(teacher.model).__name__ == type(model).__name__
    assert_matches(teacher)
    direct = HFTeacher.from_dir(model_dir, device="cpu", max_length=MAX_LEN)
    got, want = teacher.score([DOCS[3]], ["d"], 8)[0], direct.score([DOCS[3]], ["d"], 8)[0]
    np.testing.assert_allclose(got.gold_logprob, want.gold_logprob, atol=2e-4)
    np.testing.assert_array_equal(got.topk_ids, want.topk_ids)
    with pytest.raises(AvokitError, match="missing.gguf"):
        HFTeacher.from_gguf(tmp_path / "missing.gguf")
