"""Alignment on real tokenizers: properties over arbitrary Unicode, golden cases, vocab maps."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from avokit.align import TokenBytes, align, build_vocab_map, byteify, tokenize_with_offsets
from avokit.align.sources import load_tokenizer
from avokit.errors import RoundTripError
from avokit.records import TokenizedDoc

REAL = ("gemma3-270m", "smollm2-135m", "qwen2.5-coder-0.5b", "qwen3", "o200k")
SPIECE_SPACE = "\u2581"


def _trained_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False,
    )
    corpus = ["the cat sat on the mat; thinking, singing, ringing the bell " * 5,
              "Numbers 1234567.89 and café naïve 我们今天 👍🏽"]
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def toks() -> dict[str, tuple[Any, TokenBytes]]:
    """Every tokenizer family, loaded with all outgoing connections refused (offline sources)."""
    out: dict[str, tuple[Any, TokenBytes]] = {}
    tried: list[Any] = []

    def refuse(self: socket.socket, address: Any, *args: Any) -> None:
        tried.append(address)
        raise OSError(f"network disabled while loading tokenizers: {address}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        for name in REAL:
            tok = load_tokenizer(name)
            out[name] = (tok, byteify(tok, name))
    assert tried == [], tried
    assert {n: tb.size for n, (_, tb) in out.items()} == {
        "gemma3-270m": 262_144, "smollm2-135m": 49_152, "qwen2.5-coder-0.5b": 151_936,
        "qwen3": 151_646, "o200k": 201_088}
    bpe = _trained_bpe()
    out["bpe"] = (bpe, byteify(bpe, "bpe"))
    return out


def check_alignment(t: TokenizedDoc, s: TokenizedDoc) -> None:
    """Chunks tile the document; every common boundary is a boundary of both; positions agree."""
    al = align(t.byte_ends, s.byte_ends)
    b = al.boundaries
    assert b[0] == 0 and b[-1] == t.n_bytes == s.n_bytes
    assert (np.diff(b) > 0).all()
    assert al.chunk_lengths().sum() == t.n_bytes
    t_set, s_set = set(t.byte_ends.tolist()) | {0}, set(s.byte_ends.tolist()) | {0}
    assert set(b.tolist()) <= (t_set & s_set)
    assert set(b.tolist()) == (t_set & s_set)  # and every shared end is used
    assert (t.starts[al.teacher_pos] == b[:-1]).all()
    assert (s.starts[al.student_pos] == b[:-1]).all()
    for doc, chunk in ((t, al.teacher_chunk), (s, al.student_chunk)):
        assert (b[chunk] <= doc.starts).all() and (doc.byte_ends <= b[chunk + 1]).all()


# Surrogates cannot be UTF-8 encoded; "▁" is SentencePiece's own space (tested separately).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=SPIECE_SPACE),
               max_size=80)
PROP = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("teacher", REAL)
@PROP
@given(text=TEXT)
def test_offsets_round_trip_and_align_with_student(toks: dict, teacher: str, text: str) -> None:
    t_tok, t_tb = toks[teacher]
    s_tok, s_tb = toks["bpe"]
    data = text.encode("utf-8")
    missing = np.flatnonzero(~t_tb.byte_coverage()[np.frombuffer(data, dtype=np.uint8)])
    if missing.size:  # bytes the vocabulary cannot spell: reported at the first one, not hidden
        with pytest.raises(RoundTripError) as err:
            tokenize_with_offsets(t_tok, text, t_tb)
        assert err.value.position == int(missing[0])
        t = tokenize_with_offsets(t_tok, text, t_tb, lossy="offsets")
    else:
        t = tokenize_with_offsets(t_tok, text, t_tb)
        assert b"".join(t_tb.table[i] for i in t.ids.tolist()) == data
    s = tokenize_with_offsets(s_tok, text, s_tb)
    assert b"".join(s_tb.table[i] for i in s.ids.tolist()) == data
    if data and t.ids.size:  # a text made only of unspellable bytes has no tokens to align
        check_alignment(t, s)


@PROP
@given(text=TEXT)
def test_gemma_smollm_alignment(toks: dict, text: str) -> None:
    (gt, gtb), (st_, stb) = toks["gemma3-270m"], toks["smollm2-135m"]
    t = tokenize_with_offsets(gt, text, gtb)
    s = tokenize_with_offsets(st_, text, stb, lossy="offsets")  # SmolLM2 lacks 21 bytes
    if text and s.ids.size:
        check_alignment(t, s)


GOLDEN = {
    "cjk": "我们今天去公园散步。",
    "emoji_skin_tone": "I 👍🏽 it",
    "combining": "cafe\u0301 nai\u0308ve",
    "digits": "1234567.89",
    "tabs_spaces": "\t\tx  y   z",
    "leading_space": " leading",
}


@pytest.mark.parametrize("label", GOLDEN)
def test_golden_cases_align_every_pair(toks: dict, label: str) -> None:
    text = GOLDEN[label]
    docs = {n: tokenize_with_offsets(tok, text, tb) for n, (tok, tb) in toks.items()}
    for a, doc_a in docs.items():
        for b, doc_b in docs.items():
            if a != b:
                check_alignment(doc_a, doc_b)


def test_golden_token_ends(toks: dict) -> None:
    """Hand-checked splits: digits, mid-character emoji splits, whole CJK words."""
    def ends(name: str, text: str) -> list[int]:
        tok, tb = toks[name]
        return tokenize_with_offsets(tok, text, tb).byte_ends.tolist()

    assert ends("o200k", "1234567.89") == [3, 6, 7, 8, 10]  # 123|456|7|.|89
    assert ends("gemma3-270m", "1234567.89") == list(range(1, 11))  # one digit per token
    # 👍🏽 = f09f918d f09f8fbd; o200k ends a token inside the skin-tone modifier
    assert ends("o200k", "👍🏽") == [4, 7, 8]
    assert ends("gemma3-270m", "👍🏽") == [4, 8]
    # Gemma and o200k agree on the skin tone only at the emoji's end
    g, o = (tokenize_with_offsets(*toks[n][:1], "👍🏽", toks[n][1]) for n in ("gemma3-270m", "o200k"))
    assert align(g.byte_ends, o.byte_ends).boundaries.tolist() == [0, 4, 8]
    assert ends("qwen3", "我们今天") == [6, 12]
    assert ends("gemma3-270m", " leading") == [8]  # no dummy prefix added or lost


def test_chat_templated_turn(toks: dict) -> None:
    """Chat markers are one special token for the tokenizer that owns them, text for others."""
    s_tok, s_tb = toks["smollm2-135m"]
    text = s_tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False)
    assert text.startswith("<|im_start|>") and "<|im_start|>user\nHi there<|im_end|>" in text
    docs = {n: tokenize_with_offsets(tok, text, tb) for n, (tok, tb) in toks.items()}
    assert docs["smollm2-135m"].ids[0] == s_tb.preferred.get(b"<|im_start|>", 1)
    assert docs["qwen3"].ids[0] == 151644
    assert len(docs["gemma3-270m"].ids) > len(docs["qwen3"].ids)  # spelled out as text
    check_alignment(docs["qwen3"], docs["smollm2-135m"])
    check_alignment(docs["gemma3-270m"], docs["smollm2-135m"])
    g_tok, g_tb = toks["gemma3-270m"]
    g = tokenize_with_offsets(g_tok, "<start_of_turn>user\nHi<end_of_turn>\n", g_tb)
    assert g.ids[0] == 105 and g.byte_ends[0] == len("<start_of_turn>")


def test_bos_added_by_one_tokenizer_is_dropped(toks: dict) -> None:
    from avokit.align import offsets_from_ids

    g_tok, g_tb = toks["gemma3-270m"]
    ids = g_tok("Hello world")["input_ids"]  # Gemma adds <bos>
    assert ids[0] == 2
    doc = offsets_from_ids(ids, "Hello world", g_tb)
    assert doc.ids.tolist() == ids[1:] and doc.byte_ends[-1] == 11


def test_spiece_space_char_is_reported_then_aligned_by_offsets(toks: dict) -> None:
    """A literal '▁' is indistinguishable from a space after Gemma's normaliser: lossy."""
    g_tok, g_tb = toks["gemma3-270m"]
    text = "ab\u2581cd and more"
    with pytest.raises(RoundTripError) as err:
        tokenize_with_offsets(g_tok, text, g_tb)
    assert err.value.position == 2  # the first byte of '▁' (e2 96 81)
    doc = tokenize_with_offsets(g_tok, text, g_tb, lossy="offsets")
    assert doc.n_bytes == len(text.encode()) and doc.byte_ends[-1] == doc.n_bytes
    s_tok, s_tb = toks["smollm2-135m"]
    al = align(doc.byte_ends, tokenize_with_offsets(s_tok, text, s_tb).byte_ends)
    assert al.boundaries[-1] == doc.n_bytes and al.n_chunks >= 3


def _id(tb: TokenBytes, data: bytes) -> int:
    return tb.preferred[data]


@pytest.mark.parametrize(("teacher", "student"), [
    ("gemma3-270m", "smollm2-135m"), ("smollm2-135m", "gemma3-270m"), ("qwen3", "o200k"),
])
def test_vocab_map_real_pairs(toks: dict, teacher: str, student: str) -> None:
    (t_tok, t_tb), (s_tok, s_tb) = toks[teacher], toks[student]
    vm = build_vocab_map(t_tb, s_tb, t_tok, s_tok)
    assert vm.teacher_to_student.dtype == np.int64 and vm.teacher_to_student.shape == (t_tb.size,)
    for word in (b" the", b"ing"):
        assert s_tb.table[vm.teacher_to_student[_id(t_tb, word)]] == word
    # a lone UTF-8 continuation byte: Gemma's <0x8D> byte-fallback piece, a byte token elsewhere
    byte_id = _id(t_tb, b"\x8d")
    assert s_tb.table[vm.teacher_to_student[byte_id]] == b"\x8d"
    if t_tb.family == "sentencepiece":
        assert t_tb.fallback[byte_id]
        # 'A' has a regular piece and a <0x41> twin: both map to the student's 'A'
        twins = t_tb.twins[b"A"]
        assert len(twins) == 2 and t_tb.preferred[b"A"] == min(twins, key=lambda i: t_tb.fallback[i])
        assert {int(vm.teacher_to_student[i]) for i in twins} == {_id(s_tb, b"A")}
    if s_tb.family == "sentencepiece":  # student twins: the regular piece is chosen
        assert not s_tb.fallback[vm.teacher_to_student[_id(t_tb, b"A")]]
    # every mapped id really has equal bytes (or is a special mapped by role/content)
    mapped = np.flatnonzero(vm.how == 1)
    assert all(t_tb.table[i] == s_tb.table[vm.teacher_to_student[i]] for i in mapped[:5000])
    cov = vm.coverage()
    assert 0 < cov.regular_share <= 1 and cov.count_share is None


def test_special_roles_gemma_smollm(toks: dict) -> None:
    (g_tok, g_tb), (s_tok, s_tb) = toks["gemma3-270m"], toks["smollm2-135m"]
    vm = build_vocab_map(g_tb, s_tb, g_tok, s_tok)
    # SmolLM2 declares <|im_start|> as BOS; documents start after <|endoftext|> (id 0)
    assert vm.roles["bos"] == (2, 0)
    assert vm.roles["turn_start"] == (105, 1) and vm.roles["turn_end"] == (106, 2)
    assert vm.teacher_to_student[105] == 1
    assert vm.map_ids(np.array([[105, 10**7, -1]])).tolist() == [[1, -1, -1]]  # padded logits


# One document per domain the built-in corpus carries, written for this test: Chinese with
# multi-byte characters that byte-level BPEs split across tokens, code with tabs, indentation
# and long runs of spaces, and English prose.
DOMAIN_DOCS = {
    "english": "The old harbor was quiet at dawn; gulls circled the masts while a fisherman "
               "mended his nets, humming a tune nobody else remembered.",
    "code": "def pad(rows: list[str]) -> str:\n\tout = []\n\tfor r in rows:\n"
            "\t\tout.append(r + ' ' * 17)   # trailing spaces matter\n"
            "        return '\\n'.join(out)\n\n\nclass  A :\n    x =    {'k':  1}\n",
    "chinese": "这家店的服务态度非常好，菜品新鲜，价格也合理。不过周末人太多，要排队半小时以上！😀",
}


@pytest.mark.parametrize("teacher", ["gemma3-270m", "smollm2-135m", "qwen2.5-coder-0.5b"])
def test_three_domains_round_trip_and_align_with_a_student(toks: dict, teacher: str) -> None:
    """align-report's view of every registry teacher against a trained student BPE on all three
    domains, built-in corpus documents included: zero byte round-trip failures."""
    from avokit.align.report import align_report
    from avokit.corpus.builtin import builtin_source

    texts = list(DOMAIN_DOCS.values())
    for name in ("lambada-passages", "python-source", "chinese-reviews"):
        source = builtin_source(name).texts()
        texts += [next(source).text[:3000] for _ in range(3)]
    (t_tok, _), (s_tok, _) = toks[teacher], toks["bpe"]
    rep = align_report(t_tok, s_tok, texts, teacher, "student-bpe")
    assert rep.as_dict()["teacher"]["round_trip_failures"] == []
    assert rep.as_dict()["student"]["round_trip_failures"] == []
    for text in texts:
        t = tokenize_with_offsets(t_tok, text, toks[teacher][1])
        s = tokenize_with_offsets(s_tok, text, toks["bpe"][1])
        check_alignment(t, s)


def test_qwen_nfc_normaliser_is_dropped_so_tokens_spell_the_exact_bytes(toks: dict) -> None:
    """Qwen's tokenizer NFC-normalises: with it, "e" + U+0301 came back as "é" (other bytes)."""
    from avokit.align import drop_unicode_normalizer
    from avokit.teachers.registry import registry_tokenizer

    raw = registry_tokenizer("qwen2.5-coder-0.5b")  # as converted, normaliser still there
    text = "cafe\u0301 nai\u0308ve"
    with pytest.raises(RoundTripError, match="at byte 3"):
        tokenize_with_offsets(raw, text, byteify(raw, "qwen-raw"))
    assert drop_unicode_normalizer(raw) == "NFC"
    assert drop_unicode_normalizer(raw) is None  # nothing left to drop
    doc = tokenize_with_offsets(raw, text, byteify(raw, "qwen"))
    assert doc.n_bytes == len(text.encode("utf-8")) and int(doc.byte_ends[-1]) == doc.n_bytes
    gemma, _ = toks["gemma3-270m"]
    assert drop_unicode_normalizer(gemma) is None  # SentencePiece normalisers are kept
