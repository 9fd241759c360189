"""Unit tests for the alignment targets: common boundaries (``align``), byte-conditional
targets (``conditional_targets`` and its slow reference) — exact values computed by hand on
tiny hand-built vocabularies, edge cases and error messages.

Written against the mutants ``mutmut`` showed surviving (issue 18, item 5). The vocabularies
are ``TokenBytes`` built directly (as ``byteify`` would: ``preferred`` holds every regular
token's bytes, special tokens are left out of it), so no tokenizer is loaded.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from avokit.align import TokenBytes
from avokit.align.boundaries import align
from avokit.align.conditional import (
    PrefixIndex,
    _candidates,
    conditional_targets,
    conditional_targets_reference,
)
from avokit.align.spans import common_spans
from avokit.records import TeacherRecords, TokenizedDoc

# ---------------------------------------------------------------- align: input checks


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_align_names_the_side_whose_ends_decrease(which: str) -> None:
    """Two ends that decrease (the shortest such input) are refused, and the message names
    the tokenization at fault, so a user knows which side's offsets are broken."""
    bad, good = np.array([3, 2]), np.array([1, 2])
    args = (bad, good) if which == "teacher" else (good, bad)
    with pytest.raises(ValueError, match="^" + re.escape(f"{which} byte ends must be non-decreasing") + "$"):
        align(*args)


def test_align_checks_unsigned_ends_as_signed_offsets() -> None:
    """uint64 ends (an int array all the same) that decrease are refused: a difference of
    unsigned ends wraps around instead of going negative, so they must be read as int64."""
    with pytest.raises(ValueError, match="^teacher byte ends must be non-decreasing$"):
        align(np.array([3, 2], dtype=np.uint64), np.array([1, 2]))


def test_align_refuses_negative_ends_naming_the_side() -> None:
    """A negative first end is refused with the side's name."""
    with pytest.raises(ValueError, match="^" + re.escape("student byte ends must be >= 0") + "$"):
        align(np.array([2]), np.array([-1, 2]))


@pytest.mark.parametrize(("t_ends", "s_ends"), [([], [3]), ([3], []), ([0, 2], []), ([], [1]), ([1], [])])
def test_align_refuses_one_empty_tokenization(t_ends: list[int], s_ends: list[int]) -> None:
    """One side has tokens over some bytes and the other has none: refused with the message,
    whichever side is empty."""
    with pytest.raises(ValueError, match="^one tokenization is empty and the other is not$"):
        align(np.array(t_ends, dtype=np.int64), np.array(s_ends, dtype=np.int64))


@pytest.mark.parametrize(("t_ends", "s_ends", "message"), [
    ([2, 4], [1, 5], "4 vs 5"),
    ([1, 5], [2, 4], "5 vs 4"),
    ([0], [3], "0 vs 3"),
    ([0, 0], [0, 0, 3], "0 vs 3"),
])
def test_align_reports_the_two_byte_lengths(t_ends: list[int], s_ends: list[int], message: str) -> None:
    """Different byte lengths name both totals (each side's last end, teacher first), also
    when one side is only zero-width tokens (0 bytes) and the other covers bytes."""
    with pytest.raises(ValueError, match="^" + re.escape(
            f"tokenizations cover different byte lengths: {message}") + "$"):
        align(np.array(t_ends), np.array(s_ends))


def test_align_of_single_zero_width_tokens_is_empty() -> None:
    """A 0-byte document spelled by one zero-width token on each side: no chunk, every
    token in chunk 0 (nothing to align, and no index error on one-element arrays)."""
    a = align(np.array([0]), np.array([0]))
    assert a.boundaries.tolist() == [0] and a.n_chunks == 0
    assert a.teacher_chunk.tolist() == [0] and a.student_chunk.tolist() == [0]
    assert a.student_pos.dtype == np.int64 and a.teacher_chunk.dtype == np.int64
    assert a.boundaries.dtype == np.int64  # documented int64 [m+1], also with m == 0


def test_align_a_one_byte_first_token_is_its_own_chunk() -> None:
    """Teacher "a|bc", student "a|b|c": common ends {1, 3}, chunks [0, 1) and [1, 3). The
    first token of each side starts at byte 0, so it lies in chunk 0 (not chunk 1, which
    starts at byte 1); every array is int64 as documented."""
    a = align(np.array([1, 3]), np.array([1, 2, 3]))
    assert a.boundaries.tolist() == [0, 1, 3]
    assert a.teacher_pos.tolist() == [0, 1] and a.student_pos.tolist() == [0, 1]
    assert a.teacher_chunk.tolist() == [0, 1]
    assert a.student_chunk.tolist() == [0, 1, 1]
    for arr in (a.boundaries, a.teacher_pos, a.student_pos, a.teacher_chunk, a.student_chunk):
        assert arr.dtype == np.int64


def test_align_zero_width_tokens_at_both_ends() -> None:
    """Teacher ends [0, 1, 3, 3] and student [0, 1, 2, 3, 3]: each side opens and closes with
    a zero-width token. The shared end 0 is no boundary (chunks are never 0 bytes), so the
    boundaries are [0, 1, 3]; the trailing zero-width token starts at byte 3 (the document's
    end) yet belongs to the last chunk, 1, as there is no chunk 2."""
    a = align(np.array([0, 1, 3, 3]), np.array([0, 1, 2, 3, 3]))
    assert a.boundaries.tolist() == [0, 1, 3] and a.n_chunks == 2
    assert a.teacher_pos.tolist() == [1, 2] and a.student_pos.tolist() == [1, 2]
    assert a.teacher_chunk.tolist() == [0, 0, 1, 1]
    assert a.student_chunk.tolist() == [0, 0, 1, 1, 1]
    assert a.student_pos.dtype == np.int64 and a.student_chunk.dtype == np.int64


# ---------------------------------------------------------------- conditional targets

_TEACHER_TABLE = [b"ab", b"abc", b"cd", b"c", b"a", b"x", b"q"]  # id 7 = len(table): padded logits
_STUDENT_TABLE = [b"a", b"b", b"c", b"d", b"cd", b"x", b"c", b"q"]  # 6: fallback twin of "c"; 7: special


def _token_bytes(name: str, table: list[bytes], special: tuple[int, ...] = (),
                 fallback: tuple[int, ...] = ()) -> TokenBytes:
    """TokenBytes as byteify builds it: twins and preferred over regular tokens only, a
    regular token preferred over its fallback twin."""
    spec = np.zeros(len(table), bool)
    spec[list(special)] = True
    fb = np.zeros(len(table), bool)
    fb[list(fallback)] = True
    twins: dict[bytes, list[int]] = {}
    for i, b in enumerate(table):
        if b and not spec[i]:
            twins.setdefault(b, []).append(i)
    preferred = {b: min(ids, key=lambda i: (bool(fb[i]), i)) for b, ids in twins.items()}
    return TokenBytes(name, "byte_level", list(table), spec, fb,
                      {b: ids for b, ids in twins.items() if len(ids) > 1}, preferred)


def _records(token_ids: list[int], ends: list[int], gold_p: list[float], topk_ids: list[list[int]],
             topk_p: list[list[float]]) -> TeacherRecords:
    """Records with the documented dtypes; probabilities given in linear space (0 -> -inf)."""
    with np.errstate(divide="ignore"):
        gold_lp = np.log(np.array(gold_p, dtype=np.float64)).astype(np.float32)
        topk_lp = np.log(np.array(topk_p, dtype=np.float64)).reshape(len(token_ids), -1).astype(np.float32)
    k = topk_lp.shape[1]
    return TeacherRecords("doc", np.array(token_ids, np.int32), np.array(ends, np.int64), gold_lp,
                          np.array(topk_ids, np.int32).reshape(len(token_ids), k), topk_lp,
                          np.zeros(len(token_ids), np.float32))


def _hand_case() -> tuple[TeacherRecords, TokenBytes, TokenBytes, TokenizedDoc]:
    """Text "abcd": the teacher spells it "ab" + "cd", the student "a" "b" "c" "d".

    Teacher position 0 (token "ab", its gold probability 0: it underflowed): top-k is an id
    past the teacher's table (p .3), "x" (.2), "c" (.1), "q" (.05); the gold "ab" is appended
    with -inf. Position 1 (token "cd"): "cd" (.6), "c" (.2), "q" (.05), "abc" (p = 0).
    """
    records = _records([0, 2], [2, 4], [0.0, 0.6],
                       [[7, 5, 3, 6], [2, 3, 6, 1]], [[0.3, 0.2, 0.1, 0.05], [0.6, 0.2, 0.05, 0.0]])
    teacher = _token_bytes("teacher", _TEACHER_TABLE)
    student = _token_bytes("student", _STUDENT_TABLE, special=(7,), fallback=(6,))
    doc = TokenizedDoc(np.array([0, 1, 2, 3], np.int64), np.array([1, 2, 3, 4], np.int64), 4)
    return records, teacher, student, doc


def test_candidates_append_the_gold_token_or_an_empty_slot() -> None:
    """The gold token joins the top-k where it is missing (with its own log-prob); where the
    top-k holds it, the extra slot is empty: id -1 ("no id", like every unmapped slot) and
    -inf, so no consumer can read a token or any mass there."""
    records, _, _, _ = _hand_case()
    ids, lps = _candidates(records)
    assert ids.dtype == np.int64 and lps.dtype == np.float64
    assert ids.tolist() == [[7, 5, 3, 6, 0], [2, 3, 6, 1, -1]]
    assert lps[0, 4] == -np.inf and lps[1, 4] == -np.inf and lps[1, 3] == -np.inf
    np.testing.assert_allclose(np.exp(lps[:, :3]), [[0.3, 0.2, 0.1], [0.6, 0.2, 0.05]], rtol=1e-6)


def test_conditional_targets_hand_case() -> None:
    """Every rule of the fast path on one document, values by hand.

    Student position 0 (boundary, u = ""): the out-of-table id is skipped but the scan goes on;
    "x" -> student 5, "c" -> student 2 (the regular token, not its fallback twin), "q" -> -1
    (only a special student token spells it); seen mass .65, extending .35: each p * .65/.35.
    Position 1 (u = "a"): nothing with mass extends "a": no row, and later positions still
    get theirs. Position 2 (boundary of "cd"): "cd" -> 4, "c" -> 2, "q" -> -1, the p = 0
    "abc" stays empty; Z = 1. Position 3 (u = "c"): only "cd" extends, remainder "d" -> 3,
    with the whole seen mass .85. Empty slots are id -1 and -inf; log-probs are float32."""
    records, teacher, student, doc = _hand_case()
    out = conditional_targets(records, teacher, doc.starts, PrefixIndex(student))
    assert out.student_pos.tolist() == [0, 2, 3] and out.student_pos.dtype == np.int64
    assert out.inside.tolist() == [False, False, True]
    assert out.student_ids.dtype == np.int64 and out.logprobs.dtype == np.float32
    assert out.student_ids.tolist() == [[-1, 5, 2, -1, -1], [4, 2, -1, -1, -1], [3, -1, -1, -1, -1]]
    z = 0.35 / 0.65
    want = np.array([[0.0, 0.2 / z, 0.1 / z, 0.05 / z, 0.0],
                     [0.6, 0.2, 0.05, 0.0, 0.0],
                     [0.85, 0.0, 0.0, 0.0, 0.0]])
    assert bool(np.isneginf(out.logprobs[want == 0]).all())
    np.testing.assert_allclose(np.exp(out.logprobs.astype(np.float64)), want, rtol=1e-6, atol=0.0)


def test_conditional_targets_reference_hand_case() -> None:
    """The slow reference from the definition gives the same buckets on the hand case: the
    scan goes past an out-of-table id, a remainder no regular student token starts is -1 (a
    special token does not count), twins resolve to the preferred id, and a position where
    nothing with mass extends u has no entry."""
    records, teacher, student, doc = _hand_case()
    ref = conditional_targets_reference(records, teacher, student, doc, b"abcd")
    assert sorted(ref) == [0, 2, 3]
    z = 0.35 / 0.65
    want = {0: {5: 0.2 / z, 2: 0.1 / z, -1: 0.05 / z}, 2: {4: 0.6, 2: 0.2, -1: 0.05}, 3: {3: 0.85}}
    for p, buckets in want.items():
        got = {sid: m for sid, m in ref[p].items() if m > 0}
        assert sorted(got) == sorted(buckets), p
        for sid, m in buckets.items():
            assert got[sid] == pytest.approx(m, rel=1e-6), (p, sid)


def test_conditional_targets_for_a_teacher_without_positions() -> None:
    """A teacher with no record of the document covers 0 bytes: no row at all (and no
    lookup of a teacher token that does not exist), with the documented shapes."""
    records = TeacherRecords("doc", np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                             np.zeros((0, 2), np.int32), np.zeros((0, 2), np.float32),
                             np.zeros(0, np.float32))
    teacher = _token_bytes("teacher", _TEACHER_TABLE)
    student = _token_bytes("student", _STUDENT_TABLE)
    out = conditional_targets(records, teacher, np.array([0, 1], np.int64), PrefixIndex(student))
    assert out.n_positions == 0
    assert out.student_ids.shape == (0, 3) and out.logprobs.shape == (0, 3)


def test_conditional_targets_stop_at_the_last_byte_the_teacher_covers() -> None:
    """A teacher that covers only "ab" of "abcd" gives targets at student positions starting
    before byte 2; the student token starting exactly at byte 2 has none."""
    records = _records([0], [2], [0.9], [[0]], [[0.9]])
    teacher = _token_bytes("teacher", _TEACHER_TABLE)
    student = _token_bytes("student", _STUDENT_TABLE)
    out = conditional_targets(records, teacher, np.array([0, 1, 2, 3], np.int64), PrefixIndex(student))
    assert out.student_pos.tolist() == [0, 1] and out.inside.tolist() == [False, True]
    assert out.student_ids.tolist() == [[0, -1], [1, -1]]
    np.testing.assert_allclose(out.logprobs[:, 0], [math.log(0.9)] * 2, rtol=1e-6)


def test_common_spans_put_zero_width_tokens_at_byte_zero_in_the_first_span() -> None:
    """Every tokenization starting with a zero-width token (end 0) makes no 0-byte span (its
    bits per byte would be NaN): the token's log-prob joins the first span, as align() puts
    such tokens in the first chunk."""
    spans = common_spans([np.array([0, 2]), np.array([0, 1, 2])],
                         [np.array([-1.0, -2.0]), np.array([-0.5, -0.25, -0.25])],
                         np.array([0, 2]))
    assert spans.bounds.tolist() == [0, 2] and spans.n_bytes.tolist() == [2]
    assert spans.logprob.tolist() == [[-3.0, -1.0]]
    assert spans.span_of_student.tolist() == [0, 0]
