"""Byte-conditional teacher targets at every student position, inside words too.

The reference alignment gives the student a token-level target only at *common boundaries*
(bytes where both tokenizations end a token): ~82% of student positions on English, none
inside a word the teacher spells as one token. But the teacher's top-k at its token ``i``
also says how that token goes on once some of its bytes are out. For a student position that
starts at byte ``b`` with ``starts[i] <= b < byte_ends[i]`` (teacher token ``i`` holds byte
``b``), the emitted prefix is ``u = text[starts[i]:b]`` and

    p(t | u) = p(t) / Z  for every candidate t whose bytes extend u,

over the candidates the cache holds (the top-k and the gold token; the gold token always
extends ``u``), where ``Z = P(next token extends u)`` is estimated as their mass divided by
the mass the cache saw (the candidates' total, at most 1): the tail the cache never saw is
assumed to extend ``u`` as often as the candidates do. A row then sums to the seen mass, and
the tail's share stays with OTHER in the bucketed divergence, as at a boundary, so the
teacher never puts exactly zero mass outside its candidates (a reverse KL would otherwise
charge the student ~100 nats per unit of mass there, the log-prob floor). Counting the whole
tail as extending ``u`` (an upper bound on Z, used before 2026-12-02) gave OTHER most of the
mass wherever the extending candidates are a small share, i.e. inside most tokens. Each candidate's *remainder* ``bytes(t)[len(u):]`` is what comes next; it
counts for the student token the student would write first: the longest student token that
is a prefix of the remainder (:class:`PrefixIndex`). Several remainders can share one
student token, so the result is a distribution over student buckets that the bucketed
divergence (:mod:`avokit.losses.bucketed`) takes as it is — mapped ids and log-probs.

At a common boundary ``u`` is empty and ``Z = 1``: the teacher's own distribution, every
candidate mapped to its longest student prefix ("prefix buckets"): teacher mass on " walking"
counts for the student's " walk" instead of being lost in OTHER.

Where the student's own token runs past the teacher token (``student_ends`` given): the student
writes eight spaces as one token where the teacher writes four and four, or " return" where the
teacher writes " ret" + "urn". The longest-prefix rule would map the teacher's real next token
to a *shorter* student token, and the student's real token would get nothing: measured on the
transfer study's code, Gemma's targets scored those positions at 5.2 bits per byte against 0.73
elsewhere (bench/results/transfer_signal.md). The cache holds the rest of the path: the teacher's
gold log-probs of the following tokens, and at the token where the student's token ends, the
candidates that spell its last bytes. So the real next teacher token's mass ``p`` is split:
``p * q`` goes to the student's real token, where ``q`` is the teacher's probability of the
following bytes up to the student token's end (gold log-probs of the teacher tokens inside, then
the candidates' share, of the seen mass, that start with the last bytes); ``p * (1 - q)``
(the teacher continues differently) stays in OTHER. Approximations, stated:
inside a token the tail's share that extends ``u`` is a proportional estimate, and paths where
the teacher would spell ``u`` with more than one token are not counted (the cache holds one
step).

Where capture stored :class:`~avokit.records.PrefixCuts` (``capture.inside_top_k``), a position
inside a teacher token takes its candidates from the cut of ``u`` instead: the most likely tokens
that extend ``u`` over the whole vocabulary, and ``Z`` exact (their summed mass, not an estimate
from the top-k); the extenders beyond the stored ones stay in OTHER. At a boundary nothing changes.

One bucket can be made exact even where the stored candidates are few: the student's own (gold)
token. Where it ends inside the teacher token (the student's piece ``s`` is a proper part of what
is left of it, as for the one- and two-byte pieces of a Chinese character), the cut of ``u + s``
holds the exact mass of every teacher token that strictly extends ``u + s``; what of it the row's
candidates do not hold goes to the student's gold token instead of OTHER, so that bucket holds
``P(the next bytes start with s | u)`` up to the token spelling exactly ``u + s`` when it is not a
candidate. This applies where ``Z`` is exact too (a cut row, or a boundary, where ``Z = 1``);
the unstored extenders of ``u + s`` whose bytes the student would start with a longer token of
its own are counted for the gold token (the cache cannot tell them apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avokit.align.bytes import TokenBytes
from avokit.records import PrefixCuts, TeacherRecords, TokenizedDoc


class PrefixIndex:
    """Longest student token that is a prefix of a byte string, by dictionary probes."""

    def __init__(self, student: TokenBytes) -> None:
        """Index every regular (non-special) student token by its bytes."""
        self._ids = {b: i for b, i in student.preferred.items() if b and not student.special[i]}
        self._longest = max((len(b) for b in self._ids), default=0)

    def exact(self, data: bytes) -> int:
        """The student id whose bytes are exactly ``data``, or -1."""
        return self._ids.get(data, -1)

    def longest_prefix(self, data: bytes) -> int:
        """The student id of the longest token that ``data`` starts with, or -1."""
        get = self._ids.get
        for n in range(min(len(data), self._longest), 0, -1):
            hit = get(data[:n])
            if hit is not None:
                return hit
        return -1


@dataclass(frozen=True)
class ConditionalTargets:
    """Per student position of one document: the teacher's conditional next-token buckets.

    ``m`` positions with a target, ``c`` candidate slots (top-k width + 1 for the gold token
    when it is outside the top-k).
    - student_pos: int64 [m], student token index whose distribution the row targets
    - inside: bool [m], True where the position is strictly inside a teacher token
    - student_ids: int64 [m, c], student id each candidate's remainder maps to, -1 = none
      (a candidate that does not extend the prefix, or whose remainder no student token starts)
    - logprobs: float32 [m, c], log p(candidate | prefix), -inf for dropped candidates; a row
      sums to at most 1 (the rest is the tail's share)
    """

    student_pos: np.ndarray
    inside: np.ndarray
    student_ids: np.ndarray
    logprobs: np.ndarray

    @property
    def n_positions(self) -> int:
        """``m``."""
        return int(self.student_pos.shape[0])


def _candidates(records: TeacherRecords) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and log-probs with the gold token appended where the top-k lacks it."""
    return _with_gold(np.asarray(records.topk_ids, dtype=np.int64),
                      np.asarray(records.topk_logprobs, dtype=np.float64),
                      np.asarray(records.token_ids, dtype=np.int64), records.gold_logprob)


def _with_gold(ids: np.ndarray, lps: np.ndarray, gold: np.ndarray, gold_lp: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate rows [r, c] with each row's gold id appended (log-prob ``gold_lp``) where the
    row lacks it, else an empty slot (-1, -inf): [r, c + 1]."""
    missing = ~(ids == gold[:, None]).any(axis=1)
    extra_id = np.where(missing, gold, -1)[:, None]
    extra_lp = np.where(missing, np.asarray(gold_lp, dtype=np.float64), -np.inf)[:, None]
    return np.concatenate([ids, extra_id], axis=1), np.concatenate([lps, extra_lp], axis=1)


def _extends_share(cand_ids: np.ndarray, cand_lps: np.ndarray, tail: float, table: list[bytes],
                   prefix: bytes) -> float:
    """The share of the seen mass at one teacher position held by candidates whose bytes
    start with ``prefix`` (the tail is assumed to do so as often as the candidates)."""
    mass = sum(float(np.exp(lp)) for tid, lp in zip(cand_ids.tolist(), cand_lps.tolist())
               if 0 <= tid < len(table) and lp > -np.inf and table[tid].startswith(prefix))
    return mass / max(1.0 - tail, 1e-12)


def continuation_logprob(records: TeacherRecords, teacher: TokenBytes, i: int, end: int,
                         text: bytes, cand: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
    """log of the teacher's probability that, once its token ``i`` is out, the next bytes are
    ``text[byte_ends[i]:end]``: the gold log-probs of the teacher tokens that lie inside,
    then the share of the candidates at the token holding byte ``end - 1`` that start with
    its bytes up to ``end``. ``-inf`` where ``end`` lies past the teacher's last byte.
    ``cand``: :func:`_candidates` and the tail, when the caller has them."""
    t_ends = np.asarray(records.byte_ends, dtype=np.int64)
    if end > int(t_ends[-1]):
        return -np.inf
    ids, lps, tail = cand if cand is not None else (*_candidates(records), None)
    if tail is None:
        tail = np.clip(1.0 - np.exp(lps).sum(axis=1), 0.0, 1.0)
    last = int(np.searchsorted(t_ends, end, side="left"))  # the teacher token holding end - 1
    inside = np.asarray(records.gold_logprob[i + 1 : last], dtype=np.float64).sum()
    start = int(t_ends[last - 1]) if last > 0 else 0
    share = _extends_share(ids[last], lps[last], float(tail[last]), teacher.table, text[start:end])
    return float(inside + np.log(share)) if share > 0 else -np.inf


def conditional_targets(
    records: TeacherRecords, teacher: TokenBytes, student_starts: np.ndarray, index: PrefixIndex,
    student_ends: np.ndarray | None = None,
) -> ConditionalTargets:
    """The teacher's byte-conditional buckets at every student position it covers.

    ``student_starts`` (int64 [n]) are the byte offsets where the student's tokens of the
    same document start. The emitted prefix is read from the teacher's own gold token (its
    bytes are the document's bytes there), so no text is needed. A teacher that covers only
    a prefix of the document (its ``max_length``) gives targets up to its last byte.
    ``student_ends`` (int64 [n]), when given, credits the student's real token where it runs
    past the teacher's token (see the module docstring); without it, every candidate goes to
    its longest student prefix.
    """
    t_starts = np.concatenate([[0], np.asarray(records.byte_ends[:-1], dtype=np.int64)])
    t_ends = np.asarray(records.byte_ends, dtype=np.int64)
    s_starts = np.asarray(student_starts, dtype=np.int64)
    gold = np.asarray(records.token_ids, dtype=np.int64)
    covered = int(t_ends[-1]) if t_ends.size else 0
    pos = np.nonzero(s_starts < covered)[0]
    which = np.searchsorted(t_ends, s_starts[pos], side="right")  # teacher token holding b
    cand_ids, cand_lps = _candidates(records)
    # what the cache never saw at each teacher position (quantised top-k may round past 1)
    tail = np.clip(1.0 - np.exp(cand_lps).sum(axis=1), 0.0, 1.0)
    cuts = records.cuts
    inside_rows = _inside_rows(cuts, s_starts[pos] - t_starts[which], which)
    cut_ids, cut_lps, cut_mass = cand_ids[:0], cand_lps[:0], np.zeros(0)
    if cuts is not None:  # the cut's extenders with the gold token, like the top-k's candidates
        owner = _cut_position(cuts)
        cut_ids, cut_lps = _with_gold(np.asarray(cuts.ids, dtype=np.int64), np.asarray(cuts.logprobs, np.float64),
                                      gold[owner], np.asarray(records.gold_logprob)[owner])
        cut_mass = np.asarray(cuts.logmass, dtype=np.float64)
    # with cuts and the student's ends, one more slot per row: the gold piece's unstored mass
    gold_slot = cuts is not None and student_ends is not None
    c = max(cand_ids.shape[1], cut_ids.shape[1]) + int(gold_slot)
    out_ids = np.full((pos.size, c), -1, dtype=np.int64)
    out_lps = np.full((pos.size, c), -np.inf, dtype=np.float64)
    table = teacher.table
    # the document's bytes, spelt by the teacher's gold tokens (only needed to credit the
    # student's real token where it runs past a teacher token)
    text = b"".join(table[g] for g in gold.tolist()) if student_ends is not None else b""
    s_ends = np.asarray(student_ends, dtype=np.int64) if student_ends is not None else None
    for row, (p, i) in enumerate(zip(pos.tolist(), which.tolist())):
        u = table[gold[i]][: s_starts[p] - t_starts[i]]
        r = int(inside_rows[row])
        row_ids, row_lps = (cut_ids[r], cut_lps[r]) if r >= 0 else (cand_ids[i], cand_lps[i])
        keep: list[tuple[int, int, float]] = []
        for j, (tid, lp) in enumerate(zip(row_ids.tolist(), row_lps.tolist())):
            if tid < 0 or tid >= len(table) or lp == -np.inf:
                continue
            tok = table[tid]
            if len(tok) > len(u) and tok.startswith(u):
                keep.append((j, index.longest_prefix(tok[len(u):]), lp))
        if not keep:
            continue
        kept_mass = float(np.exp(np.array([k[2] for k in keep])).sum())
        # P(next token extends u) = kept mass / seen mass: the unseen tail extends u as often as
        # the candidates do. 1 at a boundary; a row sums to the seen mass, OTHER keeps the tail
        # with a cut: Z is its exact extending mass (the unstored extenders stay in OTHER)
        norm = float(cut_mass[r]) if r >= 0 else np.log(kept_mass / (1.0 - tail[i]))
        if s_ends is not None and s_ends[p] > t_ends[i]:  # after Z: crediting moves mass, never adds it
            keep = _credit_real_token(keep, row_ids, gold[i], index.exact(text[s_starts[p]:s_ends[p]]),
                                      continuation_logprob(records, teacher, i, int(s_ends[p]), text,
                                                           (cand_ids, cand_lps, tail)))
        elif gold_slot and s_ends is not None and (r >= 0 or not u):  # Z exact: a cut, or a boundary
            assert cuts is not None
            piece = text[s_starts[p]:s_ends[p]]
            sid, extra = index.exact(piece), _gold_piece_rest(cuts, cut_mass, i, u + piece, keep, row_ids, table)
            if sid >= 0 and extra is not None:
                keep.append((c - 1, sid, extra))
        for (j, sid, lp) in keep:
            out_ids[row, j] = sid
            out_lps[row, j] = lp - norm
    kept = (out_lps > -np.inf).any(axis=1)
    return ConditionalTargets(
        student_pos=pos[kept].astype(np.int64),
        inside=(s_starts[pos] > t_starts[which])[kept],
        student_ids=out_ids[kept],
        logprobs=out_lps[kept].astype(np.float32),
    )


def _cut_position(cuts: PrefixCuts) -> np.ndarray:
    """int64 [c]: the position each cut row belongs to."""
    offsets = np.asarray(cuts.offsets, dtype=np.int64)
    counts: np.ndarray = offsets[1:] - offsets[:-1]
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts)


def _inside_rows(cuts: PrefixCuts | None, prefix_len: np.ndarray, which: np.ndarray) -> np.ndarray:
    """int64 [m]: the cut row of each target row (its teacher token ``which``, ``prefix_len``
    bytes out); -1 at a boundary, where no cuts were captured, or where the cut's mass
    underflowed at capture (no normaliser: the top-k serves there)."""
    if cuts is None:
        return np.full(which.shape, -1, dtype=np.int64)
    rows = np.array([cuts.row(int(i), int(j)) for i, j in zip(which, prefix_len)], dtype=np.int64)
    finite = np.append(np.isfinite(np.asarray(cuts.logmass, dtype=np.float64)), False)
    return np.where(finite[rows], rows, -1)  # row -1 reads the appended False


def _gold_piece_rest(cuts: PrefixCuts, cut_mass: np.ndarray, i: int, prefix: bytes,
                     keep: list[tuple[int, int, float]], row_ids: np.ndarray, table: list[bytes]) -> float | None:
    """log of the mass of teacher tokens that strictly extend ``prefix`` (the emitted bytes and the
    student's gold piece, which ends inside teacher token ``i``) and are not among the row's
    candidates ``keep``: the cut of ``prefix`` minus the stored ones. None where the cut is
    missing or nothing (beyond rounding) is left."""
    r = cuts.row(i, len(prefix))
    if r < 0 or not np.isfinite(cut_mass[r]):
        return None
    total = math.exp(float(cut_mass[r]))
    stored = sum(math.exp(lp) for j, _, lp in keep
                 if len(table[int(row_ids[j])]) > len(prefix) and table[int(row_ids[j])].startswith(prefix))
    rest = total - stored
    # float32 log-probs: a rest within their rounding of the total is no mass
    return math.log(rest) if rest > 1e-5 * total else None


def _credit_real_token(keep: list[tuple[int, int, float]], cand_ids: np.ndarray, gold: int,
                       real: int, cont: float) -> list[tuple[int, int, float]]:
    """``keep`` with the teacher's gold candidate's slot moved to the student's real token
    ``real`` at ``lp + cont`` (its ``1 - q`` share left to OTHER); unchanged where the
    student's bytes are no single student token or the continuation is impossible."""
    if real < 0 or cont == -np.inf:
        return keep
    return [(j, real, lp + cont) if int(cand_ids[j]) == gold else (j, sid, lp) for j, sid, lp in keep]


def conditional_targets_reference(
    records: TeacherRecords, teacher: TokenBytes, student: TokenBytes, student_doc: TokenizedDoc,
    text: bytes, *, credit_real: bool = False,
) -> dict[int, dict[int, float]]:
    """Slow reference from the definition, for tests: student position -> {student id or -1:
    conditional probability}, scanning the whole student vocabulary for each remainder.
    ``credit_real``: as the fast path with ``student_ends``."""
    out: dict[int, dict[int, float]] = {}
    ends = [int(e) for e in records.byte_ends]
    starts = [0] + ends[:-1]
    regular = [(i, b) for i, b in enumerate(student.table) if b and not student.special[i]]

    def candidates(i: int) -> dict[int, float]:
        cands = {int(t): float(lp) for t, lp in zip(records.topk_ids[i], records.topk_logprobs[i])}
        cands.setdefault(int(records.token_ids[i]), float(records.gold_logprob[i]))
        return cands

    def seen(cands: dict[int, float]) -> float:
        return min(1.0, sum(float(np.exp(lp)) for lp in cands.values()))

    for p, (b, e) in enumerate(zip((int(s) for s in student_doc.starts), (int(x) for x in student_doc.byte_ends))):
        holders = [i for i in range(len(ends)) if starts[i] <= b < ends[i]]
        if not holders:
            continue
        i = holders[0]
        u = text[starts[i] : b]
        cands = candidates(i)
        real, q = -1, 0.0
        if credit_real and ends[i] < e <= ends[-1]:
            real = student.preferred.get(text[b:e], -1)
            real = -1 if real >= 0 and student.special[real] else real
            last = next(j for j in range(len(ends)) if ends[j] >= e)
            at_last = candidates(last)
            share = sum(float(np.exp(lp)) for tid, lp in at_last.items()
                        if 0 <= tid < len(teacher.table) and teacher.table[tid].startswith(text[starts[last]:e]))
            q = math.exp(sum(float(records.gold_logprob[j]) for j in range(i + 1, last))) * share / seen(at_last)
        mass: dict[int, float] = {}
        total = 0.0
        for tid, lp in cands.items():
            if not 0 <= tid < len(teacher.table):
                continue
            tok = teacher.table[tid]
            if not (len(tok) > len(u) and tok.startswith(u)):
                continue
            total += float(np.exp(lp))
            if real >= 0 and q > 0 and tid == int(records.token_ids[i]):
                mass[real] = mass.get(real, 0.0) + float(np.exp(lp)) * q
                continue
            rest = tok[len(u):]
            prefixes = [(len(sb), student.preferred.get(sb, sid)) for sid, sb in regular if rest.startswith(sb)]
            sid = max(prefixes)[1] if prefixes else -1
            mass[sid] = mass.get(sid, 0.0) + float(np.exp(lp))
        if total > 0:
            z = total / seen(cands)
            out[p] = {sid: m / z for sid, m in mass.items()}
    return out
