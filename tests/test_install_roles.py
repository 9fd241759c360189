"""Each role installs only what it needs: a clean venv with ``avokit[serve]`` alone (no
torch, no training stack) imports the gateway, answers ``avokit serve --help``, and reads and
verifies a release manifest and its tokenizer's chat template as a vLLM-fronting replica does.

Costs one venv and a pip install of about 65 packages per run: 2-4 minutes on a shared 2-core
machine (pip resolves against the index every time). Locally: ``pytest -m "not install"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the build needs only these; copying them keeps pip's in-tree build out of the work tree
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "avokit")

REPLICA = textwrap.dedent('''
    import importlib.util, sys
    from pathlib import Path
    assert importlib.util.find_spec("torch") is None, "torch is installed: the check proves nothing"
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from avokit.contracts.release import (ReleaseManifest, TokenizerInfo, Lineage, EvalSummary,
                                          combined_weights_sha256, digest_files)
    from avokit.contracts.metrics import GateVerdict, DataLineage
    from avokit.gateway.engines.base import scan_registry, load_tokenizer
    import avokit.gateway.app, avokit.gateway.engines.vllm

    out = Path(sys.argv[1]) / "avo"
    out.mkdir(parents=True)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|end|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|end|>")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(out)
    (out / "model.safetensors").write_bytes(b"not loaded by a vLLM-fronting replica")
    names = sorted(p.name for p in out.iterdir())
    weights = digest_files(out, ["model.safetensors"])
    ReleaseManifest(name="avo", created="2026-01-01", avokit_version="t", context_length=64, license=None,
                    weights=weights, weights_sha256=combined_weights_sha256(weights),
                    files=digest_files(out, [n for n in names if n != "model.safetensors"]),
                    tokenizer=TokenizerInfo(kind="train", vocab_size=None, files=[]),
                    lineage=Lineage(recipe="r", eval_run=1, teachers=[], data=DataLineage(corpus=None, caches={})),
                    gate=GateVerdict(passed=True, checks=[]),
                    eval=EvalSummary(bpb={}, domain_bpb={}, tasks={}, contamination_rate=0.0)).write(out)
    served = scan_registry(out.parent)
    text = load_tokenizer(served["avo"].path).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<user>hi", text
    print("replica ok")
''')


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.install
def test_serve_extra_alone_runs_the_gateway(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "--no-compile", f"{src}[serve]"])  # no .pyc for all of transformers: half the time)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    # the clean venv must not see this checkout: it runs the installed copy
    help_text = _run([str(venv / "bin" / "avokit"), "serve", "--help"], env=env, cwd=tmp_path).stdout
    assert "--registry" in help_text and "--engine" in help_text
    assert "replica ok" in _run([str(py), "-c", REPLICA, str(tmp_path / "registry")], env=env, cwd=tmp_path).stdout
    where = _run([str(py), "-c", "import avokit; print(avokit.__file__)"], env=env, cwd=tmp_path).stdout
    assert str(venv) in where, where
