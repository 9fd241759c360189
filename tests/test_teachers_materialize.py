"""Registry teachers are converted once from GGUF to float32 safetensors: same scores, the
GGUF's fingerprint, no reconversion, and no half-written copy ever used."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf_support import write_gguf
from transformers import AutoModelForCausalLM

from avokit.teachers import HFTeacher, materialize
from avokit.teachers.fingerprint import weights_fingerprint
from avokit.teachers.materialize import SOURCE_FILE, float32_dir

TEXT = "def f(x):\n\treturn x  # 東京 café\n"


def _mkdir_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def tiny_gguf(tiny_model_factory: Callable[..., Path], smollm2_tokenizer: Any, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AVOKIT_CACHE", str(tmp_path / "cache"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(smollm2_tokenizer, "llama"))
    return write_gguf(model, _mkdir_parent(tmp_path / "gguf" / "tiny.gguf"), "llama")


def test_converted_copy_scores_like_the_gguf(tiny_gguf: Path, smollm2_tokenizer: Any) -> None:
    folder, fp = float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)
    assert fp == weights_fingerprint([tiny_gguf])
    assert json.loads((folder / SOURCE_FILE).read_text())["gguf_fingerprint"] == fp
    from_copy = HFTeacher.from_dir(folder, name="tiny", device="cpu", fingerprint=fp, backend="gguf",
                                  max_length=16)
    from_gguf = HFTeacher.from_gguf(tiny_gguf, device="cpu", tokenizer=smollm2_tokenizer, max_length=16)
    # the copy is the GGUF teacher: same identity (capture caches stay valid), same scores
    assert from_copy.info == from_gguf.info
    got, want = from_copy.score([TEXT], ["d"], 8)[0], from_gguf.score([TEXT], ["d"], 8)[0]
    np.testing.assert_array_equal(got.token_ids, want.token_ids)
    np.testing.assert_array_equal(got.gold_logprob, want.gold_logprob)
    np.testing.assert_array_equal(got.topk_ids, want.topk_ids)


def test_second_use_reads_the_copy(tiny_gguf: Path, smollm2_tokenizer: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the GGUF was loaded again")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_load)
    assert float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)[0] == first


def test_incomplete_or_foreign_copies_are_rebuilt(tiny_gguf: Path, smollm2_tokenizer: Any) -> None:
    folder, fp = float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)
    (folder / SOURCE_FILE).write_text(json.dumps({"layout": materialize.LAYOUT_VERSION,
                                                  "gguf_fingerprint": "0" * 64}))
    (folder / "model.safetensors").write_bytes(b"garbage")
    again, _ = float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)
    assert again == folder and json.loads((folder / SOURCE_FILE).read_text())["gguf_fingerprint"] == fp
    HFTeacher.from_dir(folder, device="cpu")  # loads: the garbage is gone
    # a directory without its record (what an interrupted rename could never leave, but a
    # user could) is not trusted either
    (folder / SOURCE_FILE).unlink()
    float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)
    assert (folder / SOURCE_FILE).is_file()


def test_killed_conversion_leaves_nothing_usable(tiny_gguf: Path, smollm2_tokenizer: Any,
                                                 tmp_path: Path) -> None:
    # a conversion killed mid-way leaves a temp directory named after its (dead) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    fp = weights_fingerprint([tiny_gguf])
    target = tmp_path / "cache" / "teachers" / f"tiny-float32-{fp[:16]}"
    stale = _mkdir_parent(target.with_name(f"{target.name}.tmp{dead}"))
    stale.mkdir()  # the parent exists once the first conversion ran; here it is made
    (stale / "config.json").write_text("{")
    folder, _ = float32_dir("tiny", tiny_gguf, lambda: smollm2_tokenizer)
    assert folder == target and not stale.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
