"""Vocabulary maps teacher -> student by equal byte strings, special tokens by role.

A teacher id maps to the student id whose exact bytes are equal (the student's regular token
preferred over its byte-fallback twin); special tokens map by role (bos, eos, pad, unk, chat
turn start/end) or by identical content; everything else is unmapped (-1). The losses put the
probability of unmapped ids in one OTHER bucket, so a map never sends mass to a wrong token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avokit.align.bytes import TokenBytes
from avokit.records import TeacherRecords

# How each teacher id was mapped (int8 codes in VocabMap.how).
UNMAPPED, BY_BYTES, BY_ROLE, BY_CONTENT = 0, 1, 2, 3

# Well-known special-token spellings per role, in order of preference. A token's spelling
# decides its role before the tokenizer's declared ids do: SmolLM2's GGUF declares the chat
# marker <|im_start|> as BOS, but a document starts after <|endoftext|>. Tokenizers with one
# document separator (GPT-2, Qwen, SmolLM2) use <|endoftext|> as both start and end.
ROLE_SPELLINGS: dict[str, tuple[str, ...]] = {
    "bos": ("<bos>", "<s>", "<|startoftext|>", "<|begin_of_text|>", "<|endoftext|>"),
    "eos": ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>"),
    "pad": ("<pad>", "<|pad|>", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>",),
    "turn_start": ("<start_of_turn>", "<|im_start|>", "<|start|>", "<|start_header_id|>"),
    "turn_end": ("<end_of_turn>", "<|im_end|>", "<|end|>", "<|eot_id|>"),
}
_KNOWN_SPELLINGS = {s.encode("utf-8"): role for role, ss in ROLE_SPELLINGS.items() for s in ss}


def special_roles(tb: TokenBytes, tok: Any | None = None) -> dict[str, int]:
    """Role -> id of a tokenizer's special tokens (bos, eos, pad, unk, turn_start, turn_end).

    Known spellings decide first (see ``ROLE_SPELLINGS``); a role no spelling fills takes the
    tokenizer object's declared ``<role>_token_id``, unless that token is a known spelling of
    another role (a chat marker declared as BOS is still a chat marker).
    """
    by_content = {tb.table[i]: i for i in np.flatnonzero(tb.special).tolist()}
    roles: dict[str, int] = {}
    for role, spellings in ROLE_SPELLINGS.items():
        for s in spellings:
            idx = by_content.get(s.encode("utf-8"))
            if idx is not None:
                roles[role] = idx
                break
    if tok is not None:
        for role in ("bos", "eos", "pad", "unk"):
            idx = getattr(tok, f"{role}_token_id", None)
            if role in roles or not isinstance(idx, int) or not 0 <= idx < tb.size:
                continue
            if _KNOWN_SPELLINGS.get(tb.table[idx], role) == role:
                roles[role] = idx
    return roles


@dataclass(frozen=True)
class MapCoverage:
    """How much of a teacher the map carries over to the student.

    - vocab_share: mapped ids / all teacher ids; regular_share: the same over non-special,
      non-empty ids (the ones that can appear inside text)
    - count_share: share of the given token occurrences (gold tokens or counts) that map
    - topk_mass_share: share of the teacher's top-k probability mass on mapped ids
    """

    vocab_share: float
    regular_share: float
    count_share: float | None = None
    topk_mass_share: float | None = None
    n_tokens: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict for JSON reports."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class VocabMap:
    """Teacher id -> student id.

    - teacher_to_student: int64 [V_teacher], -1 = unmapped
    - how: int8 [V_teacher], UNMAPPED / BY_BYTES / BY_ROLE / BY_CONTENT
    - roles: role -> (teacher id, student id) for the special tokens mapped by role
    """

    teacher_name: str
    student_name: str
    teacher_to_student: np.ndarray
    how: np.ndarray
    regular: np.ndarray = field(repr=False)  # bool [V_teacher]: non-special, non-empty bytes
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def n_mapped(self) -> int:
        """Number of teacher ids with a student id."""
        return int((self.teacher_to_student >= 0).sum())

    def map_ids(self, ids: np.ndarray) -> np.ndarray:
        """Map teacher ids of any shape; ids beyond the tokenizer (padded logits) or < 0 give -1."""
        arr = np.asarray(ids, dtype=np.int64)
        ok = (arr >= 0) & (arr < self.teacher_to_student.shape[0])
        out = np.full(arr.shape, -1, dtype=np.int64)
        out[ok] = self.teacher_to_student[arr[ok]]
        return out

    def coverage(
        self,
        token_counts: np.ndarray | None = None,
        records: Iterable[TeacherRecords] | None = None,
    ) -> MapCoverage:
        """Coverage of the vocabulary, and on a corpus if given.

        Args:
            token_counts: float/int [V_teacher] occurrences of each teacher id on a corpus.
            records: teacher records; their gold tokens add to the counts and their top-k
                log-probs give the share of top-k probability mass that maps.
        """
        mapped = self.teacher_to_student >= 0
        v = max(1, mapped.shape[0])
        regular_n = max(1, int(self.regular.sum()))
        counts = np.zeros(mapped.shape[0], dtype=np.float64)
        if token_counts is not None:
            tc = np.asarray(token_counts, dtype=np.float64)
            if tc.shape[0] > counts.shape[0]:  # padded vocab: extra ids never map
                counts = np.zeros(tc.shape[0], dtype=np.float64)
            counts[: tc.shape[0]] += tc
        mass_mapped = mass_total = 0.0
        unmappable = 0  # gold ids outside the vocabulary: tokens that never map
        have_records = False
        for rec in records or ():
            have_records = True
            ids = rec.token_ids.astype(np.int64)
            inside = (ids >= 0) & (ids < counts.shape[0])
            np.add.at(counts, ids[inside], 1.0)
            unmappable += int(ids.shape[0] - inside.sum())
            probs = np.exp(rec.topk_logprobs.astype(np.float64))
            mass_total += float(probs.sum())
            mass_mapped += float(probs[self.map_ids(rec.topk_ids) >= 0].sum())
        full_mapped = np.zeros(counts.shape[0], dtype=bool)
        full_mapped[: mapped.shape[0]] = mapped
        total = float(counts.sum()) + unmappable
        return MapCoverage(
            vocab_share=float(mapped.sum()) / v,
            regular_share=float((mapped & self.regular).sum()) / regular_n,
            count_share=float(counts[full_mapped].sum()) / total if total > 0 else None,
            topk_mass_share=mass_mapped / mass_total if have_records and mass_total > 0 else None,
            n_tokens=int(total),
        )


def build_vocab_map(
    teacher: TokenBytes,
    student: TokenBytes,
    teacher_tok: Any | None = None,
    student_tok: Any | None = None,
) -> VocabMap:
    """Map every teacher id to the student id with equal bytes, specials by role.

    Args:
        teacher, student: byte tables from :func:`avokit.align.bytes.byteify`.
        teacher_tok, student_tok: the tokenizer objects, if at hand, so their declared
            bos/eos/pad/unk ids decide the roles.

    Returns:
        A :class:`VocabMap`; ``teacher_to_student`` is int64 [teacher.size].
    """
    vt = teacher.size
    out = np.full(vt, -1, dtype=np.int64)
    how = np.zeros(vt, dtype=np.int8)
    regular = np.zeros(vt, dtype=bool)
    preferred = student.preferred  # regular student token beats its byte-fallback twin
    for i, b in enumerate(teacher.table):
        if not b or teacher.special[i]:
            continue
        regular[i] = True
        j = preferred.get(b)
        if j is not None:
            out[i] = j
            how[i] = BY_BYTES
    # Special tokens: identical content first (e.g. <|endoftext|> on both sides), then role.
    student_special = {student.table[j]: j for j in np.flatnonzero(student.special).tolist()}
    for i in np.flatnonzero(teacher.special).tolist():
        j = student_special.get(teacher.table[i])
        if j is not None:
            out[i] = j
            how[i] = BY_CONTENT
    t_roles = special_roles(teacher, teacher_tok)
    s_roles = special_roles(student, student_tok)
    roles: dict[str, tuple[int, int]] = {}
    for role, ti in t_roles.items():
        sj = s_roles.get(role)
        if sj is None or not teacher.special[ti]:
            continue
        roles[role] = (ti, sj)
        if how[ti] == UNMAPPED:
            out[ti] = sj
            how[ti] = BY_ROLE
    return VocabMap(
        teacher_name=teacher.name,
        student_name=student.name,
        teacher_to_student=out,
        how=how,
        regular=regular,
        roles=roles,
    )


def first_token_map(
    exact: np.ndarray,
    teacher: TokenBytes,
    student: TokenBytes,
    student_tok: Any | None = None,
) -> np.ndarray:
    """Teacher id -> the student token its bytes *start with* (for the top-k KD buckets).

    At a common boundary the teacher predicts its next token, the student its own. When the
    teacher's vocabulary is larger, its likely tokens are often longer than any student token
    (`` then``, `` there`` where the student has `` the``): with equal-bytes matching their mass
    is not counted for `` the``, although for the student each of them *starts* with `` the``.
    The bucket of `` the`` then holds only the exact token's probability and teaches the student
    to under-predict it. This map sends every teacher token to the first token of the student's
    own spelling of its bytes, so a student bucket gathers the mass of every teacher token that
    begins with it.

    ``exact`` (int64 [V_teacher], from :func:`build_vocab_map`) is kept where it maps; special
    tokens are never remapped. For the other regular tokens: the first id of
    ``student_tok``'s encoding of the bytes when they are valid UTF-8 and that token's bytes are
    a prefix of them (a tokenizer that adds a dummy-prefix space fails this test), else the
    longest student token that is a prefix of the bytes, else -1. Returns int64 [V_teacher].
    """
    out: np.ndarray = np.asarray(exact, dtype=np.int64).copy()
    if out.shape != (teacher.size,):
        raise ValueError(f"exact map has shape {out.shape}, teacher has {teacher.size} ids")
    todo = [i for i, b in enumerate(teacher.table) if out[i] < 0 and b and not teacher.special[i]]
    preferred = student.preferred
    if student_tok is not None and todo:
        texts: list[str] = []
        ids: list[int] = []
        for i in todo:
            try:
                texts.append(teacher.table[i].decode("utf-8"))
            except UnicodeDecodeError:
                continue  # a piece of one character: only the byte prefix can be matched
            ids.append(i)
        encode = getattr(student_tok, "encode_batch", None)
        if encode is not None:  # a raw tokenizers.Tokenizer
            encoded = [e.ids for e in encode(texts, add_special_tokens=False)]
        else:
            encoded = student_tok(texts, add_special_tokens=False)["input_ids"]
        for i, first in zip(ids, encoded, strict=True):
            if not first:
                continue
            j = int(first[0])
            sb = student.table[j] if 0 <= j < student.size else b""
            if sb and not student.special[j] and teacher.table[i].startswith(sb):
                out[i] = preferred.get(sb, j)
    # the fallback, only for what the tokenizer did not place
    longest = max((len(b) for b in preferred), default=0)
    for i in todo:
        if out[i] >= 0:
            continue
        b = teacher.table[i]
        for n in range(min(len(b), longest), 0, -1):
            hit = preferred.get(b[:n])
            if hit is not None:
                out[i] = hit
                break
    return out
