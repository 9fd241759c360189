"""Registry teachers converted once from GGUF to a float32 safetensors directory.

transformers' GGUF loader spends 30-80 s per load on this CPU (it parses the GGUF's
tokenizer metadata twice and maps every tensor name); the dequantised float32 weights load
from safetensors in under a second. A run loads each teacher at least twice (capture, then
eval), so the first load converts the GGUF into avokit's cache and every later load reads the
copy. The copy keeps the GGUF's weight fingerprint: the GGUF is the teacher's identity, and
capture caches written before the conversion stay valid.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError
from avokit.paths import cache_dir, pid_alive
from avokit.teachers.fingerprint import weights_fingerprint

SOURCE_FILE = "avokit-source.json"
# bump when the layout of a converted directory changes, so old copies are rebuilt
LAYOUT_VERSION = 1


def _drop_stale_temps(target: Path) -> None:
    """Remove half-written conversions of ``target`` left by processes that no longer run."""
    for tmp in target.parent.glob(f"{target.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def read_source(folder: Path) -> dict[str, object] | None:
    """The conversion record of a converted directory, or None when it is absent or unreadable."""
    try:
        data = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def float32_dir(name: str, gguf: Path, tokenizer: Callable[[], Any]) -> tuple[Path, str]:
    """The float32 safetensors copy of registry teacher ``name`` and the GGUF's fingerprint.

    Converts on first use: loads ``gguf`` through transformers (dequantised to float32),
    saves weights, config and the tokenizer ``tokenizer()`` returns into a temporary directory, writes the conversion
    record last and renames the directory into place, so a killed conversion never leaves a
    directory that looks complete. A copy whose record names another GGUF is rebuilt.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fingerprint = weights_fingerprint([gguf])
    target = cache_dir() / "teachers" / f"{name}-float32-{fingerprint[:16]}"
    source = read_source(target)
    if source is not None and source.get("gguf_fingerprint") == fingerprint \
            and source.get("layout") == LAYOUT_VERSION:
        return target, fingerprint
    target.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_temps(target)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise AvokitError(f"teacher {name!r}: cannot load {gguf}: {err}") from err
    # the dequantised model is plain float32; the GGUF quantizer only blocks serialisation
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as set
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer().save_pretrained(tmp)
    record = {"layout": LAYOUT_VERSION, "teacher": name, "gguf": gguf.name,
              "gguf_fingerprint": fingerprint, "transformers": transformers.__version__}
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if target.exists():  # an older layout, another GGUF, or a concurrent conversion: replace
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.replace(target)
    except OSError:  # another process renamed its copy in between: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target, fingerprint


def find_converted(name: str) -> Path | None:
    """An existing float32 copy of registry model ``name`` (the newest complete one), found
    without reading its GGUF; None where none was converted on this machine yet."""
    root = cache_dir() / "teachers"
    found = [p for p in root.glob(f"{name}-float32-*") if p.is_dir() and ".tmp" not in p.name
             and (read_source(p) or {}).get("layout") == LAYOUT_VERSION]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
