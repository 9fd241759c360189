"""On-policy distillation from several teachers with different tokenizers (GKD-style).

For an on-policy micro-batch the student continues prefixes of training documents (sampling
with its KV cache, batched), the bytes it wrote are scored live by every teacher through the
same scoring code as capture, and the byte alignment maps each teacher's targets onto the
student's tokens of that text, exactly as for cached documents. Only the tokens the student
wrote are targets (the prompt's are masked); there is no CE term on the student's own text.
Teachers are loaded once for the run and kept (:class:`OnPolicy` holds them).
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from avokit.align import TokenBytes
from avokit.corpus import Document
from avokit.corpus.build import heldout_score
from avokit.errors import RoundTripError
from avokit.recipe.train import OnPolicyConfig
from avokit.records import TeacherRecords
from avokit.teachers.base import Teacher
from avokit.train.data import PackedCorpus, pack_documents
from avokit.train.kd_data import TeacherSource
from avokit.train.kd_terms import KDSetup, teacher_loss

# (packed, sources) -> (per-document weights [D, n], per-token weights or None): the run's fusion
Fuse = Callable[[PackedCorpus, list[TeacherSource]], tuple[np.ndarray, list[np.ndarray] | None]]


@dataclass
class OnPolicyClock:
    """Where the on-policy micro-batches' time went since the last :meth:`take` (this
    process's): how many there were, seconds sampling, seconds each teacher spent scoring the
    samples live, the tokens of their rows and how many of those the student wrote."""

    micro_batches: int = 0
    sample_s: float = 0.0
    score_s: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    written_tokens: int = 0

    def take(self) -> dict[str, Any]:
        """The sums as a train_log.jsonl entry, then zero them (one entry per logged step)."""
        out = {"micro_batches": self.micro_batches, "sample_s": round(self.sample_s, 3),
               "score_s": {k: round(v, 3) for k, v in self.score_s.items()}, "tokens": self.tokens,
               "written_tokens": self.written_tokens}
        self.micro_batches, self.sample_s, self.score_s, self.tokens, self.written_tokens = 0, 0.0, {}, 0, 0
        return out


@dataclass
class OnPolicy:
    """What on-policy micro-batches need, built once per run.

    ``teachers[i]`` scores live for ``sources[i]`` (its vocabulary map, dense/debias specs;
    its records are replaced per batch); ``prompts``: student token ids of each training
    document's prefix; ``separator``/``start_id`` as in the run's packing.
    """

    cfg: OnPolicyConfig
    teachers: list[Teacher]
    sources: list[TeacherSource]
    tokenizer: Any
    student_bytes: TokenBytes
    prompts: list[np.ndarray]
    separator: int
    start_id: int | None
    seed: int
    fuse: Fuse
    loss_cfg: Any  # the run's train.loss with the on-policy divergence
    prompt_domains: list[str] = field(default_factory=list)  # each prompt's document's domain
    clock: OnPolicyClock = field(default_factory=OnPolicyClock)  # read by the train log
    # per teacher: the prefix cuts its cache stores, scored live too, so that the samples'
    # dense targets are built as the corpus's are (empty: none)
    inside_top_k: list[int] = field(default_factory=list)

    def takes(self, step: int, micro: int) -> bool:
        """Whether micro-batch ``micro`` of ``step`` is on-policy: a fixed share ``mix`` of
        them, decided by a hash (the same on resume and on every process)."""
        # the corpus split's seeded uniform number, keyed by the micro-batch instead of a document
        return heldout_score(f"mix:{step}:{micro}", self.seed) < self.cfg.mix


def student_text(ids: np.ndarray, tb: TokenBytes) -> str:
    """The text of student tokens: their exact bytes, special tokens dropped; bytes that do
    not form UTF-8 (a sample cut inside a character) and control characters other than
    newline and tab (which teachers' tokenizers may drop, so they could not spell the text
    back) are left out."""
    raw = b"".join(tb.table[int(i)] for i in ids if 0 <= int(i) < tb.size and not tb.special[int(i)])
    text = raw.decode("utf-8", errors="ignore")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def live_records(teacher: Teacher, texts: list[str], doc_ids: list[str], top_k: int,
                 inside_top_k: int = 0) -> dict[str, TeacherRecords]:
    """The teacher's records of the samples (with prefix cuts of ``inside_top_k``, as a cache
    captured with them has); a sample its tokenizer cannot spell back exactly is left out for
    this teacher (it then guides that sample with weight 0)."""
    try:
        return {r.doc_id: r for r in teacher.score(texts, doc_ids, top_k, inside_top_k=inside_top_k)}
    except RoundTripError:
        out = {}
        for text, doc_id in zip(texts, doc_ids):
            try:
                out.update({r.doc_id: r for r in teacher.score([text], [doc_id], top_k, inside_top_k=inside_top_k)})
            except RoundTripError:
                continue
        return out


def prompt_picks(onp: OnPolicy, step: int, micro: int, batch_size: int, rank: int = 0) -> np.ndarray:
    """The prompts (indices) micro-batch ``micro`` of ``step`` continues on process ``rank``."""
    rng = np.random.default_rng([onp.seed, step, micro, rank])
    return rng.choice(len(onp.prompts), size=batch_size, replace=len(onp.prompts) < batch_size)


@torch.no_grad()
def continue_prompts(model: Any, prompts: list[np.ndarray], separator: int, max_new_tokens: int,
                     temperature: float, device: Any) -> list[np.ndarray]:
    """The token ids ``model`` samples after each prompt (one left-padded batch, full
    distribution at ``temperature``), each cut at its first ``separator`` (the EOS). Seed the
    torch RNG before calling it for a reproducible sample; the model's train/eval mode is kept."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), separator, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):  # left padding: every prompt ends where sampling starts
        ids[r, width - len(p):] = torch.from_numpy(p)
        mask[r, width - len(p):] = 1
    was_training = model.training
    model.eval()
    out = model.generate(ids.to(device), attention_mask=mask.to(device), do_sample=True, top_k=0,
                         temperature=temperature, max_new_tokens=max_new_tokens,
                         pad_token_id=separator, eos_token_id=separator)
    model.train(was_training)
    news = []
    for r in range(len(prompts)):
        new = out[r, width:].cpu().numpy()
        stop = np.nonzero(new == separator)[0]
        news.append(new[: stop[0]] if stop.size else new)
    return news


def sample(model: Any, onp: OnPolicy, step: int, micro: int, batch_size: int,
           device: Any, rank: int = 0, picks: np.ndarray | None = None) -> list[tuple[str, int]]:
    """``batch_size`` continuations by the student: ``(text, prompt_chars)`` each, where the
    first ``prompt_chars`` characters are the document prefix it was given. Each process
    (``rank``) samples its own prompts and text; ``picks``: :func:`prompt_picks` of these
    arguments, drawn here when not given."""
    if picks is None:
        picks = prompt_picks(onp, step, micro, batch_size, rank)
    prompts = [onp.prompts[i] for i in picks]
    torch.manual_seed(int(heldout_score(f"sample:{step}:{micro}:{rank}", onp.seed) * 2**31))
    news = continue_prompts(model, prompts, onp.separator, onp.cfg.max_new_tokens, onp.cfg.temperature, device)
    samples = []
    for p, new in zip(prompts, news):
        prompt = student_text(p, onp.student_bytes)
        samples.append((prompt + student_text(new, onp.student_bytes), len(prompt)))
    return samples


def prompt_token_counts(packed: PackedCorpus, prompt_bytes: list[int]) -> np.ndarray:
    """int64 [D]: how many leading student tokens of each sample start inside its prompt
    (context only: the targets are the tokens the student wrote; a token that re-tokenizing
    merged across the prompt's end counts as prompt)."""
    out = np.zeros(len(packed.byte_ends), dtype=np.int64)
    for d, ends in enumerate(packed.byte_ends):
        starts = np.concatenate([[0], ends[:-1]])
        out[d] = int((starts < prompt_bytes[d]).sum())
    return out


def on_policy_loss(model: Any, generator: Any, onp: OnPolicy, step: int, micro: int, batch_size: int,
                   device: Any, rank: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
    """Loss of one on-policy micro-batch, its detached parts (ce = 0, kd, chunk) and each
    teacher's share. ``generator``: the unwrapped model that samples; ``model`` computes the
    logits that get gradients (the same weights)."""
    picks = prompt_picks(onp, step, micro, batch_size, rank)  # once: the samples and their domains
    t0 = time.perf_counter()
    samples = sample(generator, onp, step, micro, batch_size, device, rank, picks)
    onp.clock.sample_s += time.perf_counter() - t0
    # a sample belongs to its prompt's domain (per-domain fusion weighs it like its document)
    domains = [onp.prompt_domains[i] for i in picks] if onp.prompt_domains else ["on-policy"] * len(samples)
    docs = [Document(f"on-policy:{step}:{micro}:{i}", text, "on-policy", domain=dom)
            for i, ((text, _), dom) in enumerate(zip(samples, domains))]
    texts = [d.text for d in docs]
    packed = pack_documents(docs, onp.tokenizer, 1, onp.separator, require_row=False, start_id=onp.start_id)
    # every sample in one row: the sequences differ in length, and no token is dropped
    packed = replace(packed, seq_len=int(packed.stream.shape[0]) - 1)
    sources = []
    for i, (teacher, template) in enumerate(zip(onp.teachers, onp.sources)):
        t0 = time.perf_counter()
        cuts = onp.inside_top_k[i] if onp.inside_top_k else 0
        records = live_records(teacher, texts, [d.doc_id for d in docs], onp.cfg.top_k, inside_top_k=cuts)
        onp.clock.score_s[template.name] = onp.clock.score_s.get(template.name, 0.0) + time.perf_counter() - t0
        sources.append(replace(template, records=records, memo={}, row_memo={}))
    doc_w, token_w = onp.fuse(packed, sources)
    context = prompt_token_counts(packed, [len(t[:n].encode("utf-8")) for t, n in samples])
    onp.clock.micro_batches += 1
    onp.clock.tokens += int(packed.stream.shape[0])
    onp.clock.written_tokens += int(packed.doc_len.sum() - context.sum())
    kd = KDSetup(sources=sources, doc_weights=doc_w, loss_cfg=onp.loss_cfg, token_weights=token_w,
                 student_bytes=onp.student_bytes if onp.loss_cfg.chunk_debias else None, context_tokens=context)
    rows = np.zeros(1, dtype=np.int64)
    x, y = packed.row_tokens(rows)
    logits = model(input_ids=torch.from_numpy(x).to(device)).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    loss, parts, shares = teacher_loss(logits, logprobs, torch.from_numpy(y).to(device), packed, rows, kd, device)
    return loss, {"ce": torch.zeros((), device=logits.device), **parts}, shares
