"""Unit tests for vocabulary maps (``avokit.align.vocab_map``) and byte offsets
(``avokit.align.offsets``): role detection from declared ids, coverage arithmetic, edge special
tokens, round-trip error messages, and how the Rust tokenizer is called.

Every tokenizer is built in-test (hand-made byte tables, or a tiny BPE trained in milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from align_support import byte_table as _table
from align_support import time_limit, tiny_bpe
from tokenizers import (
    Encoding,
    Tokenizer,
    models,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast

from avokit.align.bytes import TokenBytes, byteify
from avokit.align.offsets import (
    _encode_batch,
    offsets_from_ids,
    tokenize_batch_with_offsets,
    tokenize_with_offsets,
)
from avokit.align.vocab_map import (
    BY_BYTES,
    BY_CONTENT,
    BY_ROLE,
    UNMAPPED,
    VocabMap,
    build_vocab_map,
    special_roles,
)
from avokit.errors import RoundTripError
from avokit.records import TeacherRecords

# ---------------------------------------------------------------------------------------------
# offsets: special tokens at the edges of a document


def _edge_table() -> TokenBytes:
    # 0 <s>, 1 </s>, 2 <bos2> (specials); 3 "h", 4 "i", 5 " "
    return _table([b"<s>", b"</s>", b"<bos2>", b"h", b"i", b" "], special=frozenset({0, 1, 2}),
                  name="edge")


def test_leading_special_spelled_by_the_text_is_kept() -> None:
    """A special token whose bytes start the text is the text's own token, not an added BOS."""
    doc = offsets_from_ids([0, 3, 4], "<s>hi", _edge_table())
    assert doc.ids.tolist() == [0, 3, 4]
    assert doc.byte_ends.tolist() == [3, 4, 5]


def test_trailing_special_spelled_by_the_text_is_kept() -> None:
    """A special token whose bytes end the text is kept (an EOS check that looked at an empty
    suffix would drop it and fail the round trip)."""
    doc = offsets_from_ids([3, 4, 1], "hi</s>", _edge_table())
    assert doc.ids.tolist() == [3, 4, 1]
    assert doc.byte_ends.tolist() == [1, 2, 6]


def test_a_text_that_is_exactly_one_special_token() -> None:
    """The whole text is the special token: it must stay (start and end checks both at 0..n)."""
    doc = offsets_from_ids([1], "</s>", _edge_table())
    assert doc.ids.tolist() == [1] and doc.byte_ends.tolist() == [4] and doc.n_bytes == 4
    doc = offsets_from_ids([0], "<s>", _edge_table())
    assert doc.ids.tolist() == [0] and doc.byte_ends.tolist() == [3]


def test_two_added_leading_specials_are_both_dropped() -> None:
    """Two BOS-like tokens absent from the text (e.g. BOS + a system marker) are both removed;
    a counter that does not advance would loop forever."""
    with time_limit(5.0):
        doc = offsets_from_ids([0, 2, 3, 5, 4, 1, 1], "h i", _edge_table())
    assert doc.ids.tolist() == [3, 5, 4]
    assert doc.byte_ends.tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# offsets: ids, range checks and the round-trip error message


def _byte_tokens(name: str = "bytes") -> TokenBytes:
    """One token per byte value: the id of a byte is the byte itself."""
    return _table([bytes([i]) for i in range(256)], name=name)


def test_ids_of_shape_one_by_n_are_flattened() -> None:
    """A [1, n] id array (a batch of one, as tokenizers return with tensors) is read as n ids."""
    tb = _byte_tokens()
    ids = np.array([list(b"ab c")], dtype=np.int32)
    doc = offsets_from_ids(ids, "ab c", tb)
    assert doc.ids.tolist() == list(b"ab c")
    assert doc.ids.dtype == np.int64 and doc.byte_ends.dtype == np.int64
    assert doc.byte_ends.tolist() == [1, 2, 3, 4]


def test_id_equal_to_the_vocabulary_size_is_a_round_trip_error_naming_it() -> None:
    """Id == size is out of range (off by one): a RoundTripError at byte 0 naming the tokenizer
    and the vocabulary size, not an IndexError."""
    tb = _table([b"a", b"b", b"c"], name="tiny")
    with pytest.raises(RoundTripError) as err:
        offsets_from_ids([0, 3], "ab", tb)
    assert err.value.position == 0
    assert str(err.value) == ("tokenizer 'tiny' does not reproduce the text at byte 0: "
                              "token id out of range for a vocabulary of 3")
    # the largest valid id is accepted
    assert offsets_from_ids([0, 2], "ac", tb).byte_ends.tolist() == [1, 2]


@pytest.mark.parametrize("text, spelled, pos, got, want", [
    # the message quotes joined[pos-8 : pos+8] and text[pos-8 : pos+8] exactly
    ("abcdefghijklmnopqrstuvwxyz", b"abcdefghijXlmnopqrstuvwxyz", 10,
     b"cdefghijXlmnopqr", b"cdefghijklmnopqr"),
    # near the start the quoted window begins at byte 0 (not 1) on both sides
    ("abcdefghijklmnop", b"abcXefghijklmnop", 3, b"abcXefghijk", b"abcdefghijk"),
])
def test_round_trip_error_quotes_eight_bytes_either_side_of_the_difference(
        text: str, spelled: bytes, pos: int, got: bytes, want: bytes) -> None:
    """The error names the tokenizer and the byte, and shows both sides around it."""
    with pytest.raises(RoundTripError) as err:
        offsets_from_ids(list(spelled), text, _byte_tokens("bt"))
    assert err.value.position == pos
    assert str(err.value) == (f"tokenizer 'bt' does not reproduce the text at byte {pos}: "
                              f"tokens give {got!r}, text has {want!r}")


# ---------------------------------------------------------------------------------------------
# offsets: calling the Rust tokenizer


def _template_bpe(lowercase: bool = False) -> Tokenizer:
    """A tiny byte-level BPE whose post-processor adds <s> ... </s> (ids 0 and 1)."""
    tok = tiny_bpe(["hi there, hello there", "the other one"], ["<s>", "</s>"], 280, lowercase)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return tok


@pytest.fixture(scope="module")
def template_tok() -> Tokenizer:
    return _template_bpe()


class _Spy:
    """A bare-tokenizer stand-in that records which batch encoder is called."""

    def __init__(self, tok: Tokenizer, fast: bool = True) -> None:
        self._tok = tok
        self.calls: list[tuple[str, bool]] = []
        if fast:
            self.encode_batch_fast = self._fast

    def _fast(self, texts: list[str], add_special_tokens: bool = True) -> list[Encoding]:
        self.calls.append(("encode_batch_fast", add_special_tokens))
        return self._tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[Encoding]:
        self.calls.append(("encode_batch", add_special_tokens))
        return self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)


class _WrapperWithItsOwnEncodeBatch:
    """A wrapper (it has ``backend_tokenizer``) that also offers an ``encode_batch`` of its own:
    it is still a wrapper, and its own method must not be called."""

    def __init__(self, tok: Tokenizer) -> None:
        self.backend_tokenizer = tok

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> Iterator[Any]:
        raise AssertionError("the wrapper's encode_batch was used instead of its backend")


def test_texts_spelling_the_template_specials_round_trip(template_tok: Tokenizer) -> None:
    """No special tokens are added: a text that spells <s>/</s> itself keeps exactly those, for
    a bare tokenizer and a transformers wrapper (added ones would double them)."""
    text = "<s>hi there</s>"
    assert template_tok.encode(text).ids[:2] == [0, 0]  # the template does add them by default
    tb = byteify(template_tok, "tpl")
    wrapped = PreTrainedTokenizerFast(tokenizer_object=template_tok)
    for tok in (template_tok, wrapped):
        doc = tokenize_with_offsets(tok, text, tb)
        assert doc.ids.tolist() == template_tok.encode(text, add_special_tokens=False).ids
        assert doc.ids[0] == 0 and doc.ids[-1] == 1
        assert doc.byte_ends[0] == 3 and doc.byte_ends[-1] == len(text)


@pytest.mark.parametrize("with_offsets", [False, True])
def test_encode_batch_adds_no_special_tokens(template_tok: Tokenizer, with_offsets: bool) -> None:
    """Both encoders (fast without offsets, full with offsets) run with add_special_tokens=False,
    on a bare tokenizer and on a backend that has no encode_batch_fast."""
    texts = ["hi there", "hello"]
    want = [template_tok.encode(t, add_special_tokens=False).ids for t in texts]
    assert want[0] != template_tok.encode(texts[0]).ids
    got = _encode_batch(template_tok, texts, with_offsets=with_offsets)
    assert [e.ids for e in got] == want
    old = _Spy(template_tok, fast=False)
    assert [e.ids for e in _encode_batch(old, texts, with_offsets=with_offsets)] == want
    assert old.calls == [("encode_batch", False)]


def test_encode_batch_offsets_only_when_asked(template_tok: Tokenizer) -> None:
    """Without offsets the fast (offset-free) encoder is used; with offsets the full one, whose
    character spans are real."""
    spy = _Spy(template_tok)
    _encode_batch(spy, ["hi there"], with_offsets=False)
    assert spy.calls == [("encode_batch_fast", False)]
    spy.calls.clear()
    (enc,) = _encode_batch(spy, ["hi there"], with_offsets=True)
    assert spy.calls == [("encode_batch", False)]
    assert enc.offsets[-1][1] == len("hi there")


def test_tokenize_batch_uses_the_fast_encoder_then_offsets_only_for_failures() -> None:
    """The first pass needs ids only (fast encoder); only a document that fails the round trip
    is re-encoded with offsets, and the failure is reported with its index."""
    tok = _template_bpe(lowercase=True)
    tb = byteify(tok, "lower")
    spy = _Spy(tok)
    issues: list[tuple[int, RoundTripError]] = []
    docs = tokenize_batch_with_offsets(spy, ["hi there", "Hi"], tb, lossy="offsets", issues=issues)
    assert spy.calls == [("encode_batch_fast", False), ("encode_batch", False)]
    assert [i for i, _ in issues] == [1] and issues[0][1].position == 0
    assert docs[0].byte_ends[-1] == len("hi there") and docs[1].byte_ends.tolist()[-1] == 2


def test_a_wrapper_with_its_own_encode_batch_is_still_a_wrapper(template_tok: Tokenizer) -> None:
    """An object with ``backend_tokenizer`` is encoded through that backend (as byteify reads
    it), even if it also has an ``encode_batch`` method."""
    wrapper = _WrapperWithItsOwnEncodeBatch(template_tok)
    tb = byteify(template_tok, "tpl")
    (doc,) = tokenize_batch_with_offsets(wrapper, ["hi there"], tb)
    assert doc.ids.tolist() == template_tok.encode("hi there", add_special_tokens=False).ids
    assert doc.byte_ends[-1] == len("hi there")


# ---------------------------------------------------------------------------------------------
# vocab_map: special roles


def _specials_table(pieces: list[bytes], n_special: int, name: str = "t") -> TokenBytes:
    """The first ``n_special`` pieces are special tokens."""
    return _table(pieces, special=frozenset(range(n_special)), name=name)


def test_declared_ids_fill_every_role_no_spelling_fills() -> None:
    """bos/eos/pad/unk come from the declared ``<role>_token_id`` when their spelling is not a
    known one, including id 0."""
    tb = _specials_table([b"[A]", b"[B]", b"[C]", b"[D]", b"x"], 4)
    tok = SimpleNamespace(bos_token_id=0, eos_token_id=1, pad_token_id=2, unk_token_id=3)
    assert special_roles(tb, tok) == {"bos": 0, "eos": 1, "pad": 2, "unk": 3}
    assert special_roles(tb) == {}


def test_a_spelled_role_is_kept_and_the_next_declared_role_still_read() -> None:
    """A role found by spelling is not overridden by the declared id, and reading the declared
    ids goes on to the later roles."""
    tb = _specials_table([b"[X]", b"<s>", b"[E]", b"y"], 3)
    tok = SimpleNamespace(bos_token_id=0, eos_token_id=2, pad_token_id=None, unk_token_id=None)
    assert special_roles(tb, tok) == {"bos": 1, "eos": 2}


def test_declared_id_past_the_table_is_ignored() -> None:
    """A declared id equal to the table size (a padded id) is skipped, not read out of range."""
    tb = _specials_table([b"[P]", b"z"], 1)
    tok = SimpleNamespace(bos_token_id=None, eos_token_id=None, pad_token_id=2, unk_token_id=0)
    assert special_roles(tb, tok) == {"unk": 0}


def test_a_chat_marker_declared_as_bos_is_not_bos() -> None:
    """SmolLM2 declares <|im_start|> as BOS: it stays turn_start only."""
    tb = _specials_table([b"<|im_start|>", b"<|im_end|>", b"w"], 2)
    tok = SimpleNamespace(bos_token_id=0, eos_token_id=1, pad_token_id=None, unk_token_id=None)
    assert special_roles(tb, tok) == {"turn_start": 0, "turn_end": 1}


# ---------------------------------------------------------------------------------------------
# vocab_map: build_vocab_map


def _wordlevel(vocab: list[str], specials: list[str], **declared: str) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over ``specials + vocab`` with the given declared special tokens."""
    words = specials + vocab
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **declared)


def test_declared_bos_of_either_tokenizer_maps_by_role() -> None:
    """The teacher's and the student's declared BOS (unknown spellings) are read from their
    tokenizer objects and map to each other by role."""
    t_tok = _wordlevel(["a", "b"], ["[T-BOS]"], bos_token="[T-BOS]")
    s_tok = _wordlevel(["b", "a"], ["[S-BOS]", "[PAD]"], bos_token="[S-BOS]")
    teacher, student = byteify(t_tok, "teach"), byteify(s_tok, "stud")
    vm = build_vocab_map(teacher, student, t_tok, s_tok)
    assert vm.teacher_to_student.tolist() == [0, 3, 2]
    assert vm.how.tolist() == [BY_ROLE, BY_BYTES, BY_BYTES]
    assert vm.roles == {"bos": (0, 0)}
    assert (vm.teacher_name, vm.student_name) == ("teach", "stud")
    assert vm.teacher_to_student.dtype == np.int64 and vm.how.dtype == np.int8
    assert vm.regular.tolist() == [False, True, True]
    # without the tokenizer objects no role is known
    bare = build_vocab_map(teacher, student)
    assert bare.teacher_to_student.tolist() == [-1, 3, 2] and bare.roles == {}
    only_teacher = build_vocab_map(teacher, student, t_tok, None)
    only_student = build_vocab_map(teacher, student, None, s_tok)
    assert only_teacher.roles == {} and only_student.roles == {}


def test_identical_special_content_maps_by_content() -> None:
    """A special token both sides spell the same (no role spelling) maps BY_CONTENT."""
    teacher = _table([b"q", b"<|fim_prefix|>", b"<|x|>"], special=frozenset({1, 2}), name="t")
    student = _table([b"<|y|>", b"<|fim_prefix|>", b"q"], special=frozenset({0, 1}), name="s")
    vm = build_vocab_map(teacher, student)
    assert vm.teacher_to_student.tolist() == [2, 1, -1]
    assert vm.how.tolist() == [BY_BYTES, BY_CONTENT, UNMAPPED]
    assert vm.how.dtype == np.int8


def test_a_role_the_student_lacks_does_not_stop_later_roles() -> None:
    """The teacher has bos and eos; the student only eos (another spelling): eos still maps."""
    teacher = _table([b"<s>", b"</s>", b"k"], special=frozenset({0, 1}), name="t")
    student = _table([b"k", b"<eos>"], special=frozenset({1}), name="s")
    vm = build_vocab_map(teacher, student)
    assert vm.roles == {"eos": (1, 1)}
    assert vm.teacher_to_student.tolist() == [-1, 1, 0]
    assert vm.how.tolist() == [UNMAPPED, BY_ROLE, BY_BYTES]


# ---------------------------------------------------------------------------------------------
# vocab_map: coverage


def _vmap(t2s: list[int], regular: list[bool]) -> VocabMap:
    arr = np.array(t2s, dtype=np.int64)
    return VocabMap("t", "s", arr, (arr >= 0).astype(np.int8), np.array(regular, dtype=bool))


def _record(gold: list[int], topk: list[list[int]], probs: list[list[float]]) -> TeacherRecords:
    n, k = len(gold), (len(topk[0]) if topk else 2)
    return TeacherRecords(
        doc_id="d", token_ids=np.array(gold, np.int32), byte_ends=np.arange(1, n + 1, dtype=np.int64),
        gold_logprob=np.zeros(n, np.float32), topk_ids=np.array(topk, np.int32).reshape(n, k),
        topk_logprobs=np.log(np.array(probs, np.float32)).reshape(n, k).astype(np.float32),
        boundary_logmass=np.zeros(n, np.float32),
    )


def test_coverage_of_a_one_id_vocabulary_with_no_corpus() -> None:
    """A single mapped id gives shares of exactly 1 (the max(1, .) guards only empty maps), and
    with no counts the corpus shares are None (no division by a zero total)."""
    cov = _vmap([0], [True]).coverage()
    assert cov.vocab_share == 1.0 and cov.regular_share == 1.0
    assert cov.count_share is None and cov.topk_mass_share is None and cov.n_tokens == 0
    empty = _vmap([], []).coverage()
    assert (empty.vocab_share, empty.regular_share, empty.count_share) == (0.0, 0.0, None)


def test_coverage_with_counts_longer_than_the_map() -> None:
    """Counts for a padded vocabulary (more ids than the map) keep every count; the extra ids
    never map."""
    cov = _vmap([0, -1, 2], [True, True, True]).coverage(token_counts=np.array([1, 2, 3, 4, 5]))
    assert cov.n_tokens == 15
    assert cov.count_share == pytest.approx(4 / 15)
    assert cov.vocab_share == pytest.approx(2 / 3)


def test_coverage_counts_a_single_gold_token_of_id_zero() -> None:
    """One gold token (id 0, mapped) counts once: count_share 1, n_tokens 1."""
    vm = _vmap([5, -1, -1], [True, True, True])
    cov = vm.coverage(records=[_record([0], [[0, 1]], [[0.5, 0.25]])])
    assert cov.n_tokens == 1
    assert cov.count_share == 1.0
    assert cov.topk_mass_share == pytest.approx(0.5 / 0.75)


def test_coverage_counts_the_last_id_as_itself() -> None:
    """Gold id V-1 is counted at V-1 (mapped), not at V-2 (unmapped)."""
    vm = _vmap([-1, -1, 7], [True, True, True])
    cov = vm.coverage(records=[_record([2, 2, 1], [[2, 0]] * 3, [[0.5, 0.5]] * 3)])
    assert cov.n_tokens == 3
    assert cov.count_share == pytest.approx(2 / 3)


def test_coverage_counts_gold_ids_outside_the_map_as_unmapped() -> None:
    """A gold id past the map's last id, or a negative one, is a token that does not map (as
    ``map_ids`` says), not one of the edge ids it would be clamped to (both map here)."""
    vm = _vmap([3, 7], [True, True])
    cov = vm.coverage(records=[_record([0, 5, -1], [[0, 1], [1, 0], [0, 1]],
                                       [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])])
    assert cov.n_tokens == 3
    assert cov.count_share == pytest.approx(1 / 3)


def test_coverage_sums_top_k_mass_over_every_record() -> None:
    """Top-k masses add up over records (not only the last one), and a student id of 0 counts
    as mapped."""
    vm = _vmap([0, -1, 1], [True, True, True])
    r1 = _record([0], [[0, 1]], [[0.5, 0.25]])  # mapped 0.5 of 0.75
    r2 = _record([1], [[1, 2]], [[0.25, 0.125]])  # mapped 0.125 of 0.375
    cov = vm.coverage(records=[r1, r2])
    assert cov.topk_mass_share == pytest.approx((0.5 + 0.125) / (0.75 + 0.375))
    assert cov.n_tokens == 2 and cov.count_share == pytest.approx(0.5)


def test_coverage_of_an_empty_record_has_no_top_k_share() -> None:
    """A record with no positions gives no mass: topk_mass_share is None, not 0/0."""
    cov = _vmap([0, 1], [True, True]).coverage(records=[_record([], [], [])])
    assert cov.topk_mass_share is None and cov.count_share is None and cov.n_tokens == 0


def test_coverage_gold_id_equal_to_the_vocab_size_is_unmapped_in_every_record() -> None:
    """Gold id V (one past the last id, the first id outside) is an unmapped token, not an
    index into the counts; such tokens add up over records (not only the last record's)."""
    vm = _vmap([3, 7], [True, True])
    r1 = _record([2], [[0, 1]], [[0.5, 0.5]])
    r2 = _record([0, 2], [[0, 1], [1, 0]], [[0.5, 0.5], [0.5, 0.5]])
    cov = vm.coverage(records=[r1, r2])
    assert cov.n_tokens == 3
    assert cov.count_share == pytest.approx(1 / 3)
