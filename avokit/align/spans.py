"""Spans common to several tokenizations: the unit of span-level teacher fusion.

A span runs between two consecutive bytes where *every* tokenization (each teacher's and the
student's) ends a token. Each teacher spells each span with whole tokens of its own, so the
sum of its gold log-probs over those tokens is its likelihood of exactly the span's bytes
given the same prefix: comparable across tokenizers, per span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CommonSpans:
    """``S`` spans common to ``n`` teachers and the student, up to the last byte all cover.

    - bounds: int64 [S + 1], byte offsets (0 first)
    - logprob: float64 [S, n], teacher ``t``'s gold log-prob summed over its tokens in span ``s``
    - n_bytes: int64 [S]
    - span_of_student: int64 [n_student], span of each student token, -1 past the last span
    """

    bounds: np.ndarray
    logprob: np.ndarray
    n_bytes: np.ndarray
    span_of_student: np.ndarray

    @property
    def n_spans(self) -> int:
        """``S``."""
        return int(self.n_bytes.shape[0])


def common_spans(teacher_ends: list[np.ndarray], teacher_gold: list[np.ndarray],
                 student_ends: np.ndarray) -> CommonSpans:
    """The spans every tokenization shares, with each teacher's log-prob of each span.

    ``teacher_ends[t]`` int64 [n_t] and ``teacher_gold[t]`` float [n_t] are teacher ``t``'s byte
    end offsets and gold log-probs; ``student_ends`` int64 [n_s]. A teacher that covers only a
    prefix of the document (its ``max_length``) cuts the spans at the last common byte.
    """
    s_ends = np.asarray(student_ends, dtype=np.int64)
    # not assume_unique: a zero-width token (a normaliser's lone mark) repeats its end, and a
    # repeated common end would make a span of 0 bytes
    common = np.unique(s_ends)
    for ends in teacher_ends:
        common = np.intersect1d(common, np.asarray(ends, dtype=np.int64))
    # zero-width tokens at byte 0 (a BOS everyone spells with no bytes) end no span: they join
    # the first one, as in align(); a shared end 0 would make a span of 0 bytes
    common = common[common > 0]
    bounds = np.concatenate([[0], common]).astype(np.int64)
    n_spans = int(common.size)
    logprob = np.zeros((n_spans, len(teacher_ends)), dtype=np.float64)
    for t, (ends, gold) in enumerate(zip(teacher_ends, teacher_gold)):
        ends = np.asarray(ends, dtype=np.int64)
        keep = ends <= (bounds[-1] if n_spans else 0)
        # a token ending at byte e lies in the span (bounds[j], bounds[j+1]] with bounds[j+1] >= e
        span = np.searchsorted(common, ends[keep], side="left")
        logprob[:, t] = np.bincount(span, weights=np.asarray(gold, dtype=np.float64)[keep], minlength=n_spans)
    of_student = np.searchsorted(common, s_ends, side="left").astype(np.int64)
    of_student[of_student >= n_spans] = -1
    return CommonSpans(bounds, logprob, np.diff(bounds), of_student)
