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

    def chunk_lengths(self) -> np.ndarray:
        """Byte length of every chunk: int64 [m]."""
        return np.diff(self.boundaries)

    def teacher_chunk_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum a per-teacher-token quantity (e.g. gold log-probs) over each chunk: [m]."""
        return np.bincount(self.teacher_chunk, weights=values, minlength=self.n_chunks)[: self.n_chunks]

    def student_chunk_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum a per-student-token quantity over each chunk: [m]."""
        return np.bincount(self.student_chunk, weights=values, minlength=self.n_chunks)[: self.n_chunks]


def _as_ends(ends: np.ndarray, which: str) -> np.ndarray:
    arr = np.asarray(ends, dtype=np.int64).reshape(-1)
    if arr.size > 1 and bool((np.diff(arr) < 0).any()):
        raise ValueError(f"{which} byte ends must be non-decreasing")
    if arr.size and arr[0] < 0:
        raise ValueError(f"{which} byte ends must be >= 0")
    return arr


def align(teacher_ends: np.ndarray, student_ends: np.ndarray) -> Alignment:
    """Align two tokenizations given their byte end offsets (both must end at ``n_bytes``).

    Shapes: ``teacher_ends`` int [n_t], ``student_ends`` int [n_s], non-decreasing (strictly
    increasing for exact tokenizations; equal ends mark zero-width tokens from the lossy
    fallback, which never start a common boundary). Pure numpy: O((n_t + n_s) log n).

    Raises:
        ValueError: the two cover different byte lengths, or ends decrease.
    """
    t_ends = _as_ends(teacher_ends, "teacher")
    s_ends = _as_ends(student_ends, "student")
    # a 0-byte document (nothing, or only zero-width tokens) has no chunk to align
    if t_ends.size == 0 or s_ends.size == 0 or (t_ends[-1] == 0 and s_ends[-1] == 0):
        if t_ends.size + s_ends.size and (t_ends[-1:].sum() + s_ends[-1:].sum()) > 0:
            raise ValueError("one tokenization is empty and the other is not")
        empty = np.zeros(0, dtype=np.int64)
        return Alignment(np.zeros(1, np.int64), empty, empty, np.zeros(t_ends.size, np.int64),
                         np.zeros(s_ends.size, np.int64))
    if t_ends[-1] != s_ends[-1]:
        raise ValueError(
            f"tokenizations cover different byte lengths: {int(t_ends[-1])} vs {int(s_ends[-1])}"
        )
    common_ends = np.intersect1d(t_ends, s_ends)  # sorted, unique
    common_ends = common_ends[common_ends > 0]
    boundaries = np.concatenate([[0], common_ends]).astype(np.int64)
    starts = boundaries[:-1]
    # The token starting at byte b is the first one ending after b (skips zero-width tokens).
    teacher_pos = np.searchsorted(t_ends, starts, side="right")
    student_pos = np.searchsorted(s_ends, starts, side="right")
    n_chunks = starts.shape[0]
    t_starts = np.concatenate([[0], t_ends[:-1]])
    s_starts = np.concatenate([[0], s_ends[:-1]])
    teacher_chunk = np.minimum(np.searchsorted(boundaries, t_starts, side="right") - 1, n_chunks - 1)
    student_chunk = np.minimum(np.searchsorted(boundaries, s_starts, side="right") - 1, n_chunks - 1)
    return Alignment(
        boundaries=boundaries,
        teacher_pos=teacher_pos.astype(np.int64),
        student_pos=student_pos.astype(np.int64),
        teacher_chunk=teacher_chunk.astype(np.int64),
        student_chunk=student_chunk.astype(np.int64),
    )
