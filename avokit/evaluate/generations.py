"""Generation quality: what the models write, judged by the teachers.

Held-out BPB says a model *predicts* text better; this says whether it *writes* better. For a
fixed set of held-out prompts per domain (:func:`heldout_prompts`), each trained model (and the
untouched pretrained start) continues every prompt greedily; each teacher then scores those
continuations given the prompt, through the same byte-level scoring as the held-out BPB
(:meth:`avokit.teachers.base.Teacher.score`), in bits per byte of the continuation. The
document's own next bytes (``reference``, cut to the longest continuation's length) are judged
alongside, as the level of human text.

Where a teacher's token straddles the seam between prompt and continuation, the straddling
token is counted with its bytes: the judged span starts at the teacher's last token boundary
at or before the seam. Prompts end before whitespace, where most tokenizers start a token, so
this is rare. Low BPB is not good writing on its own: a model that repeats the prompt is easy
to predict, so each continuation also gets its character distinct-1/distinct-2 and is marked
repetitive below :data:`avokit.evaluate.distinct.REPETITIVE_DISTINCT2`: teacher-judged BPB is
comparable only among continuations that are not. Read the continuations beside the figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avokit.corpus import Document
from avokit.evaluate.distinct import REPETITIVE_DISTINCT2, char_distinct, summarise_distinct
from avokit.recipe.evaluation import GenerationConfig
from avokit.teachers.base import Sampling, Teacher

LN2 = math.log(2.0)
REFERENCE = "reference"
# where a prompt may end: before whitespace, or after CJK punctuation (Chinese has no spaces)
_BREAKS = (" ", "\n", "\t")
_CJK_STOPS = "，。！？；、：）」』"


@dataclass(frozen=True)
class Prompt:
    """One held-out prompt: the opening of document ``doc_id``, and the text that followed it."""

    doc_id: str
    domain: str
    text: str
    rest: str


def cut_prompt(text: str, max_bytes: int) -> str:
    """The longest opening of ``text`` within ``max_bytes`` UTF-8 bytes that ends before
    whitespace or after CJK punctuation; a plain cut at a character boundary where neither
    occurs. Trailing whitespace stays with the continuation."""
    head = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    ends = [i for i, ch in enumerate(head) if ch in _BREAKS and i > 0]
    ends += [i + 1 for i, ch in enumerate(head) if ch in _CJK_STOPS]
    cut = max(ends, default=len(head))
    return head[:cut].rstrip(" \t\n") or head


def heldout_prompts(docs: Sequence[Document], config: GenerationConfig) -> list[Prompt]:
    """Per domain (sorted), the first ``prompts_per_domain`` documents in corpus order whose
    text runs past ``prompt_bytes``; each cut by :func:`cut_prompt`."""
    out: list[Prompt] = []
    for domain in sorted({d.domain for d in docs}):
        picked = 0
        for doc in docs:
            if picked >= config.prompts_per_domain:
                break
            if doc.domain != domain or len(doc.text.encode("utf-8")) <= config.prompt_bytes:
                continue
            prompt = cut_prompt(doc.text, config.prompt_bytes)
            out.append(Prompt(doc.doc_id, domain, prompt, doc.text[len(prompt):]))
            picked += 1
    return out


def continuation_nll(record_ends: np.ndarray, gold: np.ndarray, seam: int) -> tuple[float, int]:
    """NLL (nats) and bytes of what follows byte ``seam`` in one scored text: the tokens that
    end past the seam, from the start of the first of them (see the module docstring)."""
    after = np.nonzero(record_ends > seam)[0]
    if after.size == 0:
        return 0.0, 0
    k = int(after[0])
    start = int(record_ends[k - 1]) if k else 0
    return float(-np.sum(gold[k:], dtype=np.float64)), int(record_ends[-1]) - start


def _clean(text: str) -> str:
    # a byte-level model can stop inside a character: drop the undecodable tail
    return text.rstrip("\ufffd")


@dataclass
class GenerationJudge:
    """Collects the models' continuations, then each teacher's judgement of them."""

    prompts: list[Prompt]
    config: GenerationConfig
    texts: dict[str, list[str]] = field(default_factory=dict)  # model -> continuation per prompt
    # judge -> model -> (nll nats, bytes) per prompt
    scores: dict[str, dict[str, list[tuple[float, int]]]] = field(default_factory=dict)

    def write(self, name: str, model: Teacher) -> None:
        """Greedy continuations of every prompt by ``model`` (a student-like local model)."""
        sampling = Sampling(max_new_tokens=self.config.max_new_tokens, temperature=0.0)
        self.texts[name] = [_clean(model.generate(p.text, sampling, n=1, seed=0)[0]) for p in self.prompts]

    def _with_reference(self) -> dict[str, list[str]]:
        """The continuations plus each document's own next text, as long as the longest one."""
        out = dict(self.texts)
        ref = []
        for i, p in enumerate(self.prompts):
            n = max((len(t[i].encode("utf-8")) for t in self.texts.values()), default=0)
            ref.append(p.rest.encode("utf-8")[:max(n, 1)].decode("utf-8", errors="ignore"))
        out[REFERENCE] = ref
        return out

    def judge(self, name: str, teacher: Teacher) -> None:
        """Score every continuation given its prompt with ``teacher``."""
        written = self._with_reference()
        rows = [(m, i) for m, texts in written.items() for i, t in enumerate(texts) if t]
        full = [self.prompts[i].text + written[m][i] for m, i in rows]
        records = teacher.score(full, [f"{m}/{i}" for m, i in rows], top_k=1) if rows else []
        table: dict[str, list[tuple[float, int]]] = {m: [(0.0, 0)] * len(self.prompts) for m in written}
        for (m, i), rec in zip(rows, records):
            seam = len(self.prompts[i].text.encode("utf-8"))
            table[m][i] = continuation_nll(rec.byte_ends, rec.gold_logprob, seam)
        self.scores[name] = table

    def _pooled(self, judge: str, model: str, domain: str | None) -> float | None:
        picks = [s for p, s in zip(self.prompts, self.scores[judge][model]) if domain in (None, p.domain)]
        nll, n = sum(s[0] for s in picks), sum(s[1] for s in picks)
        return nll / (LN2 * n) if n else None

    def as_metrics(self) -> dict[str, Any]:
        """The ``generations`` section of metrics.json (see :class:`avokit.contracts.metrics.Generations`)."""
        written = self._with_reference()
        domains = sorted({p.domain for p in self.prompts})
        keys: list[str | None] = [*domains, None]
        bpb = {j: {m: {d or "all": self._pooled(j, m, d) for d in keys} for m in written} for j in self.scores}
        mean: dict[str, dict[str, float | None]] = {}
        for m in written:
            mean[m] = {}
            for d in keys:
                vals = [v for j in self.scores if (v := bpb[j][m][d or "all"]) is not None]
                mean[m][d or "all"] = float(np.mean(vals)) if vals else None
        distinct = {m: [char_distinct(t) for t in written[m]] for m in written}
        repetition = {m: {d or "all": summarise_distinct([r for p, r in zip(self.prompts, distinct[m])
                                                          if d in (None, p.domain)]) for d in keys}
                      for m in written}
        prompts = [{"doc_id": p.doc_id, "domain": p.domain, "prompt": p.text,
                    "continuations": {m: written[m][i] for m in written},
                    "bpb": {j: {m: (s[i][0] / (LN2 * s[i][1]) if s[i][1] else None) for m, s in t.items()}
                            for j, t in self.scores.items()},
                    "distinct": {m: distinct[m][i] for m in written}}
                   for i, p in enumerate(self.prompts)]
        return {"max_new_tokens": self.config.max_new_tokens, "prompt_bytes": self.config.prompt_bytes,
                "prompts_per_domain": self.config.prompts_per_domain, "judges": list(self.scores),
                "bpb": bpb, "mean": mean, "prompts": prompts, "repetition": repetition,
                "repetitive_below": REPETITIVE_DISTINCT2}
