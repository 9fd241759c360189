"""Unit tests for avokit.align.bytes: tokenizer family detection and byteification.

Written against the mutants ``mutmut`` showed surviving in ``avokit/align/bytes.py`` (issue 18,
item 5). Every tokenizer here is built in-test with the ``tokenizers`` library (byte-level BPE,
llama-style SentencePiece BPE with byte fallback, Metaspace, WordLevel, WordPiece), so the
expected bytes of each id are written out by hand: a wrong family, a lost dummy prefix, a
byte-fallback piece decoded in the wrong base or a hole spelled as text would each change them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre
from transformers import PreTrainedTokenizerFast

from avokit.align.bytes import (
    SPIECE_SPACE,
    _component_spec,
    _detect_family,
    _piece_bytes,
    _walk_types,
    byteify,
    drop_unicode_normalizer,
)

S = SPIECE_SPACE


def _state(component: Any) -> dict[str, Any]:
    """The JSON dict the tokenizers library writes for one component."""
    return json.loads(component.__getstate__())


def _spec(normalizer: Any = None, pre_tokenizer: Any = None, decoder: Any = None) -> dict[str, Any]:
    """A component spec as ``_component_spec`` returns it, from tokenizers components."""
    return {
        "normalizer": _state(normalizer) if normalizer is not None else None,
        "pre_tokenizer": _state(pre_tokenizer) if pre_tokenizer is not None else None,
        "decoder": _state(decoder) if decoder is not None else None,
    }


# ---------------------------------------------------------------- _walk_types


def test_walk_types_none_and_non_dict() -> None:
    """A missing component (None) or a non-dict node contributes no component."""
    assert _walk_types(None) == []
    assert _walk_types([{"type": "ByteLevel"}]) == []


@pytest.mark.parametrize("key", ["decoders", "pretokenizers", "normalizers", "processors"])
def test_walk_types_nested_sequences(key: str) -> None:
    """Each Sequence kind's children are visited, depth first, in order (a skipped key would
    hide a nested ByteLevel / Metaspace from family detection)."""
    inner_leaf = {"type": "Fuse"}
    inner = {"type": "Sequence", key: [inner_leaf]}
    first = {"type": "Replace", "content": " "}
    last = {"type": "Strip"}
    node = {"type": "Sequence", key: [first, inner, last]}
    assert _walk_types(node) == [node, first, inner, inner_leaf, last]


def test_walk_types_real_post_processor_sequence() -> None:
    """A post-processor Sequence (its children under "processors") is walked too."""
    node = _state(processors.Sequence([processors.ByteLevel(), processors.ByteLevel(trim_offsets=False)]))
    types = [(p["type"], p.get("trim_offsets")) for p in _walk_types(node)]
    assert types == [("Sequence", None), ("ByteLevel", True), ("ByteLevel", False)]


def test_walk_types_sequence_without_children() -> None:
    """A Sequence whose children list is null is just the node itself."""
    node = {"type": "Sequence", "normalizers": None}
    assert _walk_types(node) == [node]


# ---------------------------------------------------------------- _detect_family

BYTE_LEVEL_CASES: dict[str, dict[str, Any]] = {
    # GPT-2: ByteLevel pre-tokenizer and decoder.
    "gpt2": _spec(pre_tokenizer=pre.ByteLevel(add_prefix_space=False), decoder=decoders.ByteLevel()),
    # ByteLevel only in the pre-tokenizer.
    "pre_only": _spec(pre_tokenizer=pre.ByteLevel()),
    # Qwen-like: a Split pre-tokenizer; ByteLevel only in the decoder.
    "decoder_only": _spec(pre_tokenizer=pre.Split(" ", "isolated"), decoder=decoders.ByteLevel()),
    # ByteLevel only as a normaliser.
    "normalizer_only": _spec(normalizer=normalizers.ByteLevel()),
    # nested in a pre-tokenizer Sequence, next to a Metaspace-free Split
    "nested_pre": _spec(pre_tokenizer=pre.Sequence([pre.Split(" ", "isolated"),
                                                    pre.ByteLevel(use_regex=False)])),
    # ByteLevel wins over SentencePiece markers
    "with_metaspace": _spec(pre_tokenizer=pre.Sequence([pre.Metaspace(), pre.ByteLevel()])),
}


@pytest.mark.parametrize("case", sorted(BYTE_LEVEL_CASES))
def test_detect_family_byte_level(case: str) -> None:
    """ByteLevel anywhere (pre-tokenizer, decoder, normaliser, nested) means byte-level BPE,
    which never has a SentencePiece dummy prefix."""
    assert _detect_family(BYTE_LEVEL_CASES[case]) == ("byte_level", False)


SPIECE_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    # modern Metaspace pre-tokenizers
    "metaspace_always": (_spec(pre_tokenizer=pre.Metaspace(prepend_scheme="always"),
                               decoder=decoders.Metaspace(prepend_scheme="always")), True),
    "metaspace_first": (_spec(pre_tokenizer=pre.Metaspace(prepend_scheme="first")), True),
    "metaspace_never": (_spec(pre_tokenizer=pre.Metaspace(prepend_scheme="never"),
                              decoder=decoders.Metaspace(prepend_scheme="never")), False),
    "metaspace_nested": (_spec(pre_tokenizer=pre.Sequence([pre.Metaspace()])), True),
    # older tokenizer.json files: add_prefix_space instead of prepend_scheme
    "old_add_prefix_false": ({"pre_tokenizer": {"type": "Metaspace", "replacement": S,
                                                "add_prefix_space": False},
                              "decoder": None, "normalizer": None}, False),
    "old_add_prefix_true": ({"pre_tokenizer": {"type": "Metaspace", "replacement": S,
                                               "add_prefix_space": True},
                             "decoder": None, "normalizer": None}, True),
    "old_no_flags": ({"pre_tokenizer": {"type": "Metaspace", "replacement": S},
                      "decoder": None, "normalizer": None}, True),
    # prepend_scheme "never" wins over add_prefix_space true
    "both_never": ({"pre_tokenizer": {"type": "Metaspace", "replacement": S,
                                      "add_prefix_space": True, "prepend_scheme": "never"},
                    "decoder": None, "normalizer": None}, False),
    # Metaspace only in the decoder: no pre-tokenizer adds the prefix
    "metaspace_decoder_only": (_spec(pre_tokenizer=pre.WhitespaceSplit(),
                                     decoder=decoders.Metaspace()), False),
    # llama 2: Prepend + Replace normaliser, Replace / ByteFallback / Fuse / Strip decoder
    "llama": (_spec(normalizer=normalizers.Sequence([normalizers.Prepend(S),
                                                     normalizers.Replace(" ", S)]),
                    decoder=decoders.Sequence([decoders.Replace(S, " "), decoders.ByteFallback(),
                                               decoders.Fuse(), decoders.Strip(" ", 1, 0)])), True),
    # a lone Replace normaliser spelling spaces as the metaspace: no prefix
    "replace_normalizer": (_spec(normalizer=normalizers.Replace(" ", S)), False),
    # a lone Replace decoder turning the metaspace back into spaces: no prefix
    "replace_decoder": (_spec(decoder=decoders.Replace(S, " ")), False),
    # a lone Prepend normaliser: the dummy prefix
    "prepend_normalizer": (_spec(normalizer=normalizers.Prepend(S)), True),
}


@pytest.mark.parametrize("case", sorted(SPIECE_CASES))
def test_detect_family_sentencepiece(case: str) -> None:
    """Metaspace, or a Replace / Prepend involving U+2581, means SentencePiece style; the dummy
    prefix comes from a Metaspace pre-tokenizer (unless its scheme is "never" or its old
    add_prefix_space is false) or from a Prepend normaliser."""
    spec, dummy = SPIECE_CASES[case]
    got = _detect_family(spec)
    assert got == ("sentencepiece", dummy)
    assert type(got[1]) is bool


PLAIN_CASES: dict[str, dict[str, Any]] = {
    "bert": _spec(normalizer=normalizers.BertNormalizer(), pre_tokenizer=pre.BertPreTokenizer(),
                  decoder=decoders.WordPiece()),
    # a Replace without U+2581 is not a SentencePiece marker
    "replace_plain": _spec(normalizer=normalizers.Replace("``", '"'),
                           decoder=decoders.Replace("_", " ")),
    # a Prepend of something else
    "prepend_plain": _spec(normalizer=normalizers.Prepend("X"), pre_tokenizer=pre.Whitespace()),
    # U+2581 in a component that is neither Replace nor Prepend
    "strip_metaspace": _spec(decoder=decoders.Strip(S, 1, 0)),
    "nothing": _spec(),
    "empty_dict": {},
}


@pytest.mark.parametrize("case", sorted(PLAIN_CASES))
def test_detect_family_plain(case: str) -> None:
    """Neither ByteLevel nor a SentencePiece marker: plain (pieces are their UTF-8 text)."""
    assert _detect_family(PLAIN_CASES[case]) == ("plain", False)


# ---------------------------------------------------------------- _piece_bytes


@pytest.mark.parametrize(("piece", "expected"), [
    ("a", b"a"),
    ("\u0120a", b" a"),                  # Ġ = space
    ("\u010a", b"\n"),                   # Ċ = newline
    ("\u0100", b"\x00"),                 # Ā = byte 0
    ("\u00c3\u00a9", "é".encode()),      # Ã© = C3 A9
    ("\u00e2\u0124\u00ac", "€".encode()),  # âĤ¬ = E2 82 AC
    ("€", "€".encode()),                 # outside the byte alphabet: taken literally (UTF-8)
    ("x€", "x€".encode()),
])
def test_piece_bytes_byte_level(piece: str, expected: bytes) -> None:
    """GPT-2 stand-in characters map to their bytes; a piece outside that alphabet is its
    UTF-8; a byte-level piece is never a byte-fallback piece."""
    assert _piece_bytes(piece, "byte_level") == (expected, False)


@pytest.mark.parametrize(("piece", "expected"), [
    ("<0x41>", (b"A", True)),
    ("<0x0A>", (b"\n", True)),
    ("<0x00>", (b"\x00", True)),
    ("<0xE3>", (b"\xe3", True)),
    ("<0xff>", (b"\xff", True)),
    ("<0x10>", (b"\x10", True)),
    (S + "hello", (b" hello", False)),
    (S, (b" ", False)),
    (S + "a" + S, (b" a ", False)),
    ("é", ("é".encode(), False)),
    ("<0xZZ>", (b"<0xZZ>", False)),      # not hex: literal
    ("<0x4>", (b"<0x4>", False)),        # too short: literal
    ("<0x41>>", (b"<0x41>>", False)),    # too long: literal
    ("<0x41)", (b"<0x41)", False)),      # wrong closing bracket: literal
    ("(0x41>", (b"(0x41>", False)),      # wrong opening: literal
    ("<face>", (b"<face>", False)),      # hex inside, but no "<0x"
    ("decade", (b"decade", False)),      # six characters, hex at [3:5]
    ("<0X41>", (b"<0X41>", False)),      # SentencePiece writes a lower-case x
])
def test_piece_bytes_sentencepiece(piece: str, expected: tuple[bytes, bool]) -> None:
    """``<0xNN>`` (exactly) is the byte NN in hex and a byte-fallback piece; ``▁`` is a space;
    anything else is its UTF-8 text."""
    assert _piece_bytes(piece, "sentencepiece") == expected


@pytest.mark.parametrize("piece", [S + "a", "<0x41>", "##ing", "é"])
def test_piece_bytes_plain(piece: str) -> None:
    """A plain (e.g. WordPiece) piece is its literal UTF-8: ``▁`` and ``<0x41>`` included."""
    assert _piece_bytes(piece, "plain") == (piece.encode("utf-8"), False)


# ---------------------------------------------------------------- _component_spec


def test_component_spec_reads_the_three_components() -> None:
    """Exactly the normaliser, pre-tokenizer and decoder JSON, None where one is missing."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
    assert _component_spec(tok) == {
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "decoder": None,
    }
    tok.normalizer = None
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    assert _component_spec(tok) == {
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "decoder": {"type": "Metaspace", "replacement": S, "prepend_scheme": "never", "split": True},
    }


# ---------------------------------------------------------------- byteify

BL_VOCAB = {
    "!": 0, "a": 1, "\u0120": 2, "\u0120a": 3, "\u00c3\u00a9": 4, "\u010a": 5,
    "€": 6, "\u00e2\u0124\u00ac": 7,
}


def _byte_level_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab=BL_VOCAB, merges=[]))
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])                                       # id 8
    tok.add_tokens([AddedToken("x" + S + "y", normalized=True, special=False)])     # id 9
    return tok


def test_byteify_byte_level() -> None:
    """GPT-2 style BPE: every stand-in character is one byte; added tokens are their UTF-8
    content (a ``▁`` in a normalised added token stays ``▁``: only SentencePiece spells a space
    so); the special token is marked; nothing is byte fallback; a bare Tokenizer is named
    "tokenizer"."""
    tb = byteify(_byte_level_tokenizer())
    assert tb.family == "byte_level"
    assert tb.dummy_prefix is False
    assert tb.name == "tokenizer"
    assert tb.table == [b"!", b"a", b" ", b" a", "é".encode(), b"\n", "€".encode(), "€".encode(),
                        b"<|endoftext|>", "x\u2581y".encode()]
    assert tb.special.dtype == np.bool_ and tb.fallback.dtype == np.bool_
    assert tb.special.tolist() == [False] * 8 + [True, False]
    assert tb.fallback.tolist() == [False] * 10
    # the two spellings of "€" are twins; among regular pieces the lowest id wins
    assert tb.twins == {"€".encode(): [6, 7]}
    assert tb.preferred["€".encode()] == 6
    assert b"<|endoftext|>" not in tb.preferred
    assert tb.preferred["x\u2581y".encode()] == 9
    assert len(tb.preferred) == 8


LLAMA_VOCAB = {
    "<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0x61>": 4, "<0xE3>": 5,
    S: 6, "a": 7, S + "a": 8, "b": 9, S + "b": 10,
}


def _llama_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab=LLAMA_VOCAB, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(S), normalizers.Replace(" ", S)])
    tok.decoder = decoders.Sequence([decoders.Replace(S, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])                                  # ids 0-2
    tok.add_tokens([AddedToken(S + "x", normalized=True, special=False),              # id 11
                    AddedToken(S + "y", normalized=False, special=False)])            # id 12
    return tok


def test_byteify_sentencepiece_byte_fallback() -> None:
    """llama-style BPE: ``<0xNN>`` pieces are byte-fallback bytes, ``▁`` is a space, the
    dummy prefix is detected; a normalised added token's ``▁`` is a space (it matches
    normalised text) but a non-normalised one keeps its ``▁``; the regular "a" is preferred
    over its lower-id byte-fallback twin "<0x61>"."""
    tok = PreTrainedTokenizerFast(tokenizer_object=_llama_tokenizer(), name_or_path="org/llama-mini")
    tb = byteify(tok)
    assert tb.family == "sentencepiece"
    assert tb.dummy_prefix is True
    assert tb.name == "org/llama-mini"
    assert tb.table == [b"<unk>", b"<s>", b"</s>", b"\n", b"a", b"\xe3", b" ", b"a", b" a", b"b",
                        b" b", b" x", "\u2581y".encode()]
    assert tb.special.tolist() == [True, True, True] + [False] * 10
    assert tb.fallback.tolist() == [False] * 3 + [True] * 3 + [False] * 7
    assert tb.fallback.dtype == np.bool_
    assert tb.twins == {b"a": [4, 7]}
    assert tb.preferred[b"a"] == 7
    assert tb.preferred[b"\n"] == 3 and tb.preferred[b"\xe3"] == 5
    assert tb.preferred[b" x"] == 11 and tb.preferred["\u2581y".encode()] == 12
    assert b"<s>" not in tb.preferred
    assert len(tb.preferred) == 9
    assert byteify(tok, name="llama").name == "llama"


def test_byteify_preferred_among_three_twins() -> None:
    """Three ids spelling one byte: the regular piece beats both fallback twins, whatever
    the order; twins lists all three, in id order."""
    vocab = {"<unk>": 0, "<0x62>": 1, "b": 2, "c": 3}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre.Metaspace(prepend_scheme="never")
    tok.add_tokens([AddedToken("b", normalized=False, special=False)])  # reuses id 2
    tok.add_tokens([AddedToken("cc", normalized=False, special=False)])  # id 4
    tb = byteify(tok)
    assert tb.family == "sentencepiece" and tb.dummy_prefix is False
    assert tb.table == [b"<unk>", b"b", b"b", b"c", b"cc"]
    assert tb.twins == {b"b": [1, 2]}
    assert tb.preferred == {b"<unk>": 0, b"b": 2, b"c": 3, b"cc": 4}


def test_byteify_fallback_twins_prefer_lowest_id() -> None:
    """Among byte-fallback twins only (no regular piece), the lowest id wins."""
    vocab = {"<unk>": 0, "<0x41>": 1, "<0x42>": 2, "<0x0A>": 3}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre.Metaspace()
    tb = byteify(tok)
    assert tb.dummy_prefix is True
    assert tb.table == [b"<unk>", b"A", b"B", b"\n"]
    assert tb.fallback.tolist() == [False, True, True, True]
    assert tb.twins == {}
    assert tb.preferred == {b"<unk>": 0, b"A": 1, b"B": 2, b"\n": 3}


def test_byteify_holes_are_empty_and_unpreferred() -> None:
    """Ids the vocabulary skips have empty bytes and take part in neither twins nor
    preferred (two holes are not "twins" of b"")."""
    tok = Tokenizer(models.WordLevel({"a": 0, "c": 2, "e": 4}, unk_token="a"))
    tok.pre_tokenizer = pre.Whitespace()
    tb = byteify(tok, name="holes")
    assert tb.family == "plain" and tb.dummy_prefix is False
    assert tb.name == "holes"
    assert tb.size == 5
    assert tb.table == [b"a", b"", b"c", b"", b"e"]
    assert tb.special.tolist() == [False] * 5
    assert tb.fallback.tolist() == [False] * 5
    assert tb.twins == {}
    assert tb.preferred == {b"a": 0, b"c": 2, b"e": 4}


def test_byteify_single_token_vocab() -> None:
    """A vocabulary of one id (id 0) and no added tokens has size exactly 1."""
    tok = Tokenizer(models.WordLevel({"z": 0}, unk_token="z"))
    tb = byteify(tok)
    assert tb.size == 1
    assert tb.table == [b"z"]
    assert tb.preferred == {b"z": 0}


def test_byteify_only_added_tokens() -> None:
    """An empty model vocabulary with added tokens: the table is just the added tokens."""
    tok = Tokenizer(models.BPE())
    tok.add_special_tokens(["<s>"])
    tok.add_tokens(["hi"])
    tb = byteify(tok)
    assert tb.size == 2
    assert tb.table == [b"<s>", b"hi"]
    assert tb.special.tolist() == [True, False]
    assert tb.preferred == {b"hi": 1}


def test_byteify_empty_tokenizer() -> None:
    """No ids at all: an empty table (size 0), not an error."""
    tb = byteify(Tokenizer(models.BPE()))
    assert tb.size == 0
    assert tb.table == [] and tb.preferred == {} and tb.twins == {}


def test_byteify_wrapper_without_name_or_path() -> None:
    """A transformers tokenizer whose name_or_path is empty is labelled "tokenizer"."""
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))
    assert byteify(tok).name == "tokenizer"


def test_byteify_wordpiece_plain() -> None:
    """WordPiece (BERT): plain family, ``##`` continuation pieces are their literal text."""
    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3},
                                     unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(["[UNK]"])
    tb = byteify(tok)
    assert (tb.family, tb.dummy_prefix) == ("plain", False)
    assert tb.table == [b"[UNK]", b"un", b"##aff", b"##able"]
    assert tb.special.tolist() == [True, False, False, False]


# ---------------------------------------------------------------- drop_unicode_normalizer


def _bl(normalizer: Any) -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if normalizer is not None:
        tok.normalizer = normalizer
    return tok


def test_drop_unicode_normalizer_wrapped_nfc() -> None:
    """Qwen-like: a transformers tokenizer whose byte-level backend NFC-normalises loses the
    normaliser (in place, on the backend) and reports "NFC"; e + U+0301 then stays two
    characters."""
    tok = PreTrainedTokenizerFast(tokenizer_object=_bl(normalizers.NFC()))
    assert tok.backend_tokenizer.normalizer is not None
    assert drop_unicode_normalizer(tok) == "NFC"
    assert tok.backend_tokenizer.normalizer is None
    assert drop_unicode_normalizer(tok) is None  # nothing left to remove


def test_drop_unicode_normalizer_bare_sequence() -> None:
    """A bare Tokenizer with a Sequence of Unicode forms: all removed, reported joined by +."""
    tok = _bl(normalizers.Sequence([normalizers.NFC(), normalizers.NFKD()]))
    assert drop_unicode_normalizer(tok) == "NFC+NFKD"
    assert tok.normalizer is None


@pytest.mark.parametrize("form", ["NFD", "NFKC"])
def test_drop_unicode_normalizer_single_forms(form: str) -> None:
    """Each Unicode form alone is removed and named."""
    tok = _bl(getattr(normalizers, form)())
    assert drop_unicode_normalizer(tok) == form
    assert tok.normalizer is None


@pytest.mark.parametrize("norm", [
    normalizers.Lowercase(),
    normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()]),
    normalizers.Sequence([]),
])
def test_drop_unicode_normalizer_keeps_other_normalizers(norm: Any) -> None:
    """A normaliser that is not purely Unicode forms (lower-casing, a mixed Sequence, an empty
    Sequence) is left in place."""
    tok = _bl(norm)
    before = _state(tok.normalizer)
    assert drop_unicode_normalizer(tok) is None
    assert tok.normalizer is not None and _state(tok.normalizer) == before


def test_drop_unicode_normalizer_no_normalizer() -> None:
    """A byte-level tokenizer without a normaliser: nothing to remove."""
    tok = _bl(None)
    assert drop_unicode_normalizer(tok) is None
    assert tok.normalizer is None


def test_drop_unicode_normalizer_leaves_sentencepiece_alone() -> None:
    """A SentencePiece-style (Metaspace) tokenizer keeps its NFKC normaliser."""
    tok = Tokenizer(models.BPE(vocab={"a": 0, S: 1}, merges=[]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre.Metaspace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert drop_unicode_normalizer(wrapped) is None
    assert _state(tok.normalizer) == {"type": "NFKC"}


def test_drop_unicode_normalizer_leaves_plain_alone() -> None:
    """A plain (WordLevel) tokenizer keeps its NFC normaliser."""
    tok = Tokenizer(models.WordLevel({"a": 0}, unk_token="a"))
    tok.normalizer = normalizers.NFC()
    assert drop_unicode_normalizer(tok) is None
    assert _state(tok.normalizer) == {"type": "NFC"}


def test_byte_coverage_marks_exactly_the_bytes_with_a_single_byte_token() -> None:
    """A byte is covered when a non-special token spells exactly that one byte: multi-byte
    tokens, special tokens and empty pieces cover nothing (SmolLM2's GGUF vocabulary lacks 21
    single bytes, so text with them cannot round-trip)."""
    from align_support import byte_table

    table = byte_table([b"a", b"\xf1", b"ab", b"<s>", b"", b"\x00", b"z"],
                       special=frozenset({3, 6}))
    covered = table.byte_coverage()
    assert covered.dtype == np.bool_ and covered.shape == (256,)
    assert np.flatnonzero(covered).tolist() == [0x00, ord("a"), 0xF1]
