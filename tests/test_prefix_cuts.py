"""Prefix cuts (``capture.inside_top_k``): the extending-token index, capture against the full
distribution of a tiny random teacher, the cache round trip, and conditional targets that use
them being exactly the full-vocabulary conditional."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from align_support import greedy_doc
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from avokit.align import TokenBytes
from avokit.align.conditional import PrefixIndex, conditional_targets
from avokit.align.extending import ExtendingIndex
from avokit.cache import CacheReader, CacheSpec, decode, encode
from avokit.capture import run_capture
from avokit.corpus import load_split
from avokit.errors import CacheError
from avokit.recipe import recipe_from_dict
from avokit.records import PrefixCuts, TeacherRecords
from avokit.teachers import HFTeacher
from avokit.teachers.prefix_cuts import cuts_reference

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.",
    "Café au lait costs €3 — naïve résumé.\nA second line with   spaces\tand a tab.",
    "Emoji 🙂 and CJK 漢字 characters are several bytes each in UTF-8 encoding.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells.",
]
WIDTH = 4


def _tb(pieces: list[bytes], special: list[bool] | None = None) -> TokenBytes:
    preferred: dict[bytes, int] = {}
    for i, b in enumerate(pieces):
        preferred.setdefault(b, i)
    flags = np.array(special if special is not None else [False] * len(pieces), bool)
    return TokenBytes("t", "byte_level", list(pieces), flags, np.zeros(len(pieces), bool), {}, preferred)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=4).map(lambda b: bytes(x % 3 * 127 for x in b)),
                          st.booleans()), min_size=1, max_size=40),
       st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 3 * 127 for x in b)))
def test_extending_index_is_the_scan(vocab: list[tuple[bytes, bool]], prefix: bytes) -> None:
    # bytes 0x00, 0x7f and 0xfe..0xff-like values: the successor's carry over 0xff is exercised
    pieces = [b.replace(b"\xfe", b"\xff") for b, _ in vocab]
    tb = _tb(pieces, [s for _, s in vocab])
    index = ExtendingIndex(tb)
    lo, hi = index.extending(prefix)
    want = {i for i, b in enumerate(pieces) if not tb.special[i] and len(b) > len(prefix) and b.startswith(prefix)}
    assert set(index.order[lo:hi].tolist()) == want
    assert hi - lo == len(want)  # no id twice, nothing else in the run


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a 320-token byte-level BPE (small enough for the slow reference)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from avokit.student import train_student_tokenizer

    out = tmp_path_factory.mktemp("cuts-teacher")
    tok = train_student_tokenizer(TEXTS * 3, 320, out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # peaked, so the extenders' masses differ by orders of magnitude
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(out)
    return out


def test_captured_cuts_are_the_full_distribution(teacher_dir: Path) -> None:
    # vocab_chunk 5 splits the positions of a batch across chunks; batch_size 3 mixes documents
    teacher = HFTeacher.from_dir(teacher_dir, device="cpu", max_length=128, batch_size=3, vocab_chunk=5)
    recs = teacher.score(TEXTS, [f"d{i}" for i in range(len(TEXTS))], 8, inside_top_k=WIDTH)
    tb = teacher.token_bytes
    assert any(len(tb.table[int(t)]) > 2 for r in recs for t in r.token_ids)  # multi-byte tokens exist
    for rec in recs:
        ids = rec.token_ids.tolist()
        with torch.no_grad():
            logits = teacher.model(torch.tensor([[teacher.start_token_id] + ids])).logits[0, :-1]
        logp = torch.log_softmax(logits.double(), dim=-1).numpy()
        ref = cuts_reference(logp, rec.token_ids.astype(np.int64), tb.table, tb.special, WIDTH)
        cuts = rec.cuts
        assert cuts is not None and cuts.width == WIDTH
        assert np.diff(cuts.offsets).tolist() == [len(r) for r in ref]
        for i, per in enumerate(ref):
            for j, (mass, top) in enumerate(per, start=1):
                row = cuts.row(i, j)
                assert row >= 0
                assert cuts.logmass[row] == pytest.approx(mass, abs=1e-4)
                got = [(int(t), float(lp)) for t, lp in zip(cuts.ids[row], cuts.logprobs[row]) if t >= 0]
                assert len(got) == len(top)
                np.testing.assert_allclose([lp for _, lp in got], [lp for _, lp in top], atol=1e-4)
                for t, lp in got:  # each stored id carries its own log-prob (ties may reorder)
                    assert lp == pytest.approx(logp[i, t], abs=1e-4)
                    assert tb.table[t].startswith(tb.table[ids[i]][:j]) and len(tb.table[t]) > j


def _records_with_cuts(teacher_dir: Path) -> list[TeacherRecords]:
    teacher = HFTeacher.from_dir(teacher_dir, device="cpu", max_length=128)
    return teacher.score(TEXTS, [f"d{i}" for i in range(len(TEXTS))], 8, inside_top_k=WIDTH)


def test_cache_round_trip_keeps_the_cuts(teacher_dir: Path) -> None:
    recs = _records_with_cuts(teacher_dir)
    spec = CacheSpec(teacher="t", teacher_fingerprint="f", tokenizer_fingerprint="g", vocab_size=320,
                     top_k=8, logprob_bits=16, inside_top_k=WIDTH)
    for rec in recs:
        back = decode(encode(rec, spec), rec.doc_id, 8)
        assert back.cuts is not None and rec.cuts is not None
        np.testing.assert_array_equal(back.cuts.offsets, rec.cuts.offsets)
        np.testing.assert_array_equal(back.cuts.ids, rec.cuts.ids)
        np.testing.assert_array_equal(back.cuts.logprobs, rec.cuts.logprobs)
        np.testing.assert_array_equal(back.cuts.logmass, rec.cuts.logmass)
    bare = TeacherRecords(**{**recs[0].__dict__, "cuts": None})
    with pytest.raises(CacheError, match="inside_top_k=4"):
        encode(bare, spec)
    plain = spec.model_copy(update={"inside_top_k": 0})
    assert decode(encode(recs[0], plain), "d0", 8).cuts is None  # a cache without cuts stores none


def test_capture_stage_writes_cuts_and_a_new_plan(tmp_path: Path, teacher_dir: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")

    def recipe(inside: int, root: str):  # type: ignore[no-untyped-def]
        return recipe_from_dict({
            "name": "cap", "runs_dir": str(tmp_path / root),
            "corpus": {"sources": [{"kind": "jsonl", "path": str(corpus)}], "min_chars": 20,
                       "max_chars": 200, "heldout_fraction": 0.25},
            "teachers": [{"name": "tiny", "kind": "hf", "path": str(teacher_dir), "max_length": 128,
                          "device": "cpu"}],
            "capture": {"top_k": 8, "inside_top_k": inside},
        }, tmp_path)

    with_cuts = recipe(WIDTH, "a")
    run_capture(with_cuts)
    cache = with_cuts.run_dir / "cache" / "tiny"
    reader = CacheReader(cache)
    assert reader.manifest.inside_top_k == WIDTH
    docs = [d for split in ("train", "heldout") for d in load_split(with_cuts, split)]
    scorer = HFTeacher.from_dir(teacher_dir, device="cpu", max_length=128)
    direct = {r.doc_id: r for r in scorer.score([d.text for d in docs], [d.doc_id for d in docs], 8,
                                                 inside_top_k=WIDTH)}
    for doc_id in reader:
        got, want = reader[doc_id].cuts, direct[doc_id].cuts
        assert got is not None and want is not None
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.logmass, want.logmass, atol=1e-5)
    # the same folder cannot be finished by a capture without cuts (another plan)
    same_dir = recipe(0, "a")
    with pytest.raises(CacheError, match="another corpus, top_k, format"):
        run_capture(same_dir)


ALPHABET = [b"a", b"b", b"c", b" "]


class _Case:
    """A random teacher's full distribution over a tiny vocabulary on one text, and its records
    with a top-``k`` and cuts of a given width."""

    def __init__(self, t_extra: list[str], s_extra: list[str], text_s: str, seed: int) -> None:
        self.teacher = _tb(ALPHABET + [w.encode() for w in t_extra if w.encode() not in ALPHABET])
        self.student = _tb(ALPHABET + [w.encode() for w in s_extra if w.encode() not in ALPHABET])
        self.text = text_s.encode()
        self.t_doc, self.s_doc = greedy_doc(self.text, self.teacher), greedy_doc(self.text, self.student)
        n, v = self.t_doc.ids.size, self.teacher.size
        rng = np.random.default_rng(seed)
        logp = np.log(rng.dirichlet(np.full(v, 0.3), size=n).clip(1e-12, None))
        self.logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
        self.gold_lp = self.logp[np.arange(n), self.t_doc.ids]
        self.order = np.argsort(-self.logp, axis=1, kind="stable")
        self.index = PrefixIndex(self.student)

    def cuts(self, width: int) -> PrefixCuts:
        v = self.teacher.size
        ref = cuts_reference(self.logp, self.t_doc.ids, self.teacher.table, self.teacher.special, width)
        counts = [len(r) for r in ref]
        rows = [c for per in ref for c in per]
        ids = np.full((len(rows), v), -1, np.int32)
        lps = np.full((len(rows), v), -np.inf, np.float32)
        for r, (_, top) in enumerate(rows):
            ids[r, : len(top)] = [t for t, _ in top]
            lps[r, : len(top)] = [lp for _, lp in top]
        return PrefixCuts(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                          np.array([m for m, _ in rows], np.float32).reshape(-1), ids, lps)

    def records(self, k: int, cuts: PrefixCuts | None) -> TeacherRecords:
        n = self.t_doc.ids.size
        ids = self.order[:, :k]
        return TeacherRecords("d", self.t_doc.ids.astype(np.int32), self.t_doc.byte_ends,
                              self.gold_lp.astype(np.float32), ids.astype(np.int32),
                              np.take_along_axis(self.logp, ids, 1).astype(np.float32), np.zeros(n, np.float32), cuts)

    def targets(self, k: int, cuts: PrefixCuts | None, ends: bool = False):  # type: ignore[no-untyped-def]
        return conditional_targets(self.records(k, cuts), self.teacher, self.s_doc.starts, self.index,
                                   self.s_doc.byte_ends if ends else None)


def _buckets(ct, row: int) -> dict[int, float]:  # type: ignore[no-untyped-def]
    out: dict[int, float] = {}
    for sid, lp in zip(ct.student_ids[row].tolist(), ct.logprobs[row].tolist()):
        if lp > -math.inf:
            out[sid] = out.get(sid, 0.0) + math.exp(lp)
    return out


CASES = (st.lists(st.text(alphabet="abc ", min_size=2, max_size=4), min_size=3, max_size=12, unique=True),
         st.lists(st.text(alphabet="abc ", min_size=2, max_size=3), min_size=0, max_size=6, unique=True),
         st.text(alphabet="abc ", min_size=4, max_size=20), st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(*CASES)
def test_conditional_targets_with_cuts_are_the_full_conditional(t_extra: list[str], s_extra: list[str],
                                                                text_s: str, seed: int) -> None:
    case = _Case(t_extra, s_extra, text_s, seed)
    v = case.teacher.size
    exact = case.targets(v, None)  # full top-k: exact
    small = case.targets(2, case.cuts(v))  # top-2 + cuts holding every extender
    np.testing.assert_array_equal(exact.student_pos, small.student_pos)
    assume(bool(exact.inside.any()))  # the cases that matter: student tokens inside the teacher's
    for row in range(exact.n_positions):
        if not exact.inside[row]:
            continue  # at a boundary the top-2 is what it always was; inside, the cut is exact
        a, b = _buckets(exact, row), _buckets(small, row)
        assert a.keys() == b.keys()
        for sid in a:
            assert b[sid] == pytest.approx(a[sid], rel=1e-4, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(CASES[0], CASES[2], CASES[3], st.integers(1, 2))
def test_gold_piece_bucket_is_exact_from_the_cut(t_extra: list[str], text_s: str, seed: int, width: int) -> None:
    """Top-2 and cuts of one or two extenders: wherever the student's token ends inside the
    teacher's, its bucket holds P(the next bytes start with it | what is out), as the full
    distribution says, short only of the token spelling exactly those bytes when it is not stored."""
    case = _Case(t_extra, [], text_s, seed)  # one-byte student tokens: every bucket is one byte
    v, table = case.teacher.size, case.teacher.table
    exact = case.targets(v, case.cuts(v), ends=True)
    small = case.targets(2, case.cuts(width), ends=True)
    np.testing.assert_array_equal(exact.student_pos, small.student_pos)
    t_ends = case.t_doc.byte_ends.astype(np.int64)
    checked = 0
    for row, p in enumerate(exact.student_pos.tolist()):
        b, e = int(case.s_doc.starts[p]), int(case.s_doc.byte_ends[p])
        i = int(np.searchsorted(t_ends, b, side="right"))
        if e >= t_ends[i]:
            continue  # the student's token reaches the teacher token's end: no cut says more
        t_start = int(t_ends[i - 1]) if i else 0
        u, whole = case.text[t_start:b], case.text[t_start:e]
        z = sum(math.exp(case.logp[i, t]) for t, tb in enumerate(table) if len(tb) > len(u) and tb.startswith(u))
        equal = next((t for t, tb in enumerate(table) if tb == whole), None)
        stored = set(small_ids(case, i, len(u), width))
        missing = math.exp(case.logp[i, equal]) / z if equal is not None and equal not in stored else 0.0
        gold = int(case.s_doc.ids[p])
        want, got = _buckets(exact, row)[gold], _buckets(small, row).get(gold, 0.0)
        assert want - missing - 1e-5 <= got <= want + 1e-5
        if missing == 0.0:
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
        checked += 1
    assume(checked > 0)


def small_ids(case: _Case, i: int, prefix_len: int, width: int) -> list[int]:
    """The candidates a row of ``case.targets(2, case.cuts(width))`` reads at teacher token ``i``
    after ``prefix_len`` bytes: the top-2 at a boundary, the cut's stored extenders inside; and gold."""
    gold = int(case.t_doc.ids[i])
    if prefix_len == 0:
        return [*case.order[i, :2].tolist(), gold]
    u = case.teacher.table[gold][:prefix_len]
    ext = sorted((t for t, tb in enumerate(case.teacher.table) if len(tb) > len(u) and tb.startswith(u)),
                 key=lambda t: -case.logp[i, t])
    return [*ext[:width], gold]
