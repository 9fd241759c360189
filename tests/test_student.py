"""Student tokenizer and model: byte-exact round trip, special tokens, chat template, HF reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from avokit.align import byteify, tokenize_with_offsets
from avokit.errors import AvokitError
from avokit.recipe import StudentConfig
from avokit.student import (
    build_student,
    count_parameters,
    load_student_tokenizer,
    train_student_tokenizer,
)

TEXTS = [f"Le café {i} est naïve; 東京 は 大きい. The river ran under the old stone bridge.\n" for i in range(60)]


def test_tokenizer_round_trips_and_chats(tmp_path: Path) -> None:
    tok = train_student_tokenizer(TEXTS, 400, tmp_path / "tok")
    assert 260 < len(tok) <= 400  # merges stop when the corpus has no more pairs
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    doc = tokenize_with_offsets(tok, "  Café 東京\tend ", byteify(tok))  # exact bytes, no prefix space
    assert doc.n_bytes == len("  Café 東京\tend ".encode())
    again = load_student_tokenizer(tmp_path / "tok")
    assert again("The river").input_ids == tok("The river").input_ids
    prompt = again.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(AvokitError, match="vocab_size"):
        train_student_tokenizer(TEXTS, 100, tmp_path / "small")
    with pytest.raises(AvokitError, match="empty"):
        train_student_tokenizer([], 400, tmp_path / "none")


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_student_saves_and_reloads_with_plain_transformers(tmp_path: Path, arch: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tok = train_student_tokenizer(TEXTS, 400, tmp_path / "tok")
    cfg = StudentConfig(arch=arch, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2)
    model = build_student(cfg, tok)
    assert model.config.vocab_size == len(tok) and 40_000 < count_parameters(model) < 200_000
    model.save_pretrained(str(tmp_path / "m"))
    tok.save_pretrained(str(tmp_path / "m"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    ids = tok("The river", return_tensors="pt").input_ids
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    out = loaded.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= ids.shape[1] + 4
    # a pretrained directory is loaded and resized to the new tokenizer
    bigger = train_student_tokenizer(TEXTS[:20], 300, tmp_path / "tok2")
    warm = build_student(StudentConfig(pretrained=tmp_path / "m"), bigger)
    assert warm.get_input_embeddings().weight.shape[0] == len(bigger) != len(tok)


def test_pretrained_missing_is_a_clear_error(tmp_path: Path) -> None:
    tok = train_student_tokenizer(TEXTS, 400, tmp_path / "tok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AvokitError, match="student.pretrained"):
        build_student(StudentConfig(pretrained=tmp_path / "empty"), tok)
