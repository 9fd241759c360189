"""`dtype: auto` and the bf16 path: CPU detection, the override, both branches of every model
avokit runs, the fidelity comparison, and capture's bf16 check with its stored verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avokit.cache import CacheReader
from avokit.capture import run_capture
from avokit.errors import AvokitError, CacheError
from avokit.precision import (
    ENV_CPU_BF16,
    cpu_flags,
    detect_cpu_bf16,
    resolve_dtype,
    resolve_mixed_precision,
)
from avokit.recipe import recipe_from_dict
from avokit.records import TeacherRecords
from avokit.teachers import HFTeacher
from avokit.teachers.fidelity import compare_records, full_kl, kept_kl

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.",
    "Café au lait costs €3 — naïve résumé.\nA second line with   spaces\tand a tab.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells.",
    "In the beginning the universe was created. This has made a lot of people angry.",
    "A long time ago in a galaxy far, far away there was a tiny language model.",
    "Emoji 🙂 and CJK 漢字 characters are several bytes each in UTF-8 encoding.",
]


# -- detection ---------------------------------------------------------------------------


def test_cpu_flags_read_x86_and_arm_lines(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_flags(x86) == frozenset({"fpu", "avx2", "amx_bf16", "amx_tile"})  # the first CPU's
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("flags", "native"), [
    ({"avx2", "amx_bf16", "amx_tile"}, True),   # Sapphire Rapids
    ({"avx512f", "avx512_bf16"}, True),         # Cooper Lake, AMD Zen 4
    ({"asimd", "bf16"}, True),                  # Arm Neoverse V1
    ({"avx2", "fma", "avx512f"}, False),        # AVX-512 without BF16 (Skylake, Ice Lake)
    ({"avx2", "fma"}, False),                   # AMD Zen 3 (this project's EPYC machines)
    (set(), False),
])
def test_detection_from_flags(flags: set[str], native: bool) -> None:
    got = detect_cpu_bf16(frozenset(flags), env={})
    assert got.native is native
    assert (got.reason in flags) if native else got.reason.startswith("no bf16 flag")


def test_override_wins_both_ways_and_bad_values_name_the_variable() -> None:
    amx = frozenset({"amx_bf16"})
    assert detect_cpu_bf16(amx, env={ENV_CPU_BF16: "0"}).native is False
    assert detect_cpu_bf16(frozenset(), env={ENV_CPU_BF16: "1"}).native is True
    assert detect_cpu_bf16(amx, env={ENV_CPU_BF16: ""}).native is True  # empty: not set
    with pytest.raises(AvokitError, match=ENV_CPU_BF16):
        detect_cpu_bf16(amx, env={ENV_CPU_BF16: "yes"})


def test_the_report_says_what_the_detection_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    from avokit.precision import cpu_bf16_report

    for forced, native in (("1", True), ("0", False)):
        monkeypatch.setenv(ENV_CPU_BF16, forced)
        report = cpu_bf16_report()
        assert report["native_bf16"] is native and report["bf16_reason"] == f"{ENV_CPU_BF16}={forced}"
        assert set(report["bf16_flags"]) <= set(cpu_flags())  # type: ignore[arg-type]
        assert report["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_auto_follows_the_cpu_and_explicit_dtypes_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CPU_BF16, "1")
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    assert resolve_dtype("float32", "cpu") == "float32"
    monkeypatch.setenv(ENV_CPU_BF16, "0")
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"  # forcing still works
    with pytest.raises(AvokitError, match="teacher 'x': dtype must be one of"):
        resolve_dtype("fp8", "cpu", field="teacher 'x': dtype")


def test_training_keeps_float32_on_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench/results/train_dtype.md: bf16 autocast never beat float32 on a CPU measured
    for forced in ("0", "1"):
        monkeypatch.setenv(ENV_CPU_BF16, forced)
        assert resolve_mixed_precision("auto", "cpu") == "no"
    assert resolve_mixed_precision("bf16", "cpu") == "bf16"
    assert resolve_mixed_precision("no", "cuda") == "no"


def test_teacher_config_defaults_to_auto() -> None:
    from avokit.recipe import TeacherConfig

    assert TeacherConfig(name="t", kind="registry").dtype == "auto"
    with pytest.raises(ValueError, match="dtype"):
        TeacherConfig(name="t", kind="registry", dtype="fp8")


# -- fidelity ----------------------------------------------------------------------------


def _records(logits: np.ndarray, gold: np.ndarray, k: int, doc_id: str = "d") -> TeacherRecords:
    lp = torch.log_softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    ids = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    n = logits.shape[0]
    return TeacherRecords(doc_id=doc_id, token_ids=gold.astype(np.int32),
                          byte_ends=np.arange(1, n + 1, dtype=np.int64),
                          gold_logprob=lp[np.arange(n), gold].astype(np.float32),
                          topk_ids=ids.astype(np.int32),
                          topk_logprobs=np.take_along_axis(lp, ids, axis=1).astype(np.float32),
                          boundary_logmass=np.zeros(n, dtype=np.float32))


def test_identical_records_are_perfectly_faithful() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 100)) * 3
    gold = rng.integers(0, 100, size=40)
    rec = _records(logits, gold, 8)
    fid = compare_records([rec], [rec], [40])
    assert fid.top1_agreement == fid.topk_overlap == fid.ref_top1_in_test_top5 == 1.0
    assert fid.gold_mean_abs_diff == fid.kept_mean_abs_diff == 0.0
    assert fid.kl_kept_mean == pytest.approx(0.0, abs=1e-12) and fid.bpb_rel_diff == 0.0
    assert fid.failures() == []


def test_a_perturbed_capture_fails_and_says_which_limits() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(60, 100))
    gold = rng.integers(0, 100, size=60)
    noisy = logits + rng.normal(size=logits.shape) * 2.0  # far beyond bf16 rounding
    fid = compare_records([_records(logits, gold, 8)], [_records(noisy, gold, 8)], [60])
    fails = " | ".join(fid.failures())
    assert "top-1 in the top-5" in fails and "mean KL" in fails and "BPB differs" in fails
    assert fid.top1_agreement < 1.0 and fid.topk_overlap < 1.0


def test_kept_kl_never_exceeds_the_full_kl() -> None:
    rng = np.random.default_rng(2)
    for scale in (0.01, 0.3, 2.0):
        a = rng.normal(size=(30, 50)) * 2
        b = a + rng.normal(size=a.shape) * scale
        ra, rb = _records(a, np.zeros(30, dtype=np.int64), 6), _records(b, np.zeros(30, dtype=np.int64), 6)
        kept = kept_kl(ra.topk_ids, ra.topk_logprobs, rb.topk_ids, rb.topk_logprobs)
        full = full_kl(a, b)
        assert np.all(kept <= full + 1e-5) and np.all(kept >= 0.0)
    assert np.allclose(full_kl(a, a), 0.0)


def test_records_of_different_tokenizations_are_refused() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 20))
    a = _records(logits, np.zeros(10, dtype=np.int64), 4)
    b = _records(logits, np.ones(10, dtype=np.int64), 4)
    with pytest.raises(AvokitError, match="tokenized differently"):
        compare_records([a], [b], [10])
    with pytest.raises(AvokitError, match="same documents"):
        compare_records([a], [], [10])


# -- models in both branches ---------------------------------------------------------------


def _tiny_teacher(out: Path, sharpness: float, seed: int, offset: float = 0.0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from avokit.student import train_student_tokenizer

    tok = train_student_tokenizer(TEXTS * 3, 320, out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        # offset: a component every output row shares adds the same large logit to every id;
        # softmax cancels it in float32, but bf16 rounds each logit at that magnitude
        model.lm_head.weight.mul_(sharpness).add_(offset)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Well-separated logits: bf16 rounding cannot reorder the top of the distribution."""
    return _tiny_teacher(tmp_path_factory.mktemp("sharp"), 40.0, 0)


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logits in the hundreds, ~0.1 apart: bf16's step there (1-2) reorders the top-5."""
    return _tiny_teacher(tmp_path_factory.mktemp("flat"), 0.1, 1, offset=20.0)


@pytest.mark.parametrize(("forced", "want"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_hf_teacher_auto_follows_the_machine(sharp_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             forced: str, want: torch.dtype) -> None:
    monkeypatch.setenv(ENV_CPU_BF16, forced)
    teacher = HFTeacher.from_dir(sharp_dir, device="cpu")  # dtype defaults to auto
    assert next(teacher.model.parameters()).dtype == want
    assert teacher.info.dtype == str(want).removeprefix("torch.")
    rec = teacher.score([TEXTS[0]], ["a"], 4)[0]
    assert rec.topk_logprobs.dtype == np.float32 and np.isfinite(rec.gold_logprob).all()
    teacher.to_dtype("float32")
    assert teacher.info.dtype == "float32"


def test_gateway_engine_and_harness_resolve_auto(sharp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avokit.gateway.settings import GatewaySettings

    monkeypatch.setenv("AVOKIT_DTYPE", "float16")
    assert GatewaySettings().dtype == "float16"  # the settings field reads its variable
    monkeypatch.delenv("AVOKIT_DTYPE")
    assert GatewaySettings().dtype == "auto"
    lm_eval = pytest.importorskip("lm_eval")
    del lm_eval
    from avokit.evaluate.harness import AvokitLM

    monkeypatch.setenv(ENV_CPU_BF16, "1")
    assert next(AvokitLM(path=str(sharp_dir), device="cpu").model.parameters()).dtype == torch.bfloat16
    monkeypatch.setenv(ENV_CPU_BF16, "0")
    assert next(AvokitLM(path=str(sharp_dir), device="cpu").model.parameters()).dtype == torch.float32
    with pytest.raises(AvokitError, match="--model_args dtype"):
        AvokitLM(path=str(sharp_dir), device="cpu", dtype="fp8")


# -- capture's bf16 check ------------------------------------------------------------------


def _recipe(root: Path, teacher_dir: Path, corpus: Path, **capture: object):  # type: ignore[no-untyped-def]
    return recipe_from_dict({
        "name": "bf16", "runs_dir": str(root),
        "corpus": {"sources": [{"kind": "jsonl", "path": str(corpus)}], "min_chars": 20, "max_chars": 200,
                   "heldout_fraction": 0.25},
        "teachers": [{"name": "tiny", "kind": "hf", "path": str(teacher_dir), "max_length": 64, "device": "cpu"}],
        "capture": {"top_k": 8, "batch_size": 3, "docs_per_shard": 2, "bf16_check_docs": 3, **capture},
    }, root)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    return path


def test_capture_keeps_bf16_for_a_faithful_teacher(sharp_dir: Path, corpus: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CPU_BF16, "1")
    recipe = _recipe(tmp_path / "runs", sharp_dir, corpus)
    run_capture(recipe)
    cache = recipe.run_dir / "cache" / "tiny"
    verdict = json.loads((cache / "bf16_check.json").read_text())
    assert verdict["passed"] is True and verdict["failures"] == [] and len(verdict["doc_ids"]) == 3
    assert verdict["top1_agreement"] > 0.9
    assert CacheReader(cache).spec.compute_dtype == "bfloat16"


def test_capture_falls_back_to_float32_for_an_unfaithful_teacher(
        flat_dir: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avokit.teachers.fidelity import checked_config

    monkeypatch.setenv(ENV_CPU_BF16, "1")
    recipe = _recipe(tmp_path / "runs", flat_dir, corpus)
    run_capture(recipe)
    cache = recipe.run_dir / "cache" / "tiny"
    verdict = json.loads((cache / "bf16_check.json").read_text())
    assert verdict["passed"] is False and verdict["failures"]
    assert CacheReader(cache).spec.compute_dtype == "float32"
    # evaluation and on-policy scoring load the teacher as it was captured
    assert checked_config(recipe, recipe.teachers[0]).dtype == "float32"


def test_a_float32_cache_is_never_extended_in_bf16(sharp_dir: Path, corpus: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _recipe(tmp_path / "runs", sharp_dir, corpus, bf16_check_docs=0)
    monkeypatch.setenv(ENV_CPU_BF16, "0")
    run_capture(recipe, shard=(0, 2))  # half the shards, in float32
    cache = recipe.run_dir / "cache" / "tiny"
    before = sorted(p.name for p in cache.glob("*.arrow"))
    monkeypatch.setenv(ENV_CPU_BF16, "1")
    with pytest.raises(CacheError, match=r"captured in float32 and this run would score in bfloat16.*dtype: float32"):
        run_capture(recipe)
    assert sorted(p.name for p in cache.glob("*.arrow")) == before  # nothing written, nothing lost
    forced = recipe.model_copy(update={"teachers": [recipe.teachers[0].model_copy(update={"dtype": "float32"})]})
    run_capture(forced)  # the way out the error names finishes the same cache
    assert CacheReader(cache).spec.compute_dtype == "float32"


def test_a_capture_state_without_the_dtype_field_reads_as_float32(
        sharp_dir: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CPU_BF16, "0")
    recipe = _recipe(tmp_path / "runs", sharp_dir, corpus, bf16_check_docs=0)
    run_capture(recipe, shard=(0, 2))
    cache = recipe.run_dir / "cache" / "tiny"

    def drop_dtype_field() -> None:  # as a state written before the field existed
        state = json.loads((cache / "capture.json").read_text())
        del state["spec"]["compute_dtype"]
        (cache / "capture.json").write_text(json.dumps(state))

    drop_dtype_field()
    monkeypatch.setenv(ENV_CPU_BF16, "1")  # it reads as float32: a bf16 run may not extend it
    with pytest.raises(CacheError, match="captured in float32 and this run would score in bfloat16"):
        run_capture(recipe)
    monkeypatch.setenv(ENV_CPU_BF16, "0")  # a float32 run finishes it
    run_capture(recipe)
    assert CacheReader(cache).manifest.n_docs == len(TEXTS)
    assert CacheReader(cache).spec.compute_dtype == "float32"
