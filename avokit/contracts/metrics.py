"""``runs/NAME/report/metrics.json``: what ``avokit eval`` measured, per model, per domain and
per task. Written by :func:`avokit.evaluate.run_eval`; read by release, the CLI and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field

from avokit.contracts.base import Contract, read_versioned

EVAL_SCHEMA_VERSION: Final = 1
REGENERATE = "run `avokit eval RECIPE` again"


class DomainBpb(Contract):
    """Bits per byte of one model on one domain of the held-out split."""

    bpb: float
    bytes: int
    docs: int


class ModelBpb(Contract):
    """One model's held-out bits per byte, overall and per domain."""

    bpb: float
    nll_nats: float
    bytes: int
    tokens: int
    docs: int
    source: str  # "live" (scored now) or "cache" (a teacher's capture cache)
    domains: dict[str, DomainBpb]
    domain_mean: float  # every domain weighted the same, however many bytes it has


class Score(Contract):
    """A proportion with its 95% Wilson interval and the item count."""

    value: float
    ci95: tuple[float, float]
    n: int


class SplitScores(Contract):
    """Scores over a subset of items (clean or contaminated); metric name -> score."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")
    __pydantic_extra__: dict[str, Score] = Field(init=False)


class TaskScores(Contract):
    """One model on one task: each metric (``acc``, ``acc_norm`` or ``exact_match``) over all
    items, and the same over the clean and the contaminated items."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")
    __pydantic_extra__: dict[str, Score] = Field(init=False)
    clean: SplitScores
    dirty: SplitScores

    def metric(self, name: str) -> Score | None:
        """The score named ``name`` over all items, or None where the task has no such metric."""
        return (self.model_extra or {}).get(name)


class TaskSubset(Contract):
    """Which items of a task were evaluated."""

    items: int
    available: int
    num_fewshot: int
    selection: str


class Heldout(Contract):
    """The held-out documents scored for bits per byte."""

    docs: int
    bytes: int
    domains: dict[str, int]  # domain -> documents


class Hardware(Contract):
    """The machine the evaluation ran on."""

    cpu: str
    cores: int | None
    ram_gib: float
    accelerator: str


class DomainContamination(Contract):
    """Evaluation items contaminated by one training domain's text alone."""

    docs: int
    contaminated_items: int
    rate: float
    per_task: dict[str, dict[str, float]]


class ContaminatedItem(Contract):
    """One evaluation item that overlaps the training text."""

    task: str
    item_id: str
    ngram_hits: int
    token_overlap: float
    contaminated: bool


class Contamination(Contract):
    """The n-gram / token-overlap check of every evaluation item against the training text."""

    n: int
    min_span: int
    dirty_fraction: float
    corpus_docs: int
    overall_rate: float
    per_task: dict[str, dict[str, float]]  # task -> items, contaminated, rate
    per_domain: dict[str, DomainContamination]
    items: list[ContaminatedItem]


class GateCheck(Contract):
    """One release-gate threshold and whether it held."""

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    message: str


class GateVerdict(Contract):
    """Every gate check; passed only if all passed."""

    passed: bool
    checks: list[GateCheck]

    def failed(self) -> list[GateCheck]:
        """The checks that did not hold."""
        return [c for c in self.checks if not c.passed]


class TrainingSummary(Contract):
    """What the training log of one trained model says: progress, and the process group its
    last logged step ran on (None for logs written before it was recorded)."""

    steps: int
    tokens: int
    final_loss: float | None
    wall_time_s: float | None  # None for logs written before elapsed_s was logged
    world_size: int | None = None  # processes in the training's process group
    distributed_type: str | None = None  # NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    backend: str | None = None  # gloo, nccl; None for one process
    rows_per_rank: int | None = None  # each process's rows of every global micro-batch
    params_by_rank: list[int] | None = None  # parameter elements each process held (sharded: its part)


class ModelInfo(Contract):
    """One evaluated model (student, baseline or teacher)."""

    license: str
    params: int | None
    backend: str
    tokenizer: str
    vocab_size: int
    window: int | None  # tokens of context per scoring window
    fingerprint: str | None = None  # weights hash (teachers: the one their caches were made with)
    dtype: str | None = None  # the dtype it was scored in now; None in reports from before


class TeacherLineage(Contract):
    """A model the student came from (a teacher it learnt from, or its pretrained start): its
    licence and where it comes from."""

    name: str
    kind: str  # recipe teacher kind: registry, hf, gguf, openai
    license: str
    upstream: str | None = None  # registry teachers: the upstream model name
    provenance: str | None = None  # registry teachers: how avokit obtains its files
    fingerprint: str | None = None  # weights hash or endpoint + model; None when not known
    capture_dtype: str | None = None  # the dtype its cache was captured in; None without a cache
    # capture's bf16 check (avokit.capture.dtype_check): passed, failures, the fidelity figures
    bf16_check: dict[str, Any] | None = None


class DataLineage(Contract):
    """Fingerprints of what the student was trained on."""

    corpus: str | None  # sha256 of corpus/manifest.json (it lists every corpus file's sha256)
    caches: dict[str, str]  # teacher -> sha256 of cache/<teacher>/manifest.json


class Distillation(Contract):
    """How the student learnt from its teachers: the recipe's loss and fusion settings and the
    mean fusion weight each teacher had over the training documents (from the training log)."""

    targets: str  # train.loss.targets: boundary or dense
    chunk_debias: bool = False  # train.loss.chunk_debias
    token_loss: str = "bucketed"  # train.loss.token_loss: bucketed (avokit's) or uld
    fusion_mode: str  # train.fusion.mode
    fusion_temperature: float
    fusion_window: int  # spans either side (span_softmax only)
    ce_weight: float
    kd_weight: float
    chunk_weight: float
    teacher_weights: dict[str, float]  # teacher -> mean fusion weight; empty if not logged
    # teacher -> domain -> mean document fusion weight over that domain's training documents
    # (the student's fusion_weights.jsonl); empty in metrics written before it was recorded
    domain_teacher_weights: dict[str, dict[str, float]] = {}
    domain_docs: dict[str, int] = {}  # domain -> training documents behind those means


class ContinuationDistinct(Contract):
    """Repetition of one continuation (avokit.evaluate.distinct), over Unicode characters."""

    distinct1: float | None  # unique characters / characters (None: nothing written)
    distinct2: float | None  # unique character bigrams / bigrams (None: under 2 characters)
    repetitive: bool  # distinct2 below Generations.repetitive_below


class RepetitionSummary(Contract):
    """Repetition of one model's continuations in one domain (or all)."""

    distinct1: float | None  # mean over the continuations that have any (None: none has)
    distinct2: float | None
    repetitive: int  # how many continuations are repetitive
    continuations: int


class PromptGeneration(Contract):
    """One held-out prompt, each model's greedy continuation and each teacher's BPB of it."""

    doc_id: str
    domain: str
    prompt: str
    continuations: dict[str, str]  # model (start, baseline, student, reference) -> text
    bpb: dict[str, dict[str, float | None]]  # judging teacher -> model -> BPB (None: nothing written)
    # model -> repetition of its continuation; empty in metrics written before it was recorded
    distinct: dict[str, ContinuationDistinct] = {}


class Generations(Contract):
    """Generation quality (avokit.evaluate.generations): the teachers judge what the models write."""

    max_new_tokens: int
    prompt_bytes: int
    prompts_per_domain: int
    judges: list[str]  # the teachers that scored the continuations
    bpb: dict[str, dict[str, dict[str, float | None]]]  # judge -> model -> domain (and "all") -> BPB
    mean: dict[str, dict[str, float | None]]  # model -> domain (and "all") -> mean over the judges
    prompts: list[PromptGeneration]
    # model -> domain (and "all") -> repetition; empty in metrics written before it was recorded
    repetition: dict[str, dict[str, RepetitionSummary]] = {}
    repetitive_below: float | None = None  # the character distinct-2 threshold of "repetitive"


class EvalMetrics(Contract):
    """The whole of ``metrics.json``."""

    schema_version: Literal[1] = EVAL_SCHEMA_VERSION
    recipe: str
    created: str
    eval_run: int
    hardware: Hardware
    wall_time_s: float
    cost_per_hour: float
    cost_usd: float
    heldout: Heldout
    bpb: dict[str, ModelBpb]  # model -> held-out BPB
    tasks: dict[str, dict[str, TaskScores]]  # model -> task -> scores
    task_subset: dict[str, TaskSubset]
    contamination: Contamination
    gate: GateVerdict
    student_sha256: str | None  # the weights the gate verdict belongs to
    release_license: str | None
    # the recipe's release section, resolved: where `avokit release RUN_DIR` puts the student
    release_registry: str | None = None
    release_name: str | None = None
    training: dict[str, TrainingSummary]  # student, baseline
    models: dict[str, ModelInfo]
    student_config: dict[str, Any]  # the recipe's student section (the recipe owns its shape)
    teachers: list[TeacherLineage]
    # the pretrained student's start (kind: registry, or hf for a directory); None for a
    # student trained from scratch and in metrics written before it was recorded
    pretrained_start: TeacherLineage | None = None
    data: DataLineage
    distillation: Distillation | None = None  # None in metrics written before it was recorded
    generations: Generations | None = None  # None when eval.generation.prompts_per_domain is 0

    def write(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_metrics(path: Path) -> EvalMetrics:
    """Read ``metrics.json``; :class:`~avokit.contracts.ContractError` names the file and says
    to run ``avokit eval`` again where it is missing, old or invalid."""
    return read_versioned(path, EvalMetrics, EVAL_SCHEMA_VERSION, REGENERATE)
