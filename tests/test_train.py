"""Training: packing, KD batches from a real (tiny) cache, end-to-end KD run, resume, reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from avokit.align import byteify, tokenize_with_offsets
from avokit.recipe import recipe_from_dict
from avokit.records import TeacherRecords
from avokit.train.data import Document, batch_rows, pack_documents, rank_slice

WORDS = ["the", "cat", "dog", "river", "stone", "light", "quiet", "garden", "café", "naïve", "東京", "ran", "sat", "under", "over", "green", "old", "small", "large", "bright", "slowly", "never", "always", "said", "walked", "found", "water"]


def make_docs(n: int, seed: int) -> list[Document]:
    """Seeded pseudo-English documents with multi-byte characters."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        sents = []
        for _ in range(int(rng.integers(3, 7))):
            words = [WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(4, 10)))]
            sents.append(" ".join(words).capitalize() + ".")
        docs.append(Document(f"d{seed}-{i}", " ".join(sents), "test"))
    return docs


def write_corpus(run_dir: Path, n_train: int = 48, n_heldout: int = 8) -> None:
    """corpus/{train,heldout}.parquet in the corpus contract's columns."""
    (run_dir / "corpus").mkdir(parents=True, exist_ok=True)
    for split, docs in (("train", make_docs(n_train, 1)), ("heldout", make_docs(n_heldout, 2))):
        table = pa.table({"doc_id": [d.doc_id for d in docs], "text": [d.text for d in docs],
                          "source": [d.source for d in docs]})
        pq.write_table(table, run_dir / "corpus" / f"{split}.parquet")


def tiny_teacher(tokenizer: Any, seed: int) -> Any:
    """A tiny random Llama over ``tokenizer``'s full vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def teacher_records(model: Any, tokenizer: Any, tb: Any, starts_word: torch.Tensor, doc: Document,
                    k: int, start_id: int) -> TeacherRecords:
    """Exact records of ``doc`` from ``model``'s full logits (the capture contract's positions)."""
    tok = tokenize_with_offsets(tokenizer, doc.text, tb)
    ids = torch.tensor([[start_id] + tok.ids.tolist()[:-1]])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    gold = logp.gather(1, torch.from_numpy(tok.ids)[:, None])[:, 0]
    top = logp.topk(k, dim=-1)
    mass = torch.logsumexp(logp[:, starts_word], dim=-1)
    return TeacherRecords(doc.doc_id, tok.ids.astype(np.int32), tok.byte_ends, gold.numpy(),
                          top.indices.numpy().astype(np.int32), top.values.numpy(), mass.numpy())


def write_cache(cache_dir: Path, name: str, tokenizer: Any, docs: list[Document], k: int = 8) -> None:
    """A real v1 cache of a tiny random teacher, written with avokit.cache's writer."""
    from avokit.cache import CacheSpec, ShardWriter, write_manifest

    model = tiny_teacher(tokenizer, seed=len(name))
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    tb = byteify(tokenizer)  # once per teacher: Gemma's table has 262k entries
    first = np.array([t[:1] in (b" ", b"\n", b"\t") for t in tb.table]) | tb.special
    starts_word = torch.from_numpy(np.concatenate([first, np.zeros(max(0, len(tokenizer) - tb.size), bool)]))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(cache_dir / "tokenizer"))
    spec = CacheSpec(teacher=name, teacher_fingerprint=f"fp-{name}", tokenizer_fingerprint=f"tok-{name}",
                     vocab_size=len(tokenizer), top_k=k, logprob_bits=16)
    with ShardWriter(cache_dir / "shard-00000.arrow", spec, "train") as w:
        for doc in docs:
            w.add(teacher_records(model, tokenizer, tb, starts_word, doc, k, start))
        info = w.close()
    write_manifest(cache_dir, spec, "plan", [info])


def make_recipe(tmp: Path, steps: int = 24, **train: Any) -> Any:
    """A recipe for a ~1M-parameter student over the test corpus."""
    teacher_dir = tmp / "teacher-weights"
    teacher_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "tiny", "runs_dir": str(tmp / "runs"),
        "corpus": {"sources": [{"kind": "builtin", "name": "lambada-passages"}]},
        "teachers": [{"name": "smol", "kind": "hf", "path": str(teacher_dir)},
                     {"name": "gemma", "kind": "hf", "path": str(teacher_dir), "weight": 0.5}],
        "student": {"hidden_size": 128, "intermediate_size": 256, "num_layers": 4, "num_heads": 4,
                    "num_kv_heads": 2, "tokenizer": {"vocab_size": 512}},
        "train": {"steps": steps, "batch_size": 8, "seq_len": 64, "lr": 3e-3, "warmup_steps": 2,
                  "eval_every": 8, "checkpoint_every": 8, "log_every": 4, "eval_max_rows": 8, **train},
    }
    return recipe_from_dict(data, tmp)


def test_packing_covers_every_token_once(tmp_path: Path) -> None:
    from avokit.student import train_student_tokenizer

    docs = make_docs(12, 3)
    tok = train_student_tokenizer([d.text for d in docs], 400, tmp_path / "tok")
    packed = pack_documents(docs, tok, 32, tok.eos_token_id)
    x, y = packed.row_tokens(np.arange(packed.n_rows))
    assert x.shape == (packed.n_rows, 32)
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(x[1:, 0], y[:-1, -1])
    # every document token up to the last full row appears exactly once as a target, in its spans
    covered = sum(b - a for r in range(packed.n_rows) for _, a, b in packed.row_spans(r))
    doc_tokens_in_rows = int((~packed.is_sep[1 : packed.n_rows * 32 + 1]).sum())
    assert covered == doc_tokens_in_rows
    d, a, _ = packed.row_spans(2)[0]
    assert y[2, int(packed.doc_start[d]) + a - (2 * 32 + 1)] == packed.stream[packed.doc_start[d] + a]
    rows = batch_rows(packed.n_rows, 0, 5, 4)
    assert np.array_equal(rows, batch_rows(packed.n_rows, 0, 5, 4))
    assert np.array_equal(np.concatenate([rank_slice(rows, r, 2) for r in range(2)]), rows)


def test_teacher_batch_indices_point_at_boundaries(tmp_path: Path) -> None:
    from avokit.cache import CacheReader, load_cache_tokenizer
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train.kd_data import TeacherSource, build_teacher_batch

    docs = make_docs(6, 4)
    student = train_student_tokenizer([d.text for d in docs], 400, tmp_path / "stok")
    write_cache(tmp_path / "cache", "smol", registry_tokenizer("smollm2-135m"), docs)
    t_tok = load_cache_tokenizer(tmp_path / "cache")
    t_tb, s_tb = byteify(t_tok), byteify(student)
    # identity-by-bytes map built here so this test does not depend on the align engineer's module
    t2s = np.array([s_tb.preferred.get(b, -1) if b else -1 for b in t_tb.table], dtype=np.int64)
    source = TeacherSource("smol", 1.0, CacheReader(tmp_path / "cache"), t2s)
    packed = pack_documents(docs, student, 48, student.eos_token_id)
    rows = np.arange(packed.n_rows)
    tb = build_teacher_batch(packed, rows, source, lambda d: 1.0)
    assert tb.b_idx.shape[0] > 0 and tb.topk_student_ids.shape[1] == 8
    assert (tb.topk_student_ids >= 0).any(), "some teacher top-k ids must map to student ids"
    n_chunks = tb.chunk_teacher_logprob.shape[0]
    assert set(np.unique(tb.chunk_of_target[tb.chunk_of_target >= 0])) == set(range(n_chunks))
    _, _y = packed.row_tokens(rows)
    for m in range(tb.b_idx.shape[0]):
        b, p = int(tb.b_idx[m]), int(tb.s_pos[m])
        assert tb.chunk_of_target[b, p] == m  # the boundary token starts chunk m
        assert p == 0 or tb.chunk_of_target[b, p - 1] != m
    # chunk teacher log-probs of a whole document add up to the teacher's total gold log-prob
    full = [d for d, a, e in packed.row_spans(0) if a == 0 and e == packed.doc_len[d]]
    assert np.all(tb.chunk_teacher_logprob <= 0)
    assert full or packed.n_rows > 0


def test_baseline_trains_resumes_and_reloads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from avokit.train import run_training
    from avokit.train.loop import TrainingInterrupted

    write_corpus(tmp_path / "runs" / "tiny")
    recipe = make_recipe(tmp_path, steps=12, eval_every=4, checkpoint_every=4)
    with pytest.raises(TrainingInterrupted):
        run_training(recipe, baseline=True, stop_after=lambda s: s == 8, progress=False)
    assert not (recipe.run_dir / "baseline" / "model.safetensors").exists()
    out = run_training(recipe, baseline=True, progress=False)  # resumes from step 8
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12]
    # wall time keeps counting across the resume (the report prices the whole run)
    assert 0 < log[0]["elapsed_s"] < log[1]["elapsed_s"] < log[2]["elapsed_s"]
    assert log[-1]["loss"] < log[0]["loss"] - 0.3
    assert log[-1]["heldout_bpb"] < log[0]["heldout_bpb"]
    resumed = AutoModelForCausalLM.from_pretrained(str(out))

    other = make_recipe(tmp_path / "again", steps=12, eval_every=4, checkpoint_every=4)
    write_corpus(other.run_dir)
    # same tokenizer so the runs are comparable: copy the trained one
    AutoTokenizer.from_pretrained(str(recipe.run_dir / "tokenizer")).save_pretrained(str(other.run_dir / "tokenizer"))
    straight = AutoModelForCausalLM.from_pretrained(str(run_training(other, baseline=True, progress=False)))
    for (n, p), (_, q) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(p, q), n

    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("The cat", return_tensors="pt").input_ids
    gen = resumed.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 5
    assert run_training(recipe, baseline=True) == out  # finished: skipped


def test_kd_end_to_end_two_tokenizers(tmp_path: Path) -> None:
    """Two tiny teachers (SmolLM2's byte-level BPE, Gemma 3's SentencePiece) cached, then KD."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=32, n_heldout=4)
    recipe = make_recipe(tmp_path, steps=12, eval_every=12, checkpoint_every=12)
    train = read_split(run_dir, "train")
    train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    write_cache(run_dir / "cache" / "smol", "smol", registry_tokenizer("smollm2-135m"), train)
    write_cache(run_dir / "cache" / "gemma", "gemma", registry_tokenizer("gemma3-270m"), train[:-2])
    out = run_training(recipe, progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(r["kd"] > 0 and r["chunk"] > 0 for r in log)
    weights = log[-1]["teacher_weights"]
    assert set(weights) == {"smol", "gemma"} and 0.9 < sum(weights.values()) <= 1.0 + 1e-6
    assert (out / "model.safetensors").is_file() and (out / "tensorboard").is_dir()
    # the per-document choice behind the logged means: gemma lacks the last two documents
    head, *rows = [json.loads(x) for x in (out / "fusion_weights.jsonl").read_text().splitlines()]
    assert head["mode"] == recipe.train.fusion.mode and head["teachers"] == {"smol": 1.0, "gemma": 0.5}
    assert len(rows) == len(train) and all(abs(sum(r["weights"].values()) - 1.0) < 1e-5 for r in rows)
    # each line names its document's domain: evaluation reads the weights back per domain
    assert [(r["doc_id"], r["domain"]) for r in rows] == [(d.doc_id, d.domain) for d in train]
    missing = {r["doc_id"] for r in rows if r["bpb"]["gemma"] is None}
    assert missing == {d.doc_id for d in train[-2:]}
    assert all(rows_by["weights"]["gemma"] == 0.0 for rows_by in rows if rows_by["doc_id"] in missing)
    assert weights == pytest.approx({n: float(np.mean([r["weights"][n] for r in rows])) for n in weights}, abs=1e-5)


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    from avokit.errors import AvokitError
    from avokit.train import run_training

    recipe = make_recipe(tmp_path)
    with pytest.raises(AvokitError, match="train.parquet"):
        run_training(recipe, progress=False)
    write_corpus(recipe.run_dir, n_train=4, n_heldout=1)
    with pytest.raises(AvokitError, match="cache/smol: teacher cache missing"):
        run_training(recipe, progress=False)
    recipe.train.seq_len = 4096
    with pytest.raises(AvokitError, match="train.seq_len=4096 exceeds student.max_position_embeddings"):
        run_training(recipe, baseline=True, progress=False)


def _one_cached_teacher(tmp_path: Path, seed: int, dense: bool = False) -> tuple:
    """A student tokenizer, one tiny teacher's real cache over seeded documents, the packed
    rows, random student logits, and a factory of sources over that cache (copies of one
    teacher under other names; ``debias=True``: with debiased chunks)."""
    from avokit.align.conditional import PrefixIndex
    from avokit.cache import CacheReader, load_cache_tokenizer
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train.kd_data import DenseSpec, TeacherSource

    docs = make_docs(8, seed)
    student = train_student_tokenizer([d.text for d in docs], 400, tmp_path / "stok")
    write_cache(tmp_path / "cache", "smol", registry_tokenizer("smollm2-135m"), docs)
    t_tb, s_tb = byteify(load_cache_tokenizer(tmp_path / "cache")), byteify(student)
    t2s = np.array([s_tb.preferred.get(b, -1) if b else -1 for b in t_tb.table], dtype=np.int64)
    packed = pack_documents(docs, student, 64, student.eos_token_id)
    rows = np.arange(packed.n_rows)
    _, targets = packed.row_tokens(rows)
    torch.manual_seed(0)
    logits = torch.randn(len(rows), packed.seq_len, len(student))
    spec = DenseSpec(t_tb, PrefixIndex(s_tb)) if dense else None

    def source(name: str, debias: bool = False) -> TeacherSource:
        from avokit.teachers.scoring import text_word_starts

        return TeacherSource(name, 1.0, CacheReader(tmp_path / "cache"), t2s, dense=spec,
                             starts_word=text_word_starts(t_tb) if debias else None)

    return t2s, packed, rows, targets, logits, torch.log_softmax(logits, -1), source


def test_fused_identical_teachers_equal_one_teacher(tmp_path: Path) -> None:
    """Two copies of one teacher split the documents between them (min_ce-style one-hot
    weights): the fused KD and chunk terms must equal that teacher's terms alone. A teacher
    that guides few documents must not count more per boundary than one that guides many."""
    from avokit.recipe.train import LossConfig
    from avokit.train.kd_terms import KDSetup, teacher_terms

    t2s, packed, rows, targets, logits, logprobs, source = _one_cached_teacher(tmp_path, 5)
    cfg = LossConfig()

    n_docs = len(packed.doc_ids)
    one = np.zeros((n_docs, 2), dtype=np.float32)
    one[:-1, 0] = 1.0  # teacher a guides all documents but the last one,
    one[-1, 1] = 1.0  # teacher b only the last one
    fused = teacher_terms(logits, logprobs, torch.from_numpy(targets), packed, rows,
                           KDSetup([source("a"), source("b")], one, cfg), "cpu")
    alone = teacher_terms(logits, logprobs, torch.from_numpy(targets), packed, rows,
                           KDSetup([source("a")], np.ones((n_docs, 1), np.float32), cfg), "cpu")
    for term in ("kd", "chunk"):
        total = fused["a"][term] + fused["b"][term]
        assert float(alone["a"][term]) > 0
        assert torch.allclose(total, alone["a"][term], rtol=1e-5), (term, float(total), float(alone["a"][term]))


def test_first_token_vocab_map_reaches_the_trainer(tmp_path: Path) -> None:
    """``train.loss.vocab_map: first_token`` maps more of a larger teacher vocabulary, always to
    a student token whose bytes start the teacher token's bytes."""
    from avokit.align import byteify
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train.data import read_split
    from avokit.train.run import teacher_sources

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=8, n_heldout=2)
    train = read_split(run_dir, "train")
    student = train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    smol = registry_tokenizer("smollm2-135m")
    for name in ("smol", "gemma"):
        write_cache(run_dir / "cache" / name, name, smol, train)
    exact = teacher_sources(make_recipe(tmp_path), student)[0].teacher_to_student
    first = teacher_sources(make_recipe(tmp_path, loss={"vocab_map": "first_token"}), student)[0].teacher_to_student
    assert (first >= 0).sum() > 2 * (exact >= 0).sum()
    assert np.array_equal(first[exact >= 0], exact[exact >= 0])
    t_tb, s_tb = byteify(smol), byteify(student)
    for i in np.flatnonzero((first >= 0) & (exact < 0))[::97].tolist():
        assert t_tb.table[i].startswith(s_tb.table[first[i]]), (i, t_tb.table[i])


def test_teacher_term_weights_of_zero_train_the_ce_baseline(tmp_path: Path) -> None:
    """Every teacher with ``kd_weight: 0`` and ``chunk_weight: 0`` of its own leaves only CE:
    the student learns exactly the baseline's weights (same data, seed and steps), while the
    recipe's global KD weights stay on."""
    from transformers import AutoModelForCausalLM

    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=16, n_heldout=4)
    recipe = make_recipe(tmp_path, steps=6, eval_every=6, checkpoint_every=6)
    data = recipe.model_dump(mode="json", exclude={"base_dir"})
    for t in data["teachers"]:
        t.update(kd_weight=0.0, chunk_weight=0.0)
    silent = recipe_from_dict(data, tmp_path)
    assert silent.train.loss.kd_weight > 0 and silent.train.loss.chunk_weight > 0
    train = read_split(run_dir, "train")
    train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    for name in ("smol", "gemma"):
        write_cache(run_dir / "cache" / name, name, registry_tokenizer("smollm2-135m"), train)
    student = AutoModelForCausalLM.from_pretrained(str(run_training(silent, progress=False)))
    baseline = AutoModelForCausalLM.from_pretrained(str(run_training(silent, baseline=True, progress=False)))
    log = [json.loads(x) for x in (run_dir / "student" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["kd"] > 0  # the terms were computed, only weighted by zero
    for (n, p), (_, q) in zip(student.state_dict().items(), baseline.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_teacher_term_weights_are_validated() -> None:
    from avokit.errors import RecipeError

    data = {"name": "x", "corpus": {"sources": [{"kind": "builtin", "name": "lambada-passages"}]},
            "teachers": [{"name": "gemma3-270m", "kind": "registry", "chunk_weight": -1}]}
    with pytest.raises(RecipeError, match=r"teachers\[0\]\.chunk_weight"):
        recipe_from_dict(data, Path("."))


def test_dense_targets_cover_every_student_position_and_train(tmp_path: Path) -> None:
    """``train.loss.targets: dense``: a token-level target at every student position the
    teacher covers (inside words too), built by the trainer from the real cache; then KD runs."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split
    from avokit.train.kd_data import build_teacher_batch
    from avokit.train.run import teacher_sources

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=16, n_heldout=4)
    train = read_split(run_dir, "train")
    # a small vocabulary, so the student splits words the teachers spell as one token
    student = train_student_tokenizer([d.text for d in train], 300, run_dir / "tokenizer")
    write_cache(run_dir / "cache" / "smol", "smol", registry_tokenizer("smollm2-135m"), train)
    write_cache(run_dir / "cache" / "gemma", "gemma", registry_tokenizer("gemma3-270m"), train)
    packed = pack_documents(train, student, 64, student.eos_token_id)
    rows = np.arange(packed.n_rows)
    fewer = []
    # each call maps both teachers' vocabularies (Gemma's has 262k tokens): once per mode
    boundaries = teacher_sources(make_recipe(tmp_path), student)
    denses = teacher_sources(make_recipe(tmp_path, loss={"targets": "dense"}), student)
    for boundary, dense in zip(boundaries, denses):
        tb_b = build_teacher_batch(packed, rows, boundary, lambda d: 1.0)
        tb_d = build_teacher_batch(packed, rows, dense, lambda d: 1.0)
        _, targets = packed.row_tokens(rows)
        real = int((~packed.is_sep[rows[:, None] * packed.seq_len + 1 + np.arange(packed.seq_len)]).sum())
        assert tb_b.b_idx.size <= real and tb_d.b_idx.size == real  # every non-separator target
        fewer.append(tb_b.b_idx.size < real)
        assert tb_d.topk_student_ids.shape[1] == 9  # top-8 + the gold slot
        # chunks are the same in both modes; only token rows are added
        assert np.array_equal(tb_b.chunk_of_target, tb_d.chunk_of_target)
        assert np.array_equal(tb_b.chunk_teacher_logprob, tb_d.chunk_teacher_logprob)
        # every row's candidate mass is at most 1 (the rest is the tail the cache never saw) and
        # the student's own next token gets mass
        mass = np.exp(tb_d.topk_logprobs.astype(np.float64)).sum(axis=1)
        assert (mass <= 1.0 + 1e-4).all() and (mass > 0).all()
        gold = targets[tb_d.b_idx, tb_d.s_pos]
        hit = (tb_d.topk_student_ids == gold[:, None]).any(axis=1)
        assert hit.mean() > 0.5, hit.mean()
    assert any(fewer)  # Gemma's SentencePiece splits "東京" / "café" unlike the student: no boundary there
    recipe = make_recipe(tmp_path, steps=8, eval_every=8, checkpoint_every=8,
                         loss={"targets": "dense", "chunk_debias": True})
    out = run_training(recipe, progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(r["kd"] > 0 and r["chunk"] > 0 and np.isfinite(r["loss"]) for r in log)


def test_per_token_fusion_weights_split_like_per_document_ones(tmp_path: Path) -> None:
    """Span-level fusion hands the trainer one weight per student token: two copies of a
    teacher that split every document's tokens between them (one-hot, alternating by position,
    dense targets) must give that teacher's terms alone."""
    from avokit.recipe.train import LossConfig
    from avokit.train.kd_terms import KDSetup, teacher_terms

    t2s, packed, rows, targets, logits, logprobs, source = _one_cached_teacher(tmp_path, 6, dense=True)
    cfg = LossConfig(targets="dense")

    n_docs = len(packed.doc_ids)
    tokens = []
    for d in range(n_docs):
        w = np.zeros((int(packed.doc_len[d]), 2), dtype=np.float32)
        w[0::2, 0] = 1.0
        w[1::2, 1] = 1.0
        tokens.append(w)
    doc = np.full((n_docs, 2), 0.5, dtype=np.float32)
    fused = teacher_terms(logits, logprobs, torch.from_numpy(targets), packed, rows,
                           KDSetup([source("a"), source("b")], doc, cfg, token_weights=tokens), "cpu")
    alone = teacher_terms(logits, logprobs, torch.from_numpy(targets), packed, rows,
                           KDSetup([source("a")], np.ones((n_docs, 1), np.float32), cfg), "cpu")
    for term in ("kd", "chunk"):
        total = fused["a"][term] + fused["b"][term]
        assert float(fused["a"][term]) > 0 and float(fused["b"][term]) > 0
        assert torch.allclose(total, alone["a"][term], rtol=1e-5), (term, float(total), float(alone["a"][term]))


def test_span_softmax_weights_follow_the_locally_better_teacher(tmp_path: Path) -> None:
    """``fusion.mode: span_softmax``: identical teachers share every span equally; a teacher
    whose cached log-probs are worse on part of a document loses weight there only."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train.data import read_split
    from avokit.train.run import fusion_weights, span_fusion_weights, teacher_sources

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=6, n_heldout=2)
    train = read_split(run_dir, "train")
    student = train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    for name in ("smol", "gemma"):
        write_cache(run_dir / "cache" / name, name, registry_tokenizer("smollm2-135m"), train)
    recipe = make_recipe(tmp_path, fusion={"mode": "span_softmax", "window": 0, "temperature": 0.1})
    recipe.teachers[1].weight = 1.0
    sources = teacher_sources(recipe, student)
    packed = pack_documents(train, student, 64, student.eos_token_id)
    doc_w = fusion_weights(recipe, packed, sources)
    # write_cache seeds each teacher by its name's length: "smol" and "gemma" differ; give them
    # the same records so that only the edit below separates them
    sources[1].records = sources[0].records
    tok_w = span_fusion_weights(recipe, packed, sources, np.full_like(doc_w, 0.5))
    assert all(np.allclose(w, 0.5) for w in tok_w)

    class Worse(dict):  # teacher 1's gold log-probs 3 nats worse on each document's first half
        pass

    worse = Worse()
    for doc_id in packed.doc_ids:
        rec = sources[0].records[doc_id]
        gold = rec.gold_logprob.copy()
        gold[: len(gold) // 2] -= 3.0
        worse[doc_id] = TeacherRecords(rec.doc_id, rec.token_ids, rec.byte_ends, gold, rec.topk_ids,
                                       rec.topk_logprobs, rec.boundary_logmass)
    sources[1].records = worse
    tok_w = span_fusion_weights(recipe, packed, sources, np.full_like(doc_w, 0.5))
    for w in tok_w:
        n = w.shape[0]
        assert np.allclose(w.sum(axis=1), 1.0)
        assert (w[: n // 4, 0] > 0.9).all()  # teacher 0 leads the first half ...
        assert np.allclose(w[-(n // 4):], 0.5)  # ... and the teachers share the second


def test_fusion_computes_the_teacher_priors_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fusion`` (document and span weights) builds the priors once and both use them: the
    result equals the two functions called apart, which compute them each."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run as train_run
    from avokit.train.data import read_split

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=4, n_heldout=2)
    train = read_split(run_dir, "train")
    student = train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    for name in ("smol", "gemma"):
        write_cache(run_dir / "cache" / name, name, registry_tokenizer("smollm2-135m"), train)
    recipe = make_recipe(tmp_path, fusion={"mode": "span_softmax", "window": 0, "temperature": 0.1})
    sources = train_run.teacher_sources(recipe, student)
    packed = pack_documents(train, student, 64, student.eos_token_id)
    apart_doc = train_run.fusion_weights(recipe, packed, sources)
    apart_span = train_run.span_fusion_weights(recipe, packed, sources, apart_doc)
    calls = []
    real = train_run.teacher_priors
    monkeypatch.setattr(train_run, "teacher_priors", lambda *a: calls.append(1) or real(*a))
    doc_w, span_w = train_run.fusion(recipe, packed, sources)
    assert len(calls) == 1
    assert np.array_equal(doc_w, apart_doc)
    assert span_w is not None and all(np.array_equal(a, b) for a, b in zip(span_w, apart_span))


def test_in_training_evaluation_scores_the_validation_split_when_there_is_one(tmp_path: Path) -> None:
    from avokit.corpus.build import write_documents
    from avokit.train import run_training

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=24, n_heldout=4)
    recipe = make_recipe(tmp_path, steps=4, eval_every=4, checkpoint_every=4)
    out = run_training(recipe, baseline=True, progress=False)
    first = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["eval_split"] for r in first if "heldout_bpb" in r] == ["heldout"]
    write_documents(make_docs(6, 9), run_dir / "corpus" / "validation.parquet")
    shutil.rmtree(out)
    out = run_training(recipe, baseline=True, progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "heldout_bpb" in r]
    assert [r["eval_split"] for r in evals] == ["validation"]
    assert evals[0]["heldout_bpb"] != [r for r in first if "heldout_bpb" in r][0]["heldout_bpb"]
