"""Common boundaries of two tokenizations of the same bytes, as index arrays for the losses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """How a teacher's and the student's tokens line up over one document.

    A *common boundary* is a byte offset where both tokenizations start a token (offset 0
    always is one). ``m`` common boundaries cut the document into ``m`` chunks; chunk ``j``
    covers bytes ``[boundaries[j], boundaries[j+1])``.

    - boundaries: int64 [m+1], strictly increasing, ``boundaries[0] == 0``,
      ``boundaries[-1] == n_bytes``
    - teacher_pos / student_pos: int64 [m], index of the token that starts at
      ``boundaries[j]`` in each tokenization (the position whose prediction is compared)
    - teacher_chunk / student_chunk: int64 [n_t] / [n_s], chunk index of every token
    """

    boundaries: np.ndarray
    teacher_pos: np.ndarray
    student_pos: np.ndarray
    teacher_chunk: np.ndarray
    student_chunk: np.ndarray

    @property
    def n_chunks(self) -> int:
        """Number of chunks (= number of common boundaries that start a token)."""
        return int(self.teacher_pos.shape[0])


def align(teacher_ends: np.ndarray, student_ends: np.ndarray) -> Alignment:
    """Align two tokenizations given their byte end offsets (both must end at ``n_bytes``).

    Shapes: ``teacher_ends`` int [n_t], ``student_ends`` int [n_s], strictly increasing.
    """
    t_ends = np.asarray(teacher_ends, dtype=np.int64)
    s_ends = np.asarray(student_ends, dtype=np.int64)
    if t_ends.size == 0 or s_ends.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Alignment(np.zeros(1, np.int64), empty, empty, np.zeros(t_ends.size, np.int64),
                         np.zeros(s_ends.size, np.int64))
    if t_ends[-1] != s_ends[-1]:
        raise ValueError(
            f"tokenizations cover different byte lengths: {int(t_ends[-1])} vs {int(s_ends[-1])}"
        )
    common_ends = np.intersect1d(t_ends, s_ends, assume_unique=True)
    boundaries = np.concatenate([[0], common_ends]).astype(np.int64)
    starts = boundaries[:-1]
    # token starting at byte b is the one right after the token ending at b
    teacher_pos = np.searchsorted(t_ends, starts, side="right")
    student_pos = np.searchsorted(s_ends, starts, side="right")
    t_starts = np.concatenate([[0], t_ends[:-1]])
    s_starts = np.concatenate([[0], s_ends[:-1]])
    teacher_chunk = np.searchsorted(boundaries, t_starts, side="right") - 1
    student_chunk = np.searchsorted(boundaries, s_starts, side="right") - 1
    return Alignment(
        boundaries=boundaries,
        teacher_pos=teacher_pos.astype(np.int64),
        student_pos=student_pos.astype(np.int64),
        teacher_chunk=teacher_chunk.astype(np.int64),
        student_chunk=student_chunk.astype(np.int64),
    )
