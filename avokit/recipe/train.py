"""Training: optimisation, losses and teacher fusion."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from avokit.recipe.base import Section


class LossConfig(Section):
    """Which KD terms and their weights (CE is always on)."""

    ce_weight: float = Field(default=1.0, ge=0.0)
    kd_weight: float = Field(default=1.0, ge=0.0)
    chunk_weight: float = Field(default=0.5, ge=0.0)
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "tvd"] = "forward_kl"
    jsd_beta: float = Field(default=0.5, gt=0.0, lt=1.0)
    temperature: float = Field(default=1.0, gt=0.0)
    chunk_tau: float = Field(default=1.0, gt=0.0)
    # how a teacher's top-k ids become student buckets: "exact" counts a teacher token only for
    # the student token with the same bytes; "first_token" for the student token its bytes
    # start with (avokit.align.vocab_map.first_token_map)
    vocab_map: Literal["exact", "first_token"] = "exact"
    # where the token-level term applies: "boundary" only at common token boundaries; "dense" at
    # every student position the teacher covers, inside words too, from the teacher's
    # distribution conditioned on the bytes already emitted (avokit.align.conditional); dense
    # maps candidates to their longest student prefix, so vocab_map does not apply to it
    targets: Literal["boundary", "dense"] = "boundary"
    # the chunk term compares "this chunk, then a new word" where the text starts a word after
    # the chunk (both models' word-start mass at the next position; ALM's debiasing), instead
    # of the tokenizer-dependent likelihood of the chunk's own tokens (avokit.losses.chunk)
    chunk_debias: bool = False
    # the token-level term (weight kd_weight) at the positions `targets` picks: "bucketed" the
    # divergence above between the teacher's top-k mapped into the student's vocabulary and
    # the student (avokit.losses.bucketed); "uld" Universal Logit Distillation, the L1
    # distance between both sides' sorted probabilities, blind to token ids, so vocab_map
    # does not matter to it (avokit.losses.uld). The chunk term is the same for both.
    token_loss: Literal["bucketed", "uld"] = "bucketed"
    # which positions the token-level term keeps: "none" every informative one; "teacher_better"
    # only those where the teacher's bucket holding the gold token has more mass than the
    # student's, i.e. where KD raises the gold token (avokit.losses.gate); bucketed only
    kd_gate: Literal["none", "teacher_better"] = "none"
    # the same for the chunk term: only chunks whose likelihood the teacher puts above the
    # student's (there the binarised divergence raises the student's likelihood of the gold
    # chunk; elsewhere it lowers it, against CE)
    chunk_gate: Literal["none", "teacher_better"] = "none"

    @model_validator(mode="after")
    def _uld_ignores_ids_and_temperature(self) -> LossConfig:
        # ULD compares the raw probabilities; a temperature would silently do nothing
        if self.token_loss == "uld" and self.temperature != 1.0:
            raise ValueError(f"temperature={self.temperature} applies to the bucketed token loss only; "
                             f"token_loss 'uld' compares the raw probabilities (leave temperature at 1)")
        if self.token_loss == "uld" and self.kd_gate != "none":
            raise ValueError(f"kd_gate={self.kd_gate!r} reads the token ids of the teacher's buckets; "
                             f"token_loss 'uld' ignores ids (use kd_gate 'none' with it)")
        return self


class FusionConfig(Section):
    """How several teachers are combined: fixed weights, per-document BPB weights, or per-span
    weights from each teacher's local likelihood of the gold bytes (``span_softmax``: spans
    between bytes where every teacher and the student end a token, pooled over ``window``
    spans on each side; documents' tails past a teacher's coverage fall back to bpb_softmax)."""

    mode: Literal["fixed", "bpb_softmax", "min_ce", "span_softmax"] = "bpb_softmax"
    temperature: float = Field(default=0.1, gt=0.0)
    window: int = Field(default=2, ge=0)
    # domain -> teacher -> weight: replaces the teachers' own `weight` (the prior of every mode)
    # for documents of that domain; a teacher not named there gets 0. Domains not listed keep
    # the teachers' weights. E.g. route each domain to the teacher whose single-teacher student
    # is best on it on validation.
    domain_weights: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("domain_weights")
    @classmethod
    def _domain_weights_usable(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for domain, weights in value.items():
            bad = {t: w for t, w in weights.items() if not math.isfinite(w) or w < 0}
            if bad:
                raise ValueError(f"domain_weights[{domain!r}]: weights must be finite and >= 0, got {bad}")
            if not any(w > 0 for w in weights.values()):
                raise ValueError(f"domain_weights[{domain!r}]: give at least one teacher a positive weight")
        return value


class OnPolicyConfig(Section):
    """On-policy distillation (GKD): a share ``mix`` of the micro-batches is written by the
    student itself, continuing prefixes of training documents, and every teacher (loaded once
    for the run) scores those bytes live; the student learns from the teachers' targets on its
    own tokens (no CE on its own text), with ``divergence`` (reverse KL by default: mode-seeking,
    as in GKD / on-policy distillation) and the run's fusion."""

    mix: float = Field(default=0.5, ge=0.0, le=1.0)  # lambda: share of on-policy micro-batches
    prompt_tokens: int = Field(default=32, ge=1)  # student tokens of each document's prefix
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0.0)
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "tvd"] = "reverse_kl"
    jsd_beta: float = Field(default=0.5, gt=0.0, lt=1.0)
    top_k: int = Field(default=20, ge=1)  # teacher top-k scored live
    # "run": the run's loss.kd_gate / chunk_gate apply on the student's samples as on the corpus;
    # "none": not there. A teacher_better gate keeps only the positions where the teacher likes
    # the sampled token more than the student does, so on the student's own text it drops the
    # teacher's "not this", which is what on-policy targets mostly say; its reason (CE trains
    # every position on gold text) does not hold where there is no gold text and no CE term
    gates: Literal["run", "none"] = "run"
    # "replace": an on-policy micro-batch takes the place of a corpus one (GKD's mixture: at equal
    # steps the run sees a share ``mix`` less of the corpus); "add": it keeps its corpus rows and
    # the samples' loss is added to theirs with ``weight`` (every step sees the whole corpus batch,
    # and costs the sampling and live scoring on top)
    combine: Literal["replace", "add"] = "replace"
    weight: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _weight_only_when_added(self) -> OnPolicyConfig:
        if self.combine == "replace" and self.weight != 1.0:
            raise ValueError("on_policy.weight weighs the samples' loss beside the corpus rows' and applies only "
                             f"with on_policy.combine: add (got weight {self.weight} with combine: replace)")
        return self


class FreezeConfig(Section):
    """Which of the student's parameters keep their starting values (for a pretrained student:
    what it already knows). ``embeddings``: the token embeddings, and with them the output head
    when the two are tied (one tensor); ``layers``: the lowest N transformer blocks. Frozen
    parameters get no gradient, and nothing below the lowest trained one is back-propagated,
    so freezing the lower blocks also makes each step cheaper."""

    embeddings: bool = False
    layers: int = Field(default=0, ge=0)

    @property
    def any(self) -> bool:
        """Whether anything is frozen."""
        return self.embeddings or self.layers > 0


class TrainConfig(Section):
    """Optimiser, schedule, batching and checkpoints."""

    seed: int = 0
    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    seq_len: int = Field(default=256, ge=8)
    lr: float = Field(default=3e-3, gt=0.0)
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    # how the student is spread over the run's processes: "ddp" every process holds all of it
    # (or as an `accelerate launch` FSDP / DeepSpeed config on GPUs says); "fsdp" avokit shards
    # it with FSDP2 (torch's fully_shard, every transformer block and the root) over all the
    # processes, on CPUs (gloo) too, where Accelerate forms no FSDP (avokit.train.sharding)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    gradient_checkpointing: bool = False
    eval_every: int = Field(default=50, ge=1)
    checkpoint_every: int = Field(default=50, ge=1)
    log_every: int = Field(default=10, ge=1)
    eval_max_rows: int = Field(default=64, ge=1)  # held-out rows scored per evaluation
    loss: LossConfig = LossConfig()
    fusion: FusionConfig = FusionConfig()
    on_policy: OnPolicyConfig | None = None
    freeze: FreezeConfig = FreezeConfig()

    @model_validator(mode="after")
    def _fsdp_supports_the_run(self) -> TrainConfig:
        if self.parallel != "fsdp":
            return self
        if self.freeze.any:
            # avokit's sharding wraps every block whole; frozen and trained tensors mixed in one
            # flat group is what it was not built (or tested) for
            raise ValueError("train.freeze: parallel 'fsdp' trains every parameter; freeze nothing or use "
                             "parallel 'ddp'")
        if self.on_policy is not None:
            # each rank samples its own prompts to its own length, while every forward of a
            # sharded student gathers parameters from all ranks at once
            raise ValueError("parallel 'fsdp' cannot run on_policy (each rank samples its own lengths; a "
                             "sharded student needs every rank in each forward): use parallel 'ddp'")
        if self.mixed_precision == "fp16":
            raise ValueError("parallel 'fsdp' trains in float32 or bf16: set mixed_precision to 'bf16' or 'no' "
                             "(fp16 needs Accelerate's gradient scaler, which a student avokit shards has not)")
        return self
