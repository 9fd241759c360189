"""``run_training``: the train stage entry point (student with KD, or the CE-only baseline)."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from avokit.corpus import load_split
from avokit.errors import AvokitError
from avokit.paths import FUSION_LOG
from avokit.recipe.recipe import Recipe
from avokit.recipe.train import LossConfig, TrainConfig
from avokit.teachers.pretrained import resolve_pretrained
from avokit.teachers.scoring import resolve_start_token_id, text_word_starts
from avokit.train.data import PackedCorpus, pack_documents, read_split, separator_prefix
from avokit.train.kd_data import DenseSpec, TeacherSource
from avokit.train.kd_terms import KDSetup
from avokit.train.loop import train_loop
from avokit.train.on_policy import OnPolicy
from avokit.train.start import ensure_student_tokenizer as ensure_student_tokenizer  # re-exported
from avokit.train.start import initial_student

DONE = "training_done.json"


def teacher_sources(recipe: Recipe, tokenizer: Any) -> list[TeacherSource]:
    """Open every teacher's cache and map its vocabulary into the student's.

    A teacher whose tokenizer is the student's (same token strings and ids) gets the identity
    map; every other teacher a map by equal bytes (``avokit.align.vocab_map``), extended to
    first-token prefixes when ``train.loss.vocab_map`` is ``first_token``.
    """
    from avokit.align import byteify
    from avokit.align.conditional import PrefixIndex
    from avokit.align.vocab_map import build_vocab_map, first_token_map
    from avokit.cache import CacheReader, load_cache_tokenizer
    from avokit.losses.same_vocab import shares_vocabulary

    student_tb = byteify(tokenizer, name="student")
    student_vocab = tokenizer.get_vocab()
    index = PrefixIndex(student_tb)
    sources = []
    for t in recipe.teachers:
        cache_dir = recipe.run_dir / "cache" / t.name
        if not (cache_dir / "manifest.json").is_file():
            raise AvokitError(f"{cache_dir}: teacher cache missing; run `avokit capture` first")
        reader = CacheReader(cache_dir)
        t_tok = load_cache_tokenizer(cache_dir)
        shared = shares_vocabulary(t_tok.get_vocab(), student_vocab)
        loss = recipe.train.loss
        # byteifying a 262k vocabulary takes seconds: only when a map or a target needs it
        teacher_tb = (byteify(t_tok, name=t.name)
                      if not shared or loss.targets == "dense" or loss.chunk_debias else None)
        if shared:
            # same tokenizer: the identity map makes the bucketed term the exact top-k + tail KD
            # objective (losses.same_vocab); a byte map would merge byte-fallback twins
            t2s = np.arange(len(t_tok), dtype=np.int64)
        else:
            assert teacher_tb is not None
            vmap = build_vocab_map(teacher_tb, student_tb, t_tok, tokenizer)
            t2s = np.asarray(vmap.teacher_to_student, dtype=np.int64)
            if recipe.train.loss.vocab_map == "first_token":
                t2s = first_token_map(t2s, teacher_tb, student_tb, tokenizer)
        dense = DenseSpec(teacher_tb, index) if teacher_tb is not None and loss.targets == "dense" else None
        starts_word = text_word_starts(teacher_tb) if teacher_tb is not None and loss.chunk_debias else None
        sources.append(TeacherSource(t.name, t.weight, reader, t2s.astype(np.int64), kd_weight=t.kd_weight,
                                     chunk_weight=t.chunk_weight, dense=dense, starts_word=starts_word))
    return sources


def fusion_weights(recipe: Recipe, packed: PackedCorpus, sources: list[TeacherSource],
                   priors: np.ndarray | None = None) -> np.ndarray:
    """Per-document teacher weights float32 [D, n_teachers] from each teacher's BPB on it.

    Aligns every (teacher, document) once here; the memo is reused by every batch. Span-level
    fusion uses these (as bpb_softmax) where a document's spans end. ``priors``:
    :func:`teacher_priors`, computed here when not given.
    """
    import torch

    from avokit.losses.fusion import document_weights

    bpb = np.full((len(packed.doc_ids), len(sources)), math.inf, dtype=np.float64)
    for t, source in enumerate(sources):
        for d, doc_id in enumerate(packed.doc_ids):
            kd = source.doc(doc_id, packed.byte_ends[d])
            if kd is not None:
                bpb[d, t] = kd.bpb
    fcfg = recipe.train.fusion
    mode = "bpb_softmax" if fcfg.mode == "span_softmax" else fcfg.mode
    # inf BPB marks a document the teacher's cache lacks: document_weights gives it weight 0.
    weights = document_weights(torch.tensor(bpb, dtype=torch.float64), mode, fcfg.temperature,
                               torch.from_numpy(teacher_priors(recipe, packed, sources) if priors is None else priors))
    return weights.numpy().astype(np.float32)


def teacher_priors(recipe: Recipe, packed: PackedCorpus, sources: list[TeacherSource]) -> np.ndarray:
    """float64 [D, n_teachers]: each teacher's ``weight``, replaced for the documents of a
    domain listed in ``train.fusion.domain_weights`` by that domain's weights (0 when unnamed)."""
    own = np.array([s.weight for s in sources], dtype=np.float64)
    prior = np.repeat(own[None, :], len(packed.doc_ids), axis=0)
    routed = recipe.train.fusion.domain_weights
    for d, domain in enumerate(packed.domains):
        if domain in routed:
            prior[d] = [routed[domain].get(s.name, 0.0) for s in sources]
    return prior


def span_fusion_weights(recipe: Recipe, packed: PackedCorpus, sources: list[TeacherSource],
                        doc_weights: np.ndarray, priors: np.ndarray | None = None) -> list[np.ndarray]:
    """Per student token of each document, float32 [n_d, n_teachers]: the teachers' weights of
    the span the token lies in (softmax of minus each teacher's local BPB over the span and
    ``fusion.window`` spans either side, over the teachers that cache the document); tokens
    past the spans every teacher covers keep the document's weights. ``priors``:
    :func:`teacher_priors`, computed here when not given."""
    import torch

    from avokit.align.spans import common_spans
    from avokit.losses.fusion import document_weights, local_bpb

    fcfg = recipe.train.fusion
    priors = teacher_priors(recipe, packed, sources) if priors is None else priors
    out = []
    for d, doc_id in enumerate(packed.doc_ids):
        w = np.repeat(doc_weights[d][None, :], int(packed.doc_len[d]), axis=0)
        have = [t for t, s in enumerate(sources) if doc_id in s.records]
        recs = [sources[t].records[doc_id] for t in have]
        spans = common_spans([r.byte_ends for r in recs], [r.gold_logprob for r in recs], packed.byte_ends[d])
        if spans.n_spans and have:
            bpb = local_bpb(torch.from_numpy(spans.logprob), torch.from_numpy(spans.n_bytes), fcfg.window)
            per_span = np.zeros((spans.n_spans, len(sources)))
            per_span[:, have] = document_weights(bpb, "bpb_softmax", fcfg.temperature, priors[d][have]).numpy()
            inside = spans.span_of_student >= 0
            w[inside] = per_span[spans.span_of_student[inside]]
        out.append(w.astype(np.float32))
    return out


def fusion(recipe: Recipe, packed: PackedCorpus,
           sources: list[TeacherSource]) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The run's teacher weights: per document, and per student token with span-level fusion
    (both from one computation of the teachers' priors)."""
    priors = teacher_priors(recipe, packed, sources)
    doc_w = fusion_weights(recipe, packed, sources, priors)
    span = recipe.train.fusion.mode == "span_softmax"
    return doc_w, span_fusion_weights(recipe, packed, sources, doc_w, priors) if span else None


def write_fusion_weights(path: Path, recipe: Recipe, packed: PackedCorpus, kd: KDSetup) -> None:
    """Every training document's teacher weights and BPBs, one JSON line each (main process only).

    The train log has the per-teacher means; this is the per-document choice behind them.
    """
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fcfg = recipe.train.fusion
    lines = [json.dumps({"mode": fcfg.mode, "temperature": fcfg.temperature,
                         "teachers": {s.name: s.weight for s in kd.sources}})]
    for d, doc_id in enumerate(packed.doc_ids):
        row: dict[str, Any] = {"doc_id": doc_id, "weights": {}, "bpb": {}}
        if packed.domains:  # what each teacher gave each domain is read back per domain at eval
            row["domain"] = packed.domains[d]
        for t, source in enumerate(kd.sources):
            hit = source.memo.get(doc_id)  # filled by fusion_weights
            row["weights"][source.name] = round(float(kd.doc_weights[d, t]), 6)
            row["bpb"][source.name] = round(hit.bpb, 6) if hit is not None and math.isfinite(hit.bpb) else None
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def on_policy_setup(recipe: Recipe, tokenizer: Any, packed: PackedCorpus, kd: KDSetup) -> OnPolicy:
    """Load every teacher once for live scoring and take each training document's first
    ``train.on_policy.prompt_tokens`` tokens (after its separator) as a prompt."""
    from avokit.align import byteify
    from avokit.cache import CacheReader
    from avokit.teachers.fidelity import checked_config
    from avokit.teachers.load import load_teacher

    cfg = recipe.train
    assert cfg.on_policy is not None
    # in the dtype each teacher's cache was captured in (float32 where its bf16 check failed)
    teachers = [load_teacher(checked_config(recipe, t), recipe.base_dir, recipe.capture) for t in recipe.teachers]
    sep, start = tokenizer.eos_token_id, resolve_start_token_id(tokenizer)
    n_prefix = len(separator_prefix(sep, start))  # each prompt starts as its document does in training
    prompts = [packed.stream[max(int(s) - n_prefix, 0): int(s) + min(int(n), cfg.on_policy.prompt_tokens)]
               for s, n in zip(packed.doc_start, packed.doc_len)]

    return OnPolicy(cfg.on_policy, teachers, kd.sources, tokenizer, byteify(tokenizer, name="student"), prompts,
                    sep, start, cfg.seed, functools.partial(fusion, recipe), on_policy_loss_config(cfg),
                    prompt_domains=list(packed.domains),
                    inside_top_k=[s.records.spec.inside_top_k if isinstance(s.records, CacheReader) else 0
                                  for s in kd.sources])


def on_policy_loss_config(cfg: TrainConfig) -> LossConfig:
    """The loss of on-policy micro-batches: the run's, with the on-policy divergence, and
    without the gates where ``on_policy.gates`` is ``none``."""
    assert cfg.on_policy is not None
    ungated = {"kd_gate": "none", "chunk_gate": "none"} if cfg.on_policy.gates == "none" else {}
    return cfg.loss.model_copy(update={"divergence": cfg.on_policy.divergence, "jsd_beta": cfg.on_policy.jsd_beta,
                                       **ungated})


def run_training(recipe: Recipe, baseline: bool = False,
                 stop_after: Callable[[int], bool] | None = None, progress: bool = True,
                 on_checkpoint: Callable[[int, Any], None] | None = None) -> Path:
    """Train the student (``baseline=False``, CE + KD) or the CE-only baseline; returns its model dir.

    Output: ``run_dir/student/`` or ``run_dir/baseline/`` with config.json, model.safetensors,
    tokenizer files, ``checkpoints/``, ``train_log.jsonl``, ``tensorboard/`` and, with teachers,
    ``fusion_weights.jsonl`` (each document's teacher weights). A finished run
    is skipped unless ``train.steps`` was raised since, then it continues from its last step; an
    interrupted one resumes from its newest complete checkpoint. The baseline uses identical
    data, steps and seed. ``on_checkpoint``: see :func:`avokit.train.loop.train_loop`.

    Raises :class:`AvokitError` when the launcher asked for more processes than the process
    group has (:mod:`avokit.train.topology`).
    """
    from accelerate.utils import set_seed

    from avokit.train.freeze import freeze_student
    from avokit.train.topology import checked_topology

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # before anything else: a launch that asked for N processes and got fewer trains nothing
    checked_topology()
    out_dir = recipe.run_dir / ("baseline" if baseline else "student")
    if (out_dir / DONE).is_file() and (out_dir / "config.json").is_file():
        finished = json.loads((out_dir / DONE).read_text()).get("steps", 0)
        if finished >= recipe.train.steps:
            return out_dir
        # train.steps was raised: continue from the last step's checkpoint (the schedule is
        # the new one from there on; a constant one, min_lr_ratio: 1, makes that seamless)
        (out_dir / DONE).unlink()
    cfg = recipe.train
    if recipe.student.max_position_embeddings < cfg.seq_len and recipe.student.pretrained is None:
        raise AvokitError(f"train.seq_len={cfg.seq_len} exceeds student.max_position_embeddings="
                          f"{recipe.student.max_position_embeddings}")
    start_weights = resolve_pretrained(recipe)
    tokenizer = ensure_student_tokenizer(recipe, start_weights)
    sep = tokenizer.eos_token_id
    # evaluation scores every model from this token (BOS, else EOS): train the student on it too
    start = resolve_start_token_id(tokenizer)
    packed = pack_documents(load_split(recipe, "train"), tokenizer, cfg.seq_len, sep, start_id=start)
    # in-training evaluation (curves, checkpoint choice) scores the validation split when the
    # corpus has one, so the held-out split stays a test set nothing was chosen on
    eval_split = "validation" if (recipe.run_dir / "corpus" / "validation.parquet").is_file() else "heldout"
    heldout_docs = read_split(recipe.run_dir, eval_split)
    if not heldout_docs and eval_split == "validation":
        eval_split, heldout_docs = "heldout", read_split(recipe.run_dir, "heldout")
    heldout = (pack_documents(heldout_docs, tokenizer, cfg.seq_len, sep, require_row=False, start_id=start)
               if heldout_docs else None)
    if heldout is not None and heldout.n_rows == 0:
        heldout = None  # a held-out split shorter than one row cannot be scored; train without eval
    kd = None
    if not baseline:
        from avokit.align import byteify

        sources = teacher_sources(recipe, tokenizer)
        doc_w, token_w = fusion(recipe, packed, sources)
        kd = KDSetup(sources=sources, doc_weights=doc_w, loss_cfg=cfg.loss, token_weights=token_w,
                     student_bytes=byteify(tokenizer, name="student") if cfg.loss.chunk_debias else None)
        write_fusion_weights(out_dir / FUSION_LOG, recipe, packed, kd)
    set_seed(cfg.seed)  # identical initial weights for student and baseline, on every process
    model = initial_student(recipe, tokenizer, start_weights)
    if cfg.freeze.any:
        freeze_student(model, cfg.freeze)
    onp = on_policy_setup(recipe, tokenizer, packed, kd) if kd is not None and cfg.on_policy else None
    try:
        model = train_loop(model, packed, heldout, cfg, out_dir, kd=kd, eval_max_rows=cfg.eval_max_rows,
                           eval_split=eval_split, stop_after=stop_after, progress=progress,
                           on_checkpoint=on_checkpoint, on_policy=onp)
    finally:
        for teacher in onp.teachers if onp is not None else []:
            teacher.close()
    from accelerate import PartialState

    if PartialState().is_main_process:
        tokenizer.save_pretrained(str(out_dir))  # the weights were written by train_loop
        (out_dir / DONE).write_text(json.dumps({"steps": cfg.steps, "baseline": baseline}))
    PartialState().wait_for_everyone()
    return out_dir
