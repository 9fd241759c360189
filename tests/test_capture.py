"""Capture against a tiny random Llama teacher: exactness, resume, sharding, refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avokit.cache import CacheReader, load_cache_tokenizer
from avokit.capture import parse_shard, run_capture, stored_vs_exact_kl
from avokit.errors import AvokitError, CacheError
from avokit.recipe import Recipe, recipe_from_dict
from avokit.records import TeacherRecords
from avokit.teachers import HFTeacher, Teacher, TeacherInfo
from avokit.teachers.scoring import word_start_mask

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.",
    "Café au lait costs €3 — naïve résumé.\nA second line with   spaces\tand a tab.",
    "Numbers 1234567 and 3.14159 split into digits, maybe; commas, too!",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells.",
    "In the beginning the universe was created. This has made a lot of people angry.",
    "A long time ago in a galaxy far, far away there was a tiny language model.",
    "Emoji 🙂 and CJK 漢字 characters are several bytes each in UTF-8 encoding.",
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a byte-level BPE tokenizer, saved as a HF model dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from avokit.student import train_student_tokenizer

    out = tmp_path_factory.mktemp("teacher")
    tok = train_student_tokenizer(TEXTS * 3, 320, out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper than init so top-k is not flat
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(out)
    return out


def make_recipe(root: Path, teacher_dir: Path, corpus_file: Path, **capture: object) -> Recipe:
    data = {
        "name": "cap",
        "runs_dir": str(root),
        "corpus": {"sources": [{"kind": "jsonl", "path": str(corpus_file)}],
                   "min_chars": 20, "max_chars": 200, "heldout_fraction": 0.25},
        "teachers": [{"name": "tiny", "kind": "hf", "path": str(teacher_dir), "max_length": 64,
                      "device": "cpu"}],
        "capture": {"top_k": 8, "batch_size": 3, "docs_per_shard": 2, **capture},
    }
    return recipe_from_dict(data, root)


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (byte-identity checks)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Killed(RuntimeError):
    """Stands in for a kill -9 in the middle of a capture."""


class DiesAfter(Teacher):
    """Wraps a real teacher and dies on the n-th ``score`` call."""

    def __init__(self, inner: Teacher, calls: int) -> None:
        self.inner, self.calls = inner, calls

    @property
    def info(self) -> TeacherInfo:
        return self.inner.info

    @property
    def token_bytes(self):  # type: ignore[no-untyped-def]
        return self.inner.token_bytes

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self.inner.tokenizer  # type: ignore[attr-defined]

    def tokenize(self, texts: list[str]):  # type: ignore[no-untyped-def]
        return self.inner.tokenize(texts)

    def score(self, texts: list[str], doc_ids: list[str], top_k: int, *,
              inside_top_k: int = 0) -> list[TeacherRecords]:
        self.calls -= 1
        if self.calls < 0:
            raise Killed("killed mid-capture")
        return self.inner.score(texts, doc_ids, top_k, inside_top_k=inside_top_k)


def test_capture_matches_full_logits(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    recipe = make_recipe(tmp_path / "runs", teacher_dir, corpus_file, logprob_bits=16)
    paths = run_capture(recipe)
    cache = recipe.run_dir / "cache" / "tiny"
    assert all(p.is_file() for p in paths) and len(paths) == 4
    teacher = HFTeacher.from_dir(teacher_dir, device="cpu")
    reader = CacheReader(cache, expect_teacher_fingerprint=teacher.info.fingerprint,
                         expect_tokenizer_fingerprint=teacher.info.tokenizer_fingerprint)
    assert len(reader) == len(TEXTS)
    assert len(load_cache_tokenizer(cache)) == len(teacher.tokenizer)
    bound = reader.manifest.max_logprob_error
    mask = torch.from_numpy(word_start_mask(teacher.token_bytes, teacher.model.config.vocab_size))
    kls = []
    for doc_id in reader:
        rec = reader[doc_id]
        text = next(t for t in TEXTS if doc_id.endswith(__import__("hashlib").sha256(t.encode()).hexdigest()[:16]))
        ids = teacher.tokenize([text])[0].ids.tolist()
        np.testing.assert_array_equal(rec.token_ids, ids)
        assert rec.byte_ends[-1] == len(text.encode("utf-8"))
        with torch.no_grad():
            logits = teacher.model(torch.tensor([[teacher.start_token_id] + ids])).logits[0, :-1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        gold = logp[torch.arange(len(ids)), torch.tensor(ids)].numpy()
        np.testing.assert_allclose(rec.gold_logprob, gold, atol=1e-4)
        exact_at_ids = torch.gather(logp, 1, torch.from_numpy(rec.topk_ids).long()).numpy()
        # stored values sit within the quantisation bound of the exact log-prob of the same id
        assert np.abs(rec.topk_logprobs - exact_at_ids).max() <= bound + 1e-4
        # and they are the true top-k: the k-th stored is >= every id left out (fp slack)
        top = logp.topk(8, dim=-1).values.numpy()
        np.testing.assert_allclose(np.sort(exact_at_ids, axis=1), np.sort(top, axis=1), atol=1e-4)
        word = torch.logsumexp(logp[:, mask], dim=-1).numpy()
        np.testing.assert_allclose(rec.boundary_logmass, word, atol=1e-4)
        kls.append(stored_vs_exact_kl(rec.topk_logprobs, exact_at_ids))
    assert 0 <= max(kls) < 1e-6


def test_resume_after_kill_is_byte_identical(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    clean = make_recipe(tmp_path / "clean", teacher_dir, corpus_file)
    run_capture(clean)
    killed = make_recipe(tmp_path / "killed", teacher_dir, corpus_file)

    def dying(config, base_dir):  # type: ignore[no-untyped-def]
        return DiesAfter(HFTeacher.from_dir(config.path, name=config.name, device="cpu", max_length=64), calls=2)

    with pytest.raises(Killed):
        run_capture(killed, teacher_loader=dying)
    cache = killed.run_dir / "cache" / "tiny"
    assert not (cache / "manifest.json").exists()
    done_before = sorted(p.name for p in (cache / "progress").iterdir())
    assert done_before  # the first shard survived the kill
    run_capture(killed)
    assert tree(cache) == tree(clean.run_dir / "cache" / "tiny")


def test_two_machines_equal_one(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    one = make_recipe(tmp_path / "one", teacher_dir, corpus_file)
    run_capture(one)
    a = make_recipe(tmp_path / "a", teacher_dir, corpus_file)
    b = make_recipe(tmp_path / "b", teacher_dir, corpus_file)
    got_a = run_capture(a, shard=parse_shard("0/2"))
    got_b = run_capture(b, shard=(1, 2))
    assert {p.name for p in got_a}.isdisjoint(p.name for p in got_b)
    cache_a, cache_b = a.run_dir / "cache" / "tiny", b.run_dir / "cache" / "tiny"
    assert not (cache_a / "manifest.json").exists()
    for p in got_b:  # "merge": copy machine b's shards and progress records over
        shutil.copy2(p, cache_a / p.name)
        shutil.copy2(cache_b / "progress" / f"{p.name}.json", cache_a / "progress" / f"{p.name}.json")

    def must_not_load(config, base_dir):  # type: ignore[no-untyped-def]
        raise AssertionError("every shard is present: the teacher must not be loaded")

    run_capture(a, teacher_loader=must_not_load)
    assert tree(cache_a) == tree(one.run_dir / "cache" / "tiny")


def test_changed_settings_are_refused_not_overwritten(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    recipe = make_recipe(tmp_path / "r", teacher_dir, corpus_file)
    run_capture(recipe)
    before = tree(recipe.run_dir / "cache" / "tiny")
    other = make_recipe(tmp_path / "r", teacher_dir, corpus_file, top_k=4)
    with pytest.raises(CacheError, match=r"capture.json: .*another corpus, top_k"):
        run_capture(other)
    assert tree(recipe.run_dir / "cache" / "tiny") == before


def test_bad_shard_and_teacher_names(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    for bad in ("2/2", "x/3", "1"):
        with pytest.raises(AvokitError, match="--shard"):
            parse_shard(bad)
    recipe = make_recipe(tmp_path / "r", teacher_dir, corpus_file)
    with pytest.raises(AvokitError, match="no teacher 'nope'"):
        run_capture(recipe, teacher="nope")


def test_two_processes_on_one_folder_equal_one(tmp_path: Path, teacher_dir: Path, corpus_file: Path) -> None:
    """``avokit capture --shard 0/2`` and ``--shard 1/2`` running at once on one run folder (a
    shared filesystem) finish the same cache as one process: manifest, shards, progress."""
    import os
    import subprocess
    import sys

    import yaml

    from avokit.cache.manifest import read_manifest
    from avokit.corpus import build_corpus

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def capture(recipe_file: Path, *shard: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "avokit", "capture", str(recipe_file), *shard],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # the reference is one process with the same thread count as each shard's: float32 kernels
    # may sum in another order with another thread count (AVX-512 matmuls do), and this test is
    # about sharding, not about kernels
    one = make_recipe(tmp_path / "one", teacher_dir, corpus_file)
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one.model_dump(mode="json")))
    single = capture(tmp_path / "one.yaml")
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-2000:]
    two = make_recipe(tmp_path / "two", teacher_dir, corpus_file)
    build_corpus(two)  # once, as a cluster builds it before capture
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(two.model_dump(mode="json")))
    procs = [capture(recipe_file, "--shard", f"{i}/2") for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    cache, reference = two.run_dir / "cache" / "tiny", one.run_dir / "cache" / "tiny"
    assert len(read_manifest(cache).shards) == len(read_manifest(reference).shards) >= 2  # both had work
    assert tree(cache) == tree(reference)
