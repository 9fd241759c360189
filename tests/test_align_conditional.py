"""Byte-conditional teacher targets: a hand-computed case, and the fast path against the slow
reference from the definition on random vocabularies, texts and top-k lists."""

from __future__ import annotations

import math

import numpy as np
from align_support import greedy_doc
from hypothesis import given, settings
from hypothesis import strategies as st

from avokit.align import TokenBytes
from avokit.align.conditional import (
    ConditionalTargets,
    PrefixIndex,
    conditional_targets,
    conditional_targets_reference,
)
from avokit.records import TeacherRecords, TokenizedDoc


def _tb(pieces: list[bytes], name: str) -> TokenBytes:
    preferred: dict[bytes, int] = {}
    for i, b in enumerate(pieces):
        preferred.setdefault(b, i)
    return TokenBytes(name, "byte_level", list(pieces), np.zeros(len(pieces), bool),
                      np.zeros(len(pieces), bool), {}, preferred)


def _records(doc: TokenizedDoc, topk_ids: np.ndarray, topk_lp: np.ndarray, gold_lp: np.ndarray) -> TeacherRecords:
    n = doc.ids.size
    return TeacherRecords("d", doc.ids.astype(np.int32), doc.byte_ends, gold_lp.astype(np.float32),
                          topk_ids.astype(np.int32), topk_lp.astype(np.float32), np.zeros(n, np.float32))


def test_hand_case_inside_a_word_and_at_a_boundary() -> None:
    # teacher spells " walking" as one token; the student as " walk" + "ing"
    teacher = _tb([b" walking", b" walked", b" walks", b" talk", b" w", b"alking", b"i", b"n", b"g",
                   b" ", b"w", b"a", b"l", b"k", b"e", b"d", b"s", b"t"], "teacher")
    student = _tb([b" walk", b"ing", b"ed", b"s", b" ", b"w", b"a", b"l", b"k", b"i", b"n", b"g", b"e",
                   b"d", b"t", b" wa"], "student")
    t_doc = TokenizedDoc(np.array([0]), np.array([8]), 8)
    s_doc = TokenizedDoc(np.array([0, 1]), np.array([5, 8]), 8)
    p = {" walking": 0.5, " walked": 0.2, " walks": 0.1, " talk": 0.1}
    ids = np.array([[0, 1, 2, 3]])
    lps = np.log(np.array([[p[" walking"], p[" walked"], p[" walks"], p[" talk"]]]))
    rec = _records(t_doc, ids, lps, np.log(np.array([0.5])))
    out = conditional_targets(rec, teacher, s_doc.starts, PrefixIndex(student))
    assert out.student_pos.tolist() == [0, 1] and out.inside.tolist() == [False, True]
    # boundary row: every candidate kept; " walking"/" walked"/" walks" -> " walk", " talk" -> " "
    row0 = {}
    for sid, lp in zip(out.student_ids[0], out.logprobs[0]):
        if lp > -np.inf:
            row0[int(sid)] = row0.get(int(sid), 0.0) + math.exp(float(lp))
    assert set(row0) == {0, 4}
    # the teacher's own distribution: the 0.1 its top-k leaves stays OTHER's, never renormalised away
    assert abs(row0[0] - 0.8) < 1e-6 and abs(row0[4] - 0.1) < 1e-6
    # inside " walking" after " walk": only " walking", " walked", " walks" extend the prefix;
    # P(extends " walk") = 0.8 of the 0.9 the cache saw; the unseen 0.1 stays OTHER's, as at the
    # boundary: 0.5 / (0.8 / 0.9), ...
    row1 = {int(s): math.exp(float(lp)) for s, lp in zip(out.student_ids[1], out.logprobs[1]) if lp > -np.inf}
    z = 0.8 / 0.9
    assert abs(row1[1] - 0.5 / z) < 1e-6 and abs(row1[2] - 0.2 / z) < 1e-6 and abs(row1[3] - 0.1 / z) < 1e-6
    assert abs(sum(row1.values()) - 0.9) < 1e-6


def _ab_case() -> ConditionalTargets:
    """Teacher spells "ab" as one token, top-1 "ax" (0.6), gold "ab" (0.3) outside the top-k."""
    teacher = _tb([b"ab", b"ax", b"a", b"b", b"x"], "t")
    student = _tb([b"a", b"b", b"x"], "s")
    t_doc = TokenizedDoc(np.array([0]), np.array([2]), 2)
    s_doc = TokenizedDoc(np.array([0, 1]), np.array([1, 2]), 2)
    rec = _records(t_doc, np.array([[1]]), np.log(np.array([[0.6]])), np.log(np.array([0.3])))
    return conditional_targets(rec, teacher, s_doc.starts, PrefixIndex(student))


def test_gold_outside_the_top_k_is_a_candidate() -> None:
    out = _ab_case()
    # after "a": candidates "ax" (0.6) and the gold "ab" (0.3), unseen tail 0.1 -> x: 0.6, b: 0.3
    got = {int(s): math.exp(float(lp)) for s, lp in zip(out.student_ids[1], out.logprobs[1]) if lp > -np.inf}
    assert abs(got[2] - 0.6) < 1e-6 and abs(got[1] - 0.3) < 1e-6


def test_reverse_kl_on_a_dense_target_stays_finite_scale() -> None:
    """A teacher whose top-k leaves mass unseen gives OTHER that mass, so a student with mass
    outside the candidates pays a reverse KL of a few nats, not the ~100-nat log-prob floor."""
    import torch

    from avokit.losses.bucketed import bucketed_divergence

    out = _ab_case()
    student_lp = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))  # 0.5 on "a", outside the candidates
    loss, _ = bucketed_divergence(student_lp, torch.from_numpy(out.student_ids[1:]),
                                  torch.from_numpy(out.logprobs[1:]), kind="reverse_kl")
    # buckets {x, b, OTHER}: teacher (0.6, 0.3, 0.1), student (0.3, 0.2, 0.5)
    want = 0.3 * math.log(0.3 / 0.6) + 0.2 * math.log(0.2 / 0.3) + 0.5 * math.log(0.5 / 0.1)
    assert abs(float(loss[0]) - want) < 1e-5


ALPHABET = b"ab c"


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    def vocab(extra: int) -> list[bytes]:
        words = draw(st.lists(st.binary(min_size=2, max_size=5).map(
            lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)), min_size=1, max_size=extra))
        return list(dict.fromkeys([bytes([c]) for c in ALPHABET] + words))

    t_pieces, s_pieces = vocab(12), vocab(8)
    text = bytes(ALPHABET[x % len(ALPHABET)] for x in draw(st.binary(min_size=1, max_size=24)))
    teacher, student = _tb(t_pieces, "t"), _tb(s_pieces, "s")
    t_doc, s_doc = greedy_doc(text, teacher), greedy_doc(text, student)
    n, k = t_doc.ids.size, draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    topk = np.stack([rng.choice(len(t_pieces), size=min(k, len(t_pieces)), replace=False) for _ in range(n)])
    raw = rng.dirichlet(np.ones(topk.shape[1] + 1), size=n)[:, :-1]  # leave some tail mass
    order = np.argsort(-raw, axis=1)
    gold = np.log(rng.uniform(0.01, 0.5, size=n))
    return teacher, student, text, t_doc, s_doc, np.take_along_axis(topk, order, 1), np.log(np.take_along_axis(raw, order, 1)), gold


@settings(max_examples=150, deadline=None)
@given(cases(), st.booleans())
def test_fast_path_equals_the_reference(case: tuple, credit_real: bool) -> None:
    teacher, student, text, t_doc, s_doc, topk, lps, gold = case
    rec = _records(t_doc, topk, lps, gold)
    fast = conditional_targets(rec, teacher, s_doc.starts, PrefixIndex(student),
                               s_doc.byte_ends if credit_real else None)
    ref = conditional_targets_reference(rec, teacher, student, s_doc, text, credit_real=credit_real)
    assert sorted(ref) == fast.student_pos.tolist()
    assert len(ref) == s_doc.ids.size  # the gold token always extends the prefix: every position
    for row, p in enumerate(fast.student_pos.tolist()):
        got: dict[int, float] = {}
        for sid, lp in zip(fast.student_ids[row].tolist(), fast.logprobs[row].tolist()):
            if lp > -math.inf:
                got[sid] = got.get(sid, 0.0) + math.exp(lp)
        assert got.keys() == ref[p].keys()
        for sid, v in ref[p].items():
            assert abs(got[sid] - v) < 1e-5, (p, sid, got, ref[p])
        assert sum(got.values()) <= 1.0 + 1e-5  # the rest is the unseen tail's share


def _indent_case() -> tuple[TokenBytes, TokenBytes, TokenizedDoc, TeacherRecords]:
    """Eight spaces then "return": the teacher writes "    " + "    " + "return", the student
    "        " + "return"."""
    teacher = _tb([b"    ", b"  ", b"return", b"x", b" "], "teacher")
    student = _tb([b"        ", b"    ", b"  ", b" ", b"return", b"x"], "student")
    t_doc = TokenizedDoc(np.array([0, 0, 2]), np.array([4, 8, 14]), 14)
    s_doc = TokenizedDoc(np.array([0, 4]), np.array([8, 14]), 14)
    # position 0: "    " 0.6, "  " 0.3; position 1: "    " 0.5, "  " 0.2, "return" 0.1
    topk = np.array([[0, 1, 4], [0, 1, 2], [2, 3, 4]])
    lps = np.log(np.array([[0.6, 0.3, 0.05], [0.5, 0.2, 0.1], [0.9, 0.05, 0.01]]))
    return teacher, student, s_doc, _records(t_doc, topk, lps, np.log(np.array([0.6, 0.5, 0.9])))


def test_the_trainer_credits_the_real_token_too() -> None:
    from avokit.train.kd_data import DenseSpec, doc_kd

    teacher, student, s_doc, rec = _indent_case()
    kd = doc_kd(rec, s_doc.byte_ends, np.array([1, 2, 4, 5, 3]), DenseSpec(teacher, PrefixIndex(student)))
    assert kd.dense is not None and kd.dense.pos.tolist() == [0, 1]
    row = dict(zip(kd.dense.ids[0].tolist(), np.exp(kd.dense.logprobs[0]).tolist()))
    assert math.isclose(row[0], 0.375, rel_tol=1e-6) and 1 not in row


def test_a_student_token_longer_than_the_teacher_token_gets_the_real_continuation() -> None:
    # code indentation: the teacher writes eight spaces as "    " + "    ", the student as one
    # token; the longest-prefix rule alone would give the teacher's mass to the student's
    # four-space token and leave the real eight-space token with nothing
    teacher, student, s_doc, rec = _indent_case()
    index = PrefixIndex(student)
    old = conditional_targets(rec, teacher, s_doc.starts, index)
    new = conditional_targets(rec, teacher, s_doc.starts, index, s_doc.byte_ends)
    def probs(ct: ConditionalTargets, row: int) -> dict[int, float]:
        out: dict[int, float] = {}
        for sid, lp in zip(ct.student_ids[row].tolist(), ct.logprobs[row].tolist()):
            if lp > -math.inf:
                out[sid] = out.get(sid, 0.0) + math.exp(lp)
        return out
    assert 0 not in probs(old, 0) and math.isclose(probs(old, 0)[1], 0.6, rel_tol=1e-6)
    # the teacher's "    " (0.6) then "    " again (0.5 of the 0.8 the cache saw there, the
    # unseen tail assumed alike): 0.6 x 0.625 = 0.375 for the eight-space token; the other
    # 0.225 (the teacher goes on differently) is left to OTHER; "  " keeps its 0.3
    got = probs(new, 0)
    assert math.isclose(got[0], 0.375, rel_tol=1e-6) and math.isclose(got[2], 0.3, rel_tol=1e-6)
    assert 1 not in got
    assert probs(new, 1) == probs(old, 1)  # " return" ends where the teacher's token does
