"""Release: copy a student that passed its gate into the model registry with a model card.

REGISTRY/<name>/ = the student's HF model dir + MODEL_CARD.md + release.json (read by the
gateway, which serves only releases whose gate passed).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from avokit.checksums import file_sha256
from avokit.errors import AvokitError
from avokit.evaluate.report import domain_table

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# Kept in the run, not shipped: training logs (checkpoints/ is a folder and is never copied).
NOT_SHIPPED = ("train_log.jsonl", "fusion_weights.jsonl")


class ReleaseError(AvokitError):
    """A release was refused (failed gate, missing report or model, bad name)."""


def weights_sha256(model_dir: Path) -> str | None:
    """One sha256 over every ``*.safetensors`` file of a model dir (sharded or not); None if none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def _load_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "report" / "metrics.json"
    if not path.is_file():
        raise ReleaseError(f"{path}: no evaluation report; run `avokit eval` before releasing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReleaseError(f"{path}: corrupt metrics file: {err}") from None


def _license_note(lic: str) -> str:
    if "gemma" in lic.lower():
        return (f"{lic}: Gemma's Terms of Use apply to models derived from Gemma outputs; this "
                "student is such a derivative, so its use must follow them (including the prohibited-use policy).")
    return lic


def model_card(name: str, config: dict[str, Any], metrics: dict[str, Any], context_length: int) -> str:
    """MODEL_CARD.md: architecture, tokenizer, data, teachers and licences, metrics,
    contamination and the gate verdict."""
    gate, con, b = metrics["gate"], metrics["contamination"], metrics["bpb"]
    tr = metrics["training"].get("student", {})
    tok_cfg = metrics.get("student_config", {}).get("tokenizer", {})
    tok_origin = ("a byte-level BPE trained on the recipe's training corpus" if tok_cfg.get("kind") == "train"
                  else f"loaded from {tok_cfg.get('path', '?')}")
    lines = [
        f"# {name}", "",
        f"Distilled by avokit from recipe `{metrics['recipe']}` (evaluation run {metrics['eval_run']}, {metrics['created']}).", "",
        "## Architecture", "",
        f"- {config.get('model_type', '?')}: {config.get('num_hidden_layers', '?')} layers, hidden size "
        f"{config.get('hidden_size', '?')}, {config.get('num_attention_heads', '?')} heads, "
        f"{metrics.get('models', {}).get('student', {}).get('params', '?')} parameters",
        f"- context length {context_length} tokens", "",
        "## Tokenizer", "",
        f"- own tokenizer, vocabulary {config.get('vocab_size', '?')} "
        f"({metrics.get('models', {}).get('student', {}).get('tokenizer', '?')}): {tok_origin}", "",
        "## Data", "",
        f"- training: {tr.get('tokens', '?')} tokens over {tr.get('steps', '?')} steps from the recipe's corpus train split; "
        f"held-out evaluation on {metrics['heldout']['docs']} documents ({metrics['heldout']['bytes']} bytes)", "",
        "## Teachers and licences", "",
    ]
    for t in metrics["teachers"]:
        origin = f" — {t['upstream']}; {t['provenance']}" if t.get("upstream") else ""
        lines.append(f"- {t['name']}: {_license_note(t.get('license', 'unknown'))}{origin}")
    lines += ["", "## Licence", "",
              f"- this student: {metrics.get('release_license', 'unspecified')} (recipe `release.license`), "
              "subject to the teachers' terms above where they follow derivatives"]
    lines += ["", "## Metrics", "", "Held-out bits per byte, per domain and overall (best per column in bold):", ""]
    lines += domain_table(b)
    lines += ["", "| task | student acc (all) | student acc (clean items) |", "| --- | --- | --- |"]
    for t, s in metrics["tasks"].get("student", {}).items():
        lines.append(f"| {t} | {s['acc']['value']:.3f} (n={s['acc']['n']}) | "
                     f"{s['clean']['acc']['value']:.3f} (n={s['clean']['acc']['n']}) |")
    lines += ["", "## Contamination", "",
              f"{con['n']}-gram and token-overlap check of every eval item against the training text: "
              f"{len(con['items'])} contaminated items, overall rate {con['overall_rate']:.4f}.", "",
              f"## Release gate: {'PASSED' if gate['passed'] else 'FAILED'}", ""]
    lines += [f"- {c['name']}: {'pass' if c['passed'] else 'FAIL'} ({c['message']})" for c in gate["checks"]]
    return "\n".join(lines) + "\n"


def release(run_dir: Path, name: str, registry: Path) -> Path:
    """Copy ``run_dir/student`` into ``registry/name`` with MODEL_CARD.md and release.json.

    Refuses a student whose latest evaluation failed its gate (the message names every
    failed threshold), and never overwrites an existing release of the same name.
    """
    run_dir, registry = Path(run_dir), Path(registry)
    if not NAME_RE.match(name):
        raise ReleaseError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    metrics = _load_metrics(run_dir)
    gate = metrics.get("gate", {})
    if not gate.get("passed", False):
        failed = [f"{c['name']} ({c['message']})" for c in gate.get("checks", []) if not c["passed"]]
        raise ReleaseError(f"{run_dir.name}: release refused, the student failed its gate: " + "; ".join(failed))
    student = run_dir / "student"
    cfg_path = student / "config.json"
    weights = weights_sha256(student)
    if not cfg_path.is_file() or weights is None:
        raise ReleaseError(f"{student}: no trained student (config.json and *.safetensors needed)")
    evaluated = metrics.get("student_sha256")
    if evaluated != weights:
        # the verdict belongs to the weights it measured: a retrained student needs a new eval
        raise ReleaseError(f"{student}: the student's weights are not the ones evaluated in "
                           f"{run_dir / 'report' / 'metrics.json'}; run `avokit eval` again before releasing")
    dest = registry / name
    if dest.exists():
        raise ReleaseError(f"{dest}: a release named {name!r} already exists; choose another --name")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    ctx = int(config.get("max_position_embeddings", 0))
    tmp = registry / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in sorted(student.iterdir()):
        if f.is_file() and f.name not in NOT_SHIPPED:
            shutil.copy2(f, tmp / f.name)
    (tmp / "MODEL_CARD.md").write_text(model_card(name, config, metrics, ctx), encoding="utf-8")
    meta = {
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "context_length": ctx,
        "gate": gate,
        "teachers": [{"name": t["name"], "license": t.get("license", "unknown")} for t in metrics["teachers"]],
        "license": metrics.get("release_license"),
        "weights_sha256": weights,
        "metrics": {"bpb": {m: v["bpb"] for m, v in metrics["bpb"].items()},
                    "tasks": {t: s["acc"]["value"] for t, s in metrics["tasks"].get("student", {}).items()},
                    "contamination_rate": metrics["contamination"]["overall_rate"],
                    "recipe": metrics["recipe"], "eval_run": metrics["eval_run"]},
    }
    (tmp / "release.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.rename(dest)  # atomic: the gateway never sees a half-written release
    return dest
