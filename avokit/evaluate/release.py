"""Release: copy a student that passed its gate into the model registry with a model card
(:mod:`avokit.evaluate.card`).

REGISTRY/<name>/ = the student's HF model dir + MODEL_CARD.md + release.json, a
:class:`~avokit.contracts.ReleaseManifest` that the gateway reads through the same model
(it serves only releases whose gate passed and whose files match their sha256).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import avokit
from avokit.checksums import file_sha256
from avokit.contracts import ContractError, EvalMetrics, ReleaseManifest, read_metrics
from avokit.contracts.release import (
    NAME_PATTERN,
    EvalSummary,
    Lineage,
    TokenizerInfo,
    combined_weights_sha256,
    digest_files,
)
from avokit.errors import AvokitError
from avokit.evaluate.card import model_card, pretrained_start
from avokit.paths import FUSION_LOG

NAME_RE = re.compile(NAME_PATTERN)
# Kept in the run, not shipped: training logs (checkpoints/ is a folder and is never copied).
NOT_SHIPPED = ("train_log.jsonl", FUSION_LOG)
# Hugging Face tokenizer files: listed in the manifest's tokenizer section.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "chat_template.jinja")


class ReleaseError(AvokitError):
    """A release was refused (failed gate, missing report or model, bad name)."""


def weights_sha256(model_dir: Path) -> str | None:
    """One sha256 over every ``*.safetensors`` file of a model dir (sharded or not); None if none."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    return combined_weights_sha256({f.name: file_sha256(f) for f in files})


def _load_metrics(run_dir: Path) -> EvalMetrics:
    path = run_dir / "report" / "metrics.json"
    if not path.is_file():
        raise ReleaseError(f"{path}: no evaluation report; run `avokit eval` before releasing")
    try:
        return read_metrics(path)
    except ContractError as err:
        raise ReleaseError(str(err)) from None


def _checked_inputs(run_dir: Path, name: str, registry: Path) -> tuple[EvalMetrics, dict[str, Any]]:
    """The run's metrics and student config, once every refusal has been ruled out."""
    if not NAME_RE.match(name):
        raise ReleaseError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    metrics = _load_metrics(run_dir)
    if not metrics.gate.passed:
        failed = [f"{c.name} ({c.message})" for c in metrics.gate.failed()]
        raise ReleaseError(f"{run_dir.name}: release refused, the student failed its gate: " + "; ".join(failed))
    student = run_dir / "student"
    cfg_path = student / "config.json"
    weights = weights_sha256(student)
    if not cfg_path.is_file() or weights is None:
        raise ReleaseError(f"{student}: no trained student (config.json and *.safetensors needed)")
    if metrics.student_sha256 != weights:
        # the verdict belongs to the weights it measured: a retrained student needs a new eval
        raise ReleaseError(f"{student}: the student's weights are not the ones evaluated in "
                           f"{run_dir / 'report' / 'metrics.json'}; run `avokit eval` again before releasing")
    if (registry / name).exists():
        raise ReleaseError(f"{registry / name}: a release named {name!r} already exists; choose another --name")
    return metrics, json.loads(cfg_path.read_text(encoding="utf-8"))


def _manifest(name: str, shipped: Path, config: dict[str, Any], metrics: EvalMetrics) -> ReleaseManifest:
    """The release manifest of the files already copied into ``shipped``."""
    names = sorted(f.name for f in shipped.iterdir() if f.is_file())
    weights = digest_files(shipped, [n for n in names if n.endswith(".safetensors")])
    student_acc = {t: s.metric("acc") for t, s in metrics.tasks.get("student", {}).items()}
    return ReleaseManifest(
        name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        avokit_version=avokit.__version__,
        context_length=int(config.get("max_position_embeddings", 0)),
        license=metrics.release_license,
        weights=weights,
        weights_sha256=combined_weights_sha256(weights),
        files=digest_files(shipped, [n for n in names if n not in weights]),
        tokenizer=TokenizerInfo(kind=str(metrics.student_config.get("tokenizer", {}).get("kind", "unknown")),
                                vocab_size=config.get("vocab_size"),
                                files=[n for n in names if n in TOKENIZER_FILES]),
        lineage=Lineage(recipe=metrics.recipe, eval_run=metrics.eval_run, teachers=metrics.teachers,
                        data=metrics.data, pretrained_start=pretrained_start(metrics)),
        gate=metrics.gate,
        eval=EvalSummary(bpb={m: v.bpb for m, v in metrics.bpb.items()},
                         domain_bpb={m: {d: x.bpb for d, x in v.domains.items()} for m, v in metrics.bpb.items()},
                         tasks={t: a.value for t, a in student_acc.items() if a is not None},
                         contamination_rate=metrics.contamination.overall_rate),
    )


def release(run_dir: Path, name: str, registry: Path) -> Path:
    """Copy ``run_dir/student`` into ``registry/name`` with MODEL_CARD.md and release.json.

    Refuses a student whose latest evaluation failed its gate (the message names every
    failed threshold), and never overwrites an existing release of the same name.
    """
    run_dir, registry = Path(run_dir), Path(registry)
    metrics, config = _checked_inputs(run_dir, name, registry)
    tmp = registry / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in sorted((run_dir / "student").iterdir()):
        if f.is_file() and f.name not in NOT_SHIPPED:
            shutil.copy2(f, tmp / f.name)
    ctx = int(config.get("max_position_embeddings", 0))
    (tmp / "MODEL_CARD.md").write_text(model_card(name, config, metrics, ctx), encoding="utf-8")
    manifest = _manifest(name, tmp, config, metrics)
    if manifest.weights_sha256 != metrics.student_sha256:
        # copied bytes differ from the evaluated ones (disk full, concurrent retrain): never ship
        shutil.rmtree(tmp)
        raise ReleaseError(f"{tmp}: the copied weights are not the evaluated ones; release again")
    manifest.write(tmp)
    tmp.rename(registry / name)  # atomic: the gateway never sees a half-written release
    return registry / name
