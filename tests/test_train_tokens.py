"""Start tokens in packing and the identity map for a teacher that shares the student's tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train import make_docs, make_recipe, write_cache, write_corpus

from avokit.train.data import pack_documents


def test_distinct_bos_is_packed_after_each_separator(tmp_path: Path) -> None:
    """A tokenizer with BOS != EOS: each document reads [eos][bos] doc, as evaluation scores it."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.scoring import resolve_start_token_id

    docs = make_docs(6, 5)
    tok = train_student_tokenizer([d.text for d in docs], 400, tmp_path / "tok")
    tok.bos_token = "<|im_start|>"  # any special token other than EOS will do
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert bos != eos and resolve_start_token_id(tok) == bos
    packed = pack_documents(docs, tok, 32, eos, start_id=bos)
    for d in range(len(docs)):
        start = int(packed.doc_start[d])
        assert packed.stream[start - 2] == eos and packed.stream[start - 1] == bos
        assert packed.is_sep[start - 2] and packed.is_sep[start - 1] and not packed.is_sep[start]
        ids = tok(docs[d].text, add_special_tokens=False)["input_ids"]
        assert packed.stream[start : start + len(ids)].tolist() == ids
    # separators and start tokens carry no bytes: the byte count is exactly the documents' text
    assert int(packed.token_bytes.sum()) == sum(len(d.text.encode("utf-8")) for d in docs)
    assert int(packed.is_sep.sum()) == 2 * len(docs)
    # the same start token as the separator adds nothing
    plain = pack_documents(docs, tok, 32, eos, start_id=eos)
    assert plain.stream.shape[0] == packed.stream.shape[0] - len(docs)


def test_teacher_with_the_students_tokenizer_gets_the_identity_map(tmp_path: Path) -> None:
    """Same vocabulary -> identity map (exact top-k + tail KD). Gemma 3's SentencePiece has
    byte-fallback twins (``<0x41>`` and ``A``), where a map by bytes is *not* the identity."""
    from avokit.align import byteify
    from avokit.align.vocab_map import build_vocab_map
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train.data import read_split
    from avokit.train.kd_data import build_teacher_batch
    from avokit.train.run import teacher_sources

    recipe = make_recipe(tmp_path)
    write_corpus(recipe.run_dir, n_train=6, n_heldout=2)
    train = read_split(recipe.run_dir, "train")
    gemma = registry_tokenizer("gemma3-270m")
    for name in ("smol", "gemma"):
        write_cache(recipe.run_dir / "cache" / name, name, gemma, train)
    tb = byteify(gemma)
    by_bytes = np.asarray(build_vocab_map(tb, tb, gemma, gemma).teacher_to_student)
    identity = np.arange(len(gemma))
    assert not np.array_equal(by_bytes, identity)  # the twins: this test can tell the maps apart
    sources = teacher_sources(recipe, gemma)
    for source in sources:
        assert np.array_equal(source.teacher_to_student, identity)
    packed = pack_documents(train, gemma, 64, gemma.eos_token_id, start_id=gemma.bos_token_id)
    batch = build_teacher_batch(packed, np.arange(packed.n_rows), sources[0], lambda d: 1.0)
    # same tokenization: every target token starts a common boundary (chunks of one token)
    assert batch.s_pos.shape[0] == int((batch.chunk_of_target >= 0).sum()) > 0
    assert batch.topk_student_ids.min() >= 0  # every teacher id is a student id


def test_relative_pretrained_student_loads_from_the_recipe_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``student.pretrained: warm`` means the recipe's folder/warm, whatever the cwd."""
    import torch
    from transformers import AutoModelForCausalLM

    from avokit.student import build_student
    from avokit.train import run_training
    from avokit.train.run import ensure_student_tokenizer

    recipe = make_recipe(tmp_path, steps=2, eval_every=2, checkpoint_every=2, log_every=1)
    write_corpus(recipe.run_dir, n_train=16, n_heldout=2)
    warm = build_student(recipe.student, ensure_student_tokenizer(recipe))
    with torch.no_grad():
        warm.model.norm.weight.fill_(7.0)  # a mark no random init has
    warm.save_pretrained(str(tmp_path / "warm"))
    recipe.student.pretrained = Path("warm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = run_training(recipe, baseline=True, progress=False)
    trained = AutoModelForCausalLM.from_pretrained(str(out))
    assert float(trained.model.norm.weight.detach().mean()) > 6.5
