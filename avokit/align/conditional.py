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
counts for the student's " walk" instead of being lost in OTHER. Approximations, stated:
inside a token the tail's share that extends ``u`` is a proportional estimate, and paths where
the teacher would spell ``u`` with more than one token are not counted (the cache holds one
step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avokit.align.bytes import TokenBytes
from avokit.records import TeacherRecords, TokenizedDoc


class PrefixIndex:
    """Longest student token that is a prefix of a byte string, by dictionary probes."""

    def __init__(self, student: TokenBytes) -> None:
        """Index every regular (non-special) student token by its bytes."""
        self._ids = {b: i for b, i in student.preferred.items() if b and not student.special[i]}
        self._longest = max((len(b) for b in self._ids), default=0)

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
    ids = np.asarray(records.topk_ids, dtype=np.int64)
    lps = np.asarray(records.topk_logprobs, dtype=np.float64)
    gold = np.asarray(records.token_ids, dtype=np.int64)
    missing = ~(ids == gold[:, None]).any(axis=1)
    extra_id = np.where(missing, gold, -1)[:, None]
    extra_lp = np.where(missing, np.asarray(records.gold_logprob, dtype=np.float64), -np.inf)[:, None]
    return np.concatenate([ids, extra_id], axis=1), np.concatenate([lps, extra_lp], axis=1)


def conditional_targets(
    records: TeacherRecords, teacher: TokenBytes, student_starts: np.ndarray, index: PrefixIndex
) -> ConditionalTargets:
    """The teacher's byte-conditional buckets at every student position it covers.

    ``student_starts`` (int64 [n]) are the byte offsets where the student's tokens of the
    same document start. The emitted prefix is read from the teacher's own gold token (its
    bytes are the document's bytes there), so no text is needed. A teacher that covers only
    a prefix of the document (its ``max_length``) gives targets up to its last byte.
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
    c = cand_ids.shape[1]
    out_ids = np.full((pos.size, c), -1, dtype=np.int64)
    out_lps = np.full((pos.size, c), -np.inf, dtype=np.float64)
    table = teacher.table
    for row, (p, i) in enumerate(zip(pos.tolist(), which.tolist())):
        u = table[gold[i]][: s_starts[p] - t_starts[i]]
        keep: list[tuple[int, int, float]] = []
        for j, (tid, lp) in enumerate(zip(cand_ids[i].tolist(), cand_lps[i].tolist())):
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
        norm = np.log(kept_mass / (1.0 - tail[i]))
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


def conditional_targets_reference(
    records: TeacherRecords, teacher: TokenBytes, student: TokenBytes, student_doc: TokenizedDoc,
    text: bytes,
) -> dict[int, dict[int, float]]:
    """Slow reference from the definition, for tests: student position -> {student id or -1:
    conditional probability}, scanning the whole student vocabulary for each remainder."""
    out: dict[int, dict[int, float]] = {}
    ends = [int(e) for e in records.byte_ends]
    starts = [0] + ends[:-1]
    regular = [(i, b) for i, b in enumerate(student.table) if b and not student.special[i]]
    for p, b in enumerate(int(s) for s in student_doc.starts):
        holders = [i for i in range(len(ends)) if starts[i] <= b < ends[i]]
        if not holders:
            continue
        i = holders[0]
        u = text[starts[i] : b]
        cands = {int(t): float(lp) for t, lp in zip(records.topk_ids[i], records.topk_logprobs[i])}
        cands.setdefault(int(records.token_ids[i]), float(records.gold_logprob[i]))
        mass: dict[int, float] = {}
        for tid, lp in cands.items():
            if not 0 <= tid < len(teacher.table):
                continue
            tok = teacher.table[tid]
            if not (len(tok) > len(u) and tok.startswith(u)):
                continue
            rest = tok[len(u):]
            prefixes = [(len(sb), student.preferred.get(sb, sid)) for sid, sb in regular if rest.startswith(sb)]
            sid = max(prefixes)[1] if prefixes else -1
            mass[sid] = mass.get(sid, 0.0) + float(np.exp(lp))
        total = sum(mass.values())
        if total > 0:
            seen = min(1.0, sum(float(np.exp(lp)) for lp in cands.values()))
            z = total / seen
            out[p] = {sid: m / z for sid, m in mass.items()}
    return out
