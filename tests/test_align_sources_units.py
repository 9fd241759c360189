"""Unit tests for avokit.align.sources (rank files, the tokenizer cache, ``load_tokenizer``'s
dispatch) and avokit.align.report's ``align_report``: exact values on tiny in-test inputs.

Written against the mutants ``mutmut`` showed surviving (issue 18, item 5). Rank tables are
built here (``bytes -> rank``) and the converted tokenizer is checked against a direct
byte-pair-merge reference (tiktoken's algorithm) written below; files live under ``tmp_path``
and the tokenizer cache under a per-test ``AVOKIT_CACHE``. Nothing touches the network.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import regex
from align_support import time_limit
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

import avokit.align.sources as src
from avokit.align.bytes import byteify
from avokit.align.report import align_report, read_texts
from avokit.align.sources import (
    CL100K_PATTERN,
    LLAMA3_PATTERN,
    O200K_PATTERN,
    QWEN_PATTERN,
    _cached,
    _file_key,
    _from_rank_file,
    _load_tokenizer,
    _pattern_for,
    load_tokenizer,
    ranks_to_fast_tokenizer,
    read_quicktok_vocab,
    read_tiktoken_ranks,
)
from avokit.catalog import TEACHERS
from avokit.errors import AvokitError

# A pre-tokeniser that keeps a space apart from the following word (the default pattern of
# transformers' TikTokenConverter, LLAMA3_PATTERN, glues " the" together).
SPLIT_PATTERN = r"[a-z]+| +|[^a-z ]"

_BYTE_CHARS = bytes_to_unicode()  # GPT-2's byte -> printable character map (byte-level BPE)


def _byte_level(b: bytes) -> str:
    return "".join(_BYTE_CHARS[x] for x in b)


def _ranks(*merged: bytes, reverse_bytes: bool = True) -> dict[bytes, int]:
    """All 256 single bytes (rank ``255 - b`` by default, so an id is never its byte value),
    then ``merged`` in order, ranks 256, 257, ..."""
    ranks = {bytes([b]): (255 - b if reverse_bytes else b) for b in range(256)}
    for m in merged:
        ranks[m] = len(ranks)
    return ranks


def _bpe_reference(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """tiktoken's byte-pair merge: a whole piece in the table is one token; otherwise merge
    the adjacent pair whose concatenation has the lowest rank (leftmost on ties) until none
    is in the table."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        cands = [(ranks.get(parts[i] + parts[i + 1], 1 << 62), i) for i in range(len(parts) - 1)]
        rank, i = min(cands)
        if rank == 1 << 62:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def _encode_reference(ranks: dict[bytes, int], pattern: str, text: str) -> list[int]:
    return [i for piece in regex.findall(pattern, text) for i in _bpe_reference(ranks, piece.encode("utf-8"))]


def _convert(ranks: dict[bytes, int], specials: dict[str, int], pattern: str = SPLIT_PATTERN) -> Any:
    with time_limit(20):
        return ranks_to_fast_tokenizer(ranks, specials, pattern)


# ---------------------------------------------------------------- ranks_to_fast_tokenizer

MERGED = (b"th", b"he", b"the", b" t", b"at", b"c\xc3", b"c\xc3\xa9")
TEXTS = ["the cat sat on the mat", "theme thethe  tathe", "caf\u00e9 \u00e9t\u00e9 12,5!\n\tx",
         "", " the"]


def test_ranks_convert_to_the_ids_and_merges_of_tiktokens_algorithm() -> None:
    """Every rank is the id of its bytes (single bytes deliberately not at their byte value),
    and encoding with the given pre-tokenisation pattern equals a direct byte-pair merge of
    each regex piece: the pattern must be the one given, not the converter's default (which
    would glue " the" into one piece)."""
    ranks = _ranks(*MERGED)
    tok = _convert(ranks, {})
    assert tok.backend_tokenizer.get_vocab(with_added_tokens=False) == {_byte_level(b): i for b, i in ranks.items()}
    assert len(tok) == len(ranks)
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False) == _encode_reference(ranks, SPLIT_PATTERN, text), text
    # " the" is a whole piece under LLAMA3_PATTERN but " " + "the" here
    assert tok.encode("the the", add_special_tokens=False) == [ranks[b"the"], ranks[b" "], ranks[b"the"]]
    llama = _convert(ranks, {}, LLAMA3_PATTERN)
    assert llama.encode("the the", add_special_tokens=False) == _encode_reference(ranks, LLAMA3_PATTERN, "the the")
    assert tok.eos_token is None


def test_specials_land_on_their_ids_with_special_placeholders_in_the_gaps() -> None:
    """Specials given out of order (by id and by name) land exactly on their ids: gaps of
    one and of several ids before and between them are filled with ``<|avokit_unused_N|>``
    placeholders that are special too (skipped when decoding, special in the byte table,
    so no text maps onto them); consecutive ids get no placeholder; all specials are matched
    on raw text (not normalised)."""
    ranks = _ranks(*MERGED)
    base = len(ranks)  # 263
    specials = {"<|z_first|>": base + 2, "<|end|>": base + 6, "<|a_second|>": base + 3,
                "<|endoftext|>": base + 4}
    tok = _convert(ranks, specials)
    want = {base: "<|avokit_unused_263|>", base + 1: "<|avokit_unused_264|>", base + 2: "<|z_first|>",
            base + 3: "<|a_second|>", base + 4: "<|endoftext|>", base + 5: "<|avokit_unused_268|>",
            base + 6: "<|end|>"}
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    assert {i: t.content for i, t in added.items()} == want
    assert all(t.special for t in added.values())
    assert not any(t.normalized for t in added.values())
    assert len(tok) == base + 7
    for name, idx in specials.items():
        assert tok.convert_tokens_to_ids(name) == idx
    text = "the<|a_second|>cat<|end|><|avokit_unused_264|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == [ranks[b"the"], base + 3, ranks[b"c"], ranks[b"at"], base + 6, base + 1]
    assert tok.decode(ids, skip_special_tokens=True) == "thecat"
    tb = byteify(tok)
    assert tb.special.tolist() == [False] * base + [True] * 7
    assert tb.table[base + 5] == b"<|avokit_unused_268|>"


def test_a_special_right_after_the_ranks_and_gaps_of_one_between_specials() -> None:
    """The first free id (the number of ranks) is a valid special id; a gap of exactly one
    id between two specials gets exactly one placeholder."""
    ranks = _ranks()
    tok = _convert(ranks, {"<|b|>": 258, "<|a|>": 256})
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    assert {i: t.content for i, t in added.items()} == {256: "<|a|>", 257: "<|avokit_unused_257|>", 258: "<|b|>"}


def test_a_special_on_a_rank_id_is_rejected_naming_the_lowest() -> None:
    """A special whose id a rank already uses is an error naming that special and its id
    (the lowest colliding one, whatever the dict order)."""
    ranks = _ranks(b"ab")
    with pytest.raises(AvokitError, match="^" + re.escape("special token '<|x|>' id 256 collides with the ranks") + "$"):
        _convert(ranks, {"<|late|>": 300, "<|x|>": 256, "<|y|>": 290})
    with pytest.raises(AvokitError, match="^" + re.escape("special token '<|zero|>' id 0 collides with the ranks") + "$"):
        _convert(ranks, {"<|zero|>": 0})


def test_specials_that_spell_a_rank_token_are_reported_as_misplaced() -> None:
    """A special whose text is already a token keeps that token's id in ``tokenizers``, so
    it cannot land on its own id: the error lists the first three such specials."""
    ranks = _ranks(reverse_bytes=False)
    with pytest.raises(AvokitError, match="^" + re.escape("special tokens landed on wrong ids: ['a', 'b', 'c']") + "$"):
        _convert(ranks, {"a": 256, "b": 257, "c": 258, "d": 259})


def test_eos_is_endoftext_else_end_else_none() -> None:
    """``<|endoftext|>`` is the end-of-sequence token when present (also next to
    ``<|end|>``), else ``<|end|>``, else there is none."""
    ranks = _ranks()
    both = _convert(ranks, {"<|end|>": 256, "<|endoftext|>": 257})
    assert both.eos_token == "<|endoftext|>" and both.eos_token_id == 257
    end = _convert(ranks, {"<|start|>": 256, "<|end|>": 257})
    assert end.eos_token == "<|end|>" and end.eos_token_id == 257
    only_eot = _convert(ranks, {"<|endoftext|>": 256})
    assert only_eot.eos_token == "<|endoftext|>" and only_eot.eos_token_id == 256
    neither = _convert(ranks, {"<|im_start|>": 256})
    assert neither.eos_token is None and neither.eos_token_id is None


# ---------------------------------------------------------------- _pattern_for


@pytest.mark.parametrize(("stem", "pattern"), [
    ("qwen", QWEN_PATTERN), ("Qwen3", QWEN_PATTERN), ("my-QWEN-o200k", QWEN_PATTERN),
    ("o200k_base", O200K_PATTERN), ("O200K", O200K_PATTERN), ("o200k_llama3", O200K_PATTERN),
    ("llama3", LLAMA3_PATTERN), ("Meta-LLAMA3-8B", LLAMA3_PATTERN),
    ("cl100k_base", CL100K_PATTERN), ("tiny", CL100K_PATTERN), ("llama2", CL100K_PATTERN),
])
def test_pattern_for_judges_the_file_name_case_insensitively(stem: str, pattern: str) -> None:
    """qwen, then o200k, then llama3 anywhere in the name (any case) pick their regex;
    anything else is cl100k's."""
    assert _pattern_for(stem) is pattern


# ---------------------------------------------------------------- rank file readers


def _tiktoken_text(ranks: dict[bytes, int]) -> str:
    return "".join(f"{base64.b64encode(b).decode()} {i}\n" for b, i in ranks.items())


def test_read_tiktoken_ranks_skips_blank_lines_anywhere(tmp_path: Path) -> None:
    """Blank (also whitespace-only) lines are skipped, not the end of the file; a gzipped
    file reads the same."""
    path = tmp_path / "a.tiktoken"
    path.write_text("QQ== 5\n\n   \nQkM= 7\n\nww== 9\n")
    want = {b"A": 5, b"BC": 7, b"\xc3": 9}
    assert read_tiktoken_ranks(path) == want
    gz = tmp_path / "a.tiktoken.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_tiktoken_ranks(gz) == want


def test_read_tiktoken_ranks_reads_bytes_not_text(tmp_path: Path) -> None:
    """The file is read as bytes: a stray non-UTF-8 byte is a malformed line (AvokitError
    naming the line), and a lone carriage return does not split a line."""
    path = tmp_path / "b.tiktoken"
    path.write_bytes(b"QQ== 5\nQg== 6\xff\n")
    with pytest.raises(AvokitError, match="^" + re.escape(f"{path}: line 2 is not 'base64 rank': ")):
        read_tiktoken_ranks(path)
    path.write_bytes(b"QQ== 5\rQg== 6\n")
    with pytest.raises(AvokitError, match="^" + re.escape(f"{path}: line 1 is not 'base64 rank': ")):
        read_tiktoken_ranks(path)


def _quicktok(entries: list[tuple[bytes, int]], count: int | None = None) -> bytes:
    body = b"".join(struct.pack("<H", len(b)) + b + struct.pack("<I", i) for b, i in entries)
    return struct.pack("<I", len(entries) if count is None else count) + body


def _quicktok_special(entries: list[tuple[str, int]]) -> bytes:
    body = b"".join(struct.pack("<IH", i, len(s.encode())) + s.encode() for s, i in entries)
    return struct.pack("<I", len(entries)) + body


def test_read_quicktok_vocab_reads_unsigned_lengths_and_ids(tmp_path: Path) -> None:
    """u16 lengths of 32768+ bytes and u32 ids of 2**31+ are unsigned (a signed read makes
    them negative)."""
    long = b"x" * 40_000
    path = tmp_path / "a.vocab"
    path.write_bytes(_quicktok([(b"a", 0), (long, 2**31 + 5), (b"\xff\xfe", 7)]))
    assert read_quicktok_vocab(path) == {b"a": 0, long: 2**31 + 5, b"\xff\xfe": 7}


def test_read_quicktok_vocab_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    """A count past the entries present (also 2**31, which a signed read takes as negative,
    i.e. no entries) is "not a quicktok .vocab file"; bytes after the last entry are counted
    in the message."""
    path = tmp_path / "b.vocab"
    for data in (_quicktok([(b"a", 1)], count=2), _quicktok([], count=2**31), _quicktok([(b"a", 1)], count=2**31)):
        path.write_bytes(data)
        with pytest.raises(AvokitError, match="^" + re.escape(f"{path}: not a quicktok .vocab file (")):
            read_quicktok_vocab(path)
    path.write_bytes(_quicktok([(b"ab", 3)]) + b"xyz")
    with pytest.raises(AvokitError, match="^" + re.escape(f"{path}: 3 trailing bytes after 1 entries") + "$"):
        read_quicktok_vocab(path)


# ---------------------------------------------------------------- _cached / _file_key


def _tiny_fast(extra: str = "ab") -> PreTrainedTokenizerFast:
    vocab = {"a": 0, "b": 1, extra: 2, "<unk>": 3}
    tk = Tokenizer(models.BPE(vocab, [(extra[0], extra[1:])], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh AVOKIT_CACHE; returns its ``tokenizers`` folder."""
    monkeypatch.setenv("AVOKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenizers"


def test_cached_builds_once_then_reads_the_saved_tokenizer(cache: Path) -> None:
    """The first call builds and saves under the key; the second reads ``tokenizer.json``
    back without building again, and leaves no temporary folder behind."""
    built: list[int] = []

    def build() -> PreTrainedTokenizerFast:
        built.append(1)
        return _tiny_fast()

    first = _cached("k1", build)
    second = _cached("k1", build)
    assert built == [1]
    assert first("ab a")["input_ids"] == second("ab a")["input_ids"] == [2, 0]
    assert sorted(p.name for p in cache.iterdir()) == ["k1"]
    assert (cache / "k1" / "tokenizer.json").is_file()


def test_cached_keeps_the_copy_of_a_process_that_finished_first(cache: Path) -> None:
    """When another process saved the key while this one was building, its copy is loaded
    and this process's temporary folder is removed."""

    def build() -> PreTrainedTokenizerFast:
        _tiny_fast("ba").save_pretrained(cache / "k2")  # the other process finishes first
        return _tiny_fast("ab")

    tok = _cached("k2", build)
    assert tok.convert_ids_to_tokens([2]) == ["ba"]
    assert sorted(p.name for p in cache.iterdir()) == ["k2"]


def test_cached_threads_loading_one_key_at_once_each_get_it(cache: Path) -> None:
    """Threads of one process converting the same key at once (each in a temporary folder
    of its own) all load the tokenizer; one copy stays, no temporary folder is left."""
    import threading

    barrier = threading.Barrier(4)

    def build() -> PreTrainedTokenizerFast:
        barrier.wait(timeout=30)  # every thread has missed the cache before any saves
        return _tiny_fast()

    got: list[list[int]] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            got.append(_cached("k3", build)("ab a")["input_ids"])
        except BaseException as err:  # reported below, with the others
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and got == [[2, 0]] * 4
    assert sorted(p.name for p in cache.iterdir()) == ["k3"]


def test_cached_recreates_a_cache_folder_cleared_while_building(cache: Path) -> None:
    """The cache may be cleared (``rm -rf`` of AVOKIT_CACHE) during a long conversion: the
    save recreates the missing parent folders instead of failing."""

    def build() -> PreTrainedTokenizerFast:
        shutil.rmtree(cache.parent)
        return _tiny_fast()

    tok = _cached("k4", build)
    assert tok("ab a")["input_ids"] == [2, 0]
    assert sorted(p.name for p in cache.iterdir()) == ["k4"]


def test_cached_saves_into_a_temporary_folder_named_after_the_key_beside_it(cache: Path) -> None:
    """The tokenizer is saved into ``<key>.tmp*`` in the cache folder itself: on the same
    file system as the target, so the final rename is one atomic step (a folder under the
    system temp dir may sit on another device, where rename fails), and a folder left by a
    killed process says which key it was for."""
    saved_to: list[Path] = []
    tok = _tiny_fast()
    real_save = tok.save_pretrained

    def save_pretrained(path: Any, **kwargs: Any) -> Any:
        saved_to.append(Path(path))
        return real_save(path, **kwargs)

    tok.save_pretrained = save_pretrained  # type: ignore[method-assign]
    got = _cached("k5", lambda: tok)
    assert got("ab a")["input_ids"] == [2, 0]
    assert len(saved_to) == 1
    assert saved_to[0].parent == cache
    assert saved_to[0].name.startswith("k5.tmp") and saved_to[0].name != "k5.tmp"


def test_cached_a_temporary_folder_that_cannot_be_removed_does_not_fail_the_load(cache: Path) -> None:
    """Another process finished first and this one's temporary folder is already gone
    (so the rename fails and so would its removal): cleanup is best effort, the copy in
    place is loaded."""
    tok = _tiny_fast("ab")

    def save_pretrained(path: Any, **kwargs: Any) -> Any:
        _tiny_fast("ba").save_pretrained(cache / "k6")  # the other process finishes first
        shutil.rmtree(path)  # and this one's folder is removed (say, a cache cleaner)
        return ()

    tok.save_pretrained = save_pretrained  # type: ignore[method-assign]
    got = _cached("k6", lambda: tok)
    assert got.convert_ids_to_tokens([2]) == ["ba"]
    assert sorted(p.name for p in cache.iterdir()) == ["k6"]


# ---------------------------------------------------------------- read_texts


def _latin1_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make text files opened without an encoding decode as Latin-1 (a non-UTF-8 locale)."""
    real = io.text_encoding

    def text_encoding(encoding: str | None, stacklevel: int = 2) -> str:
        return "latin-1" if encoding is None else real(encoding, stacklevel)

    monkeypatch.setattr(io, "text_encoding", text_encoding)


@pytest.mark.parametrize(("name", "content"), [
    ("d.txt", "caf\u00e9 \u20ac"),
    ("d.jsonl", json.dumps({"text": "caf\u00e9 \u20ac"}, ensure_ascii=False) + "\n"),
])
def test_read_texts_decodes_utf8_whatever_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     name: str, content: str) -> None:
    """Documents are UTF-8 files: read as UTF-8 also under a Latin-1 locale (which would
    turn "\u00e9" into two characters and change every byte offset)."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    _latin1_locale(monkeypatch)
    assert read_texts(path) == ["caf\u00e9 \u20ac"]


def test_cl100k_pattern_splits_digit_runs_in_threes_as_tiktoken_does() -> None:
    """cl100k's pre-tokenizer cuts a run of digits into pieces of at most three (a possessive
    "{1,3}+" read by Oniguruma as "repeat the group" made the whole run one piece, so "1234"
    became one token no tiktoken encoding has)."""
    ranks = _ranks(b"12", b"123", b"1234", b"45")
    tok = ranks_to_fast_tokenizer(ranks, {}, CL100K_PATTERN)
    for text in ("1234", "12345", "x 1234567 y"):
        want = _encode_reference(ranks, CL100K_PATTERN, text)
        assert tok.encode(text, add_special_tokens=False) == want, text
    assert tok.encode("12345", add_special_tokens=False) == [ranks[b"123"], ranks[b"45"]]


def test_file_key_is_a_safe_name_plus_12_hex_digits_of_location_size_and_mtime(tmp_path: Path) -> None:
    """Characters outside ``[A-Za-z0-9_.-]`` become one ``_`` each (letters of both cases,
    digits, ``_``, ``.``, ``-`` stay); the digest part is 12 hex digits that change with
    the size, the mtime and the folder, not with the content alone."""
    path = tmp_path / "My Ranks\u00e9+v2_x-Y.tiktoken"
    path.write_bytes(b"abc")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    key = _file_key(path)
    m = re.fullmatch(r"(.*)-([0-9a-f]+)", key)
    assert m is not None
    assert m.group(1) == "My_Ranks__v2_x-Y.tiktoken"
    assert len(m.group(2)) == 12
    assert _file_key(path) == key
    path.write_bytes(b"xyz")  # same size, same mtime: same key
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert _file_key(path) == key
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    assert _file_key(path) != key
    path.write_bytes(b"abcd")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert _file_key(path) != key
    other = tmp_path / "sub" / path.name
    other.parent.mkdir()
    other.write_bytes(b"abc")
    os.utime(other, ns=(1_000_000_000, 1_000_000_000))
    assert _file_key(other).startswith("My_Ranks__v2_x-Y.tiktoken-") and _file_key(other) != key


# ---------------------------------------------------------------- _from_rank_file


def test_quicktok_vocab_takes_its_sibling_specials_else_the_harmony_ones(tmp_path: Path, cache: Path) -> None:
    """``NAME.vocab`` uses ``NAME.special``; an empty one (quicktok's o200k) falls back to
    ``NAME_harmony.special``; with neither there are no specials. The cache folder is
    ``<file key>-<8 hex digits>``."""
    ranks = _ranks(b"th", b"the")
    vocab = tmp_path / "tiny.v1.vocab"
    vocab.write_bytes(_quicktok(list(ranks.items())))
    plain = _from_rank_file(vocab)
    assert len(plain) == len(ranks) and plain.backend_tokenizer.get_added_tokens_decoder() == {}
    (tmp_path / "tiny.special").write_bytes(_quicktok_special([("<|endoftext|>", 258)]))
    (tmp_path / "tiny_harmony.special").write_bytes(_quicktok_special([("<|end|>", 259)]))
    sib = _from_rank_file(vocab)
    assert sib.convert_tokens_to_ids("<|endoftext|>") == 258 and len(sib) == 259
    (tmp_path / "tiny.special").write_bytes(b"")
    harmony = _from_rank_file(vocab)
    assert harmony.convert_tokens_to_ids("<|end|>") == 259 and len(harmony) == 260
    assert harmony.eos_token == "<|end|>"
    assert harmony.encode("the", add_special_tokens=False) == [ranks[b"the"]]
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 3
    for name in names:
        assert re.fullmatch(re.escape(_file_key(vocab)) + r"-[0-9a-f]{8}", name), name


def test_given_specials_override_siblings_and_key_the_cache(tmp_path: Path, cache: Path) -> None:
    """Specials given by the caller are used instead of sibling files, and the same file
    with other specials is another cache entry (not the first conversion read back)."""
    ranks = _ranks(b"th")
    tik = tmp_path / "qwen-tiny.tiktoken"
    tik.write_text(_tiktoken_text(ranks))
    a = _from_rank_file(tik, {"<|a|>": 257})
    b = _from_rank_file(tik, {"<|b|>": 257})
    assert a.convert_ids_to_tokens([257]) == ["<|a|>"]
    assert b.convert_ids_to_tokens([257]) == ["<|b|>"]
    none = _from_rank_file(tik)
    assert len(none) == 257
    assert len(list(cache.iterdir())) == 3


def test_rank_file_pattern_comes_from_the_name_before_the_first_dot(tmp_path: Path, cache: Path) -> None:
    """The stem (up to the first dot) picks the regex: ``o200k.x.tiktoken`` splits like
    o200k ("HelloWorld" is two pieces), ``x.o200k.tiktoken`` like cl100k (one piece, so the
    "oW" merge applies), ``qwen.tiktoken`` like Qwen (digits one by one)."""
    ranks = _ranks(b"oW", b"Wo", b"12", b"123")
    text = "HelloWorld 123"
    want = {p: _encode_reference(ranks, p, text) for p in (O200K_PATTERN, CL100K_PATTERN, QWEN_PATTERN)}
    assert len({tuple(v) for v in want.values()}) == 3  # the three patterns tell apart here
    for name, pattern in (("o200k.x.tiktoken", O200K_PATTERN), ("x.o200k.tiktoken", CL100K_PATTERN),
                          ("qwen.tiktoken", QWEN_PATTERN)):
        path = tmp_path / name
        path.write_text(_tiktoken_text(ranks))
        assert _from_rank_file(path).encode(text, add_special_tokens=False) == want[pattern], name


# ---------------------------------------------------------------- load_tokenizer


def test_load_tokenizer_sets_hf_offline_only_where_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading sets ``HF_HUB_OFFLINE=1`` (nothing may reach the hub) unless the user set it."""
    _tiny_fast().backend_tokenizer.save(str(tmp_path / "t.json"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("hf_hub_offline", raising=False)
    _load_tokenizer(tmp_path / "t.json")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "hf_hub_offline" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    _load_tokenizer(tmp_path / "t.json")
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_load_tokenizer_dispatches_encoding_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundled encoding names match case-insensitively (``Qwen3``, ``GPT-OSS``)."""
    monkeypatch.setattr(src, "_qwen", lambda: "qwen-tokenizer")
    monkeypatch.setattr(src, "_o200k", lambda: "o200k-tokenizer")
    for name in ("qwen", "Qwen3", "QWEN2.5", "qwen2"):
        assert _load_tokenizer(name) == "qwen-tokenizer", name
    for name in ("o200k", "O200K_Harmony", "GPT-OSS", "harmony"):
        assert _load_tokenizer(name) == "o200k-tokenizer", name


def test_load_tokenizer_folders_with_either_tokenizer_file(tmp_path: Path) -> None:
    """A folder loads with only ``tokenizer.json`` (no config) and with only
    ``tokenizer_config.json`` (plus GPT-2 style vocab.json/merges.txt)."""
    only_json = tmp_path / "only_json"
    only_json.mkdir()
    _tiny_fast().backend_tokenizer.save(str(only_json / "tokenizer.json"))
    assert _load_tokenizer(only_json)("ab a")["input_ids"] == [2, 0]
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    vocab = {_byte_level(bytes([b])): b for b in range(256)} | {"ab": 256}
    (only_config / "vocab.json").write_text(json.dumps(vocab))
    (only_config / "merges.txt").write_text("#version: 0.2\na b\n")
    (only_config / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    assert _load_tokenizer(only_config)("ab a")["input_ids"] == [256, 32, 97]


def test_load_tokenizer_error_messages(tmp_path: Path) -> None:
    """A folder without tokenizer files says how many .gguf files it holds; a broken JSON
    file and an unknown spec name the path / spec and what is accepted."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AvokitError, match="^" + re.escape(
            f"tokenizer directory {empty} has no tokenizer.json and 0 .gguf files") + "$"):
        _load_tokenizer(empty)
    (empty / "a.gguf").write_bytes(b"GGUF")
    (empty / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(AvokitError, match="^" + re.escape(
            f"tokenizer directory {empty} has no tokenizer.json and 2 .gguf files") + "$"):
        _load_tokenizer(empty)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AvokitError, match="^" + re.escape(f"{bad} is not a tokenizers JSON file: ")):
        _load_tokenizer(bad)
    assert len(TEACHERS) >= 2
    want = (f"tokenizer 'nope' not found: give a registry name ({', '.join(sorted(TEACHERS))}), "
            "'qwen3', 'o200k', a model directory, or a .gguf/.json/.tiktoken/.vocab file")
    with pytest.raises(AvokitError, match="^" + re.escape(want) + "$"):
        _load_tokenizer("nope")


def test_load_tokenizer_reads_gzipped_tiktoken_files(tmp_path: Path, cache: Path) -> None:
    """``.tiktoken.gz`` is a rank file like ``.tiktoken`` (not an unknown kind)."""
    ranks = _ranks(b"th", b"the")
    gz = tmp_path / "tiny.tiktoken.gz"
    gz.write_bytes(gzip.compress(_tiktoken_text(ranks).encode()))
    tok = _load_tokenizer(gz)
    assert tok.encode("the th", add_special_tokens=False) == _encode_reference(ranks, CL100K_PATTERN, "the th")


def test_load_tokenizer_drops_a_unicode_normaliser(tmp_path: Path) -> None:
    """A byte-level BPE's NFKC normaliser is removed (tokens must spell the document's own
    bytes): "ﬁ" (U+FB01) stays its 3 UTF-8 bytes instead of becoming "fi"."""
    ranks = _ranks(b"fi", reverse_bytes=False)
    tok = _convert(ranks, {})
    tok.backend_tokenizer.normalizer = normalizers.NFKC()
    path = tmp_path / "nfkc.json"
    tok.backend_tokenizer.save(str(path))
    assert _load_tokenizer(path)("\ufb01", add_special_tokens=False)["input_ids"] == [256]
    loaded = load_tokenizer(path)
    assert loaded.backend_tokenizer.normalizer is None
    assert loaded("\ufb01", add_special_tokens=False)["input_ids"] == list("\ufb01".encode())


# ---------------------------------------------------------------- align_report


def _report_pair() -> tuple[Any, Any]:
    """Teacher: bytes + "ab" + <|endoftext|> (eos by spelling). Student: bytes + "bc" + a
    ``<stop>`` special that is eos only because the tokenizer object declares it."""
    teacher = _convert(_ranks(b"ab", reverse_bytes=False), {"<|endoftext|>": 257})
    student_backend = _convert(_ranks(b"bc", reverse_bytes=False), {"<stop>": 257}).backend_tokenizer
    student = PreTrainedTokenizerFast(tokenizer_object=student_backend, eos_token="<stop>")
    return teacher, student


def test_align_report_exact_counts_shares_and_roles() -> None:
    """By hand: teacher "ab|c" and "ab| |ab", student "a|bc" and "a|b| |a|b": 8 bytes, 5
    and 7 tokens, common ends {3} and {2, 3, 5} so 4 chunks of 3, 2, 1, 2 bytes. The eos
    role pairs the teacher's <|endoftext|> with the student's declared eos (only found
    through the student tokenizer object), which also maps that id."""
    teacher, student = _report_pair()
    rep = align_report(teacher, student, ["abc", "ab ab"], "T", "S")
    assert (rep.n_docs, rep.n_bytes, rep.n_chunks) == (2, 8, 4)
    assert (rep.teacher.name, rep.student.name) == ("T", "S")
    assert (rep.teacher.n_tokens, rep.student.n_tokens) == (5, 7)
    assert (rep.teacher.vocab_size, rep.student.vocab_size) == (258, 258)
    assert rep.teacher.bytes_per_token == pytest.approx(8 / 5)
    assert rep.student.bytes_per_token == pytest.approx(8 / 7)
    assert rep.teacher.boundary_share == pytest.approx(4 / 5)
    assert rep.student.boundary_share == pytest.approx(4 / 7)
    assert rep.chunk_histogram == {"1": 1, "2": 2, "3-4": 1, "5-8": 0, "9-16": 0, "17-32": 0, "33-64": 0, "65+": 0}
    assert rep.mean_chunk_bytes == pytest.approx(2.0)
    assert rep.roles == {"eos": [257, 257]}
    cov = rep.coverage
    assert cov["vocab_share"] == pytest.approx(257 / 258)  # all but "ab"
    assert cov["regular_share"] == pytest.approx(256 / 257)
    assert cov["count_share"] == pytest.approx(2 / 5)  # "c" and " " map; three "ab" do not
    assert cov["n_tokens"] == 5  # each teacher token counted once
    assert rep.teacher.round_trip_failures == [] and rep.student.round_trip_failures == []
    default = align_report(teacher, student, ["abc"])
    assert (default.teacher.name, default.student.name) == ("teacher", "student")


def test_align_report_of_no_documents_is_all_zeros() -> None:
    """No documents: zero tokens and chunks give 0.0 shares, bytes/token and mean chunk
    length (no division by zero, no NaN from an empty mean)."""
    teacher, student = _report_pair()
    rep = align_report(teacher, student, [])
    assert (rep.n_docs, rep.n_bytes, rep.n_chunks) == (0, 0, 0)
    for s in (rep.teacher, rep.student):
        assert (s.n_tokens, s.bytes_per_token, s.boundary_share) == (0, 0.0, 0.0)
    assert rep.mean_chunk_bytes == 0.0
    assert set(rep.chunk_histogram.values()) == {0}
    assert rep.coverage["count_share"] is None  # no teacher tokens to share



def test_align_report_takes_the_teachers_declared_roles_from_its_tokenizer() -> None:
    """A teacher eos known only through the teacher tokenizer object (``<halt>`` is no known
    spelling) pairs with the student's declared eos and maps by role."""
    backend = _convert(_ranks(b"ab", reverse_bytes=False), {"<halt>": 257}).backend_tokenizer
    teacher = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<halt>")
    _, student = _report_pair()
    rep = align_report(teacher, student, ["abc"])
    assert rep.roles == {"eos": [257, 257]}
    assert rep.coverage["vocab_share"] == pytest.approx(257 / 258)  # all but "ab"
