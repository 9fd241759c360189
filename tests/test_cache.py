"""Cache format: round trip, quantisation bound, refusal of corrupt / foreign shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avokit.cache import (
    CacheReader,
    CacheSpec,
    ShardWriter,
    dequantise,
    quantise,
    write_manifest,
)
from avokit.errors import CacheError
from avokit.records import TeacherRecords


def random_records(doc_id: str, n: int, k: int, vocab: int, rng: np.random.Generator) -> TeacherRecords:
    """Records with the shape and value ranges a real teacher produces."""
    logits = rng.normal(0, 3, size=(n, 64)).astype(np.float32)
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    top = -np.sort(-lp, axis=1)[:, :k]
    ids = np.stack([rng.choice(vocab, size=k, replace=False) for _ in range(n)]).astype(np.int32)
    lens = rng.integers(1, 9, size=n)
    return TeacherRecords(
        doc_id=doc_id,
        token_ids=rng.integers(0, vocab, size=n).astype(np.int32),
        byte_ends=np.cumsum(lens).astype(np.int64),
        gold_logprob=rng.uniform(-12, 0, size=n).astype(np.float32),
        topk_ids=ids,
        topk_logprobs=top.astype(np.float32),
        boundary_logmass=rng.uniform(-5, 0, size=n).astype(np.float32),
    )


def spec_for(vocab: int, k: int = 8, bits: int = 16, teacher_fp: str = "fp-a", tok_fp: str = "tok-a") -> CacheSpec:
    return CacheSpec(
        teacher="t", teacher_fingerprint=teacher_fp, tokenizer_fingerprint=tok_fp,
        vocab_size=vocab, top_k=k, logprob_bits=bits,
    )


def write_cache(root: Path, spec: CacheSpec, docs: list[TeacherRecords], per_shard: int = 3,
                batch_positions: int = 2048) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for j in range(0, len(docs), per_shard):
        w = ShardWriter(root / f"train-{j // per_shard:05d}.arrow", spec, "train", batch_positions)
        for rec in docs[j : j + per_shard]:
            w.add(rec)
        shards.append(w.close())
    write_manifest(root, spec, "plan", shards)
    return root


@pytest.mark.parametrize("vocab", [200, 1000, 262_144, 20_000_000, 2**31 - 1])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("batch_positions", [1, 30, 2048])
def test_round_trip(tmp_path: Path, vocab: int, bits: int, batch_positions: int) -> None:
    rng = np.random.default_rng(vocab + bits)
    spec = spec_for(vocab, bits=bits)
    docs = [random_records(f"d{i}", int(rng.integers(1, 40)), 8, vocab, rng) for i in range(7)]
    root = write_cache(tmp_path / "c", spec, docs, per_shard=4, batch_positions=batch_positions)
    reader = CacheReader(root, expect_teacher_fingerprint="fp-a")
    assert len(reader) == 7 and list(reader) == [d.doc_id for d in docs]
    bound = spec.max_quantisation_error()
    for want in docs[::-1] + docs:  # random access, not only in order
        got = reader[want.doc_id]
        np.testing.assert_array_equal(got.token_ids, want.token_ids)
        np.testing.assert_array_equal(got.byte_ends, want.byte_ends)
        np.testing.assert_array_equal(got.topk_ids, want.topk_ids)
        np.testing.assert_array_equal(got.gold_logprob, want.gold_logprob)
        np.testing.assert_array_equal(got.boundary_logmass, want.boundary_logmass)
        np.testing.assert_array_equal(got.topk_logprobs[:, 0], want.topk_logprobs[:, 0])
        assert np.abs(got.topk_logprobs - want.topk_logprobs).max() <= bound + 1e-5
    streamed = [r.doc_id for r in reader.iter_records()]
    assert streamed == [d.doc_id for d in docs]
    assert reader.manifest.n_tokens == sum(d.n_positions for d in docs)
    assert reader.manifest.bytes_per_token > 0


def test_quantisation_error_bound_is_per_position_span() -> None:
    lp = np.array([[-0.1, -0.5, -3.0, -9.0], [-1.0, -1.0, -1.0, -1.0]], np.float32)
    top, step, q = quantise(lp, 8)
    back = dequantise(top, step, q)
    assert np.abs(back - lp).max() <= (9.0 - 0.1) / (2 * 255) + 1e-6
    np.testing.assert_array_equal(back[1], lp[1])
    assert np.all(np.diff(back, axis=1) <= 0)  # order is kept


def test_write_is_atomic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    spec = spec_for(500)
    path = tmp_path / "train-00000.arrow"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, spec, "train") as w:
            w.add(random_records("a", 5, 8, 500, rng))
            raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    docs = [random_records(f"d{i}", 10, 8, 500, rng) for i in range(4)]
    return write_cache(tmp_path / "c", spec_for(500), docs)


def test_corrupt_shard_is_refused(cache: Path) -> None:
    shard = cache / "train-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    reader = CacheReader(cache)
    with pytest.raises(CacheError, match="train-00000.arrow: checksum mismatch"):
        reader["d0"]


def test_wrong_version_is_refused(cache: Path) -> None:
    path = cache / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(CacheError, match=r"manifest.json: cache format version 99"):
        CacheReader(cache)


def test_other_teacher_or_tokenizer_is_refused(cache: Path) -> None:
    with pytest.raises(CacheError, match=r"manifest.json: .*another teacher"):
        CacheReader(cache, expect_teacher_fingerprint="fp-b")
    with pytest.raises(CacheError, match=r"manifest.json: .*another tokenizer"):
        CacheReader(cache, expect_tokenizer_fingerprint="tok-b")


def test_shard_from_another_capture_is_refused(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(2)
    other = write_cache(tmp_path / "o", spec_for(500, teacher_fp="fp-z"),
                        [random_records(f"d{i}", 10, 8, 500, rng) for i in range(3)])
    # Swap a foreign shard in and fix up the checksum: the shard's own metadata still differs.
    foreign = (other / "train-00000.arrow").read_bytes()
    (cache / "train-00000.arrow").write_bytes(foreign)
    raw = json.loads((cache / "manifest.json").read_text())
    raw["shards"][0]["sha256"] = json.loads((other / "manifest.json").read_text())["shards"][0]["sha256"]
    (cache / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CacheError, match="train-00000.arrow: shard teacher_fingerprint"):
        CacheReader(cache)["d0"]


def test_missing_manifest_names_file(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=str(tmp_path / "manifest.json")):
        CacheReader(tmp_path)
