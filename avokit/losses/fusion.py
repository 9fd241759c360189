"""Teacher fusion: how much each teacher's KD terms count on each document.

A teacher that explains a document well (low bits per byte) is the better guide on it.
``bpb_softmax`` gives document ``d`` the weights ``w_dt ∝ f_t * exp(-BPB_dt / T)`` where
``f_t`` is the teacher's fixed recipe weight (a prior; 0 switches a teacher off). Averaging
the per-teacher KD terms with these weights distils towards the weighted mixture of the
teachers. As ``T -> 0`` this becomes ``min_ce`` (FuseLLM's MinCE): all weight on the teacher
with the lowest BPB on the document (ties share equally). ``fixed`` ignores the BPBs.

BPB is comparable across tokenizers because it is per *byte*, not per token. A teacher with
no finite BPB on a document (not captured, failed) gets weight 0 there; a document with no
usable teacher gets an all-zero row, so its KD terms vanish and only CE trains on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

FusionMode = Literal["fixed", "bpb_softmax", "min_ce"]


def document_bpb(nll_nats: Tensor, n_bytes: Tensor) -> Tensor:
    """Bits per byte: ``nll / (n_bytes * ln 2)``.

    Shapes: ``nll_nats`` float [D, n_teachers] (a teacher's total negative log-likelihood of
    the document), ``n_bytes`` [D] (UTF-8 bytes of the document). Documents of 0 bytes give
    NaN (no information), which :func:`document_weights` treats as "no teacher".
    """
    denom = n_bytes.to(nll_nats.dtype).unsqueeze(-1) * math.log(2.0)
    return torch.where(denom > 0, nll_nats / torch.where(denom > 0, denom, 1.0), math.nan)


def document_weights(
    bpb: Tensor,
    mode: FusionMode,
    temperature: float,
    fixed: Tensor | Sequence[float] | None = None,
) -> Tensor:
    """Per-document teacher weights.

    Shapes: ``bpb`` float [D, n_teachers]; ``fixed`` float [n_teachers] tensor or sequence (the
    recipe's per-teacher weights, non-negative; None = all 1), or [D, n_teachers] (a prior per
    document, e.g. per-domain weights). Non-finite BPB (``inf``/NaN)
    marks a teacher that has no record of the document. Returns float [D, n_teachers], rows
    summing to 1 (or all 0 for a document that no teacher with positive fixed weight and
    finite BPB covers).

    - ``fixed``: ``fixed`` normalised (the same for every document unless given per document)
    - ``bpb_softmax``: ``softmax(log fixed - bpb / temperature)`` per row
    - ``min_ce``: one-hot on the lowest BPB per row (ties split equally)
    """
    if bpb.dim() != 2:
        raise ValueError(f"bpb must be [D, n_teachers], got {tuple(bpb.shape)}")
    if not bpb.is_floating_point():
        bpb = bpb.float()
    n_teachers = bpb.shape[1]
    if fixed is None:
        fixed = torch.ones(n_teachers, dtype=bpb.dtype, device=bpb.device)
    fixed = torch.as_tensor(fixed, dtype=bpb.dtype, device=bpb.device)
    if fixed.shape not in ((n_teachers,), tuple(bpb.shape)):
        raise ValueError(f"fixed weights must be [{n_teachers}] or {list(bpb.shape)}, got {tuple(fixed.shape)}")
    if bool((fixed < 0).any()) or not bool(torch.isfinite(fixed).all()):
        raise ValueError(
            f"fixed teacher weights must be finite and non-negative, got {fixed.tolist()}"
        )
    fixed = fixed.expand_as(bpb)  # checked before: an error names the weights as given, not D copies
    if temperature <= 0.0:
        raise ValueError(f"fusion temperature must be positive, got {temperature}")

    usable = torch.isfinite(bpb) & (fixed > 0)
    zero = torch.zeros_like(bpb)
    minus_inf = torch.full_like(bpb, -math.inf)
    if mode == "fixed":
        scores = torch.where(usable, fixed.log(), minus_inf)
    elif mode == "bpb_softmax":
        scores = torch.where(usable, fixed.log() - bpb / temperature, minus_inf)
    elif mode == "min_ce":
        best = torch.where(usable, bpb, -minus_inf).min(dim=-1, keepdim=True).values
        scores = torch.where(usable & (bpb == best), zero, minus_inf)
    else:
        raise ValueError(f"unknown fusion mode {mode!r}; choose fixed, bpb_softmax or min_ce")
    covered = usable.any(dim=-1, keepdim=True)
    # rows with nothing usable would be softmax(-inf...) = NaN; give them zeros instead
    safe = torch.where(covered, scores, zero)
    return torch.where(covered, torch.softmax(safe, dim=-1), zero)


def mean_teacher_weights(weights: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Average weight of each teacher over the documents, for the training log.

    Shapes: ``weights`` [D, n_teachers]; ``names`` has ``n_teachers`` entries.
    """
    if weights.dim() != 2 or weights.shape[1] != len(names):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(names)} teacher names")
    if weights.shape[0] == 0:
        return dict.fromkeys(names, 0.0)
    means = weights.detach().float().mean(dim=0).tolist()
    return {name: float(w) for name, w in zip(names, means, strict=True)}


def local_bpb(span_logprob: Tensor, span_bytes: Tensor, window: int = 0) -> Tensor:
    """Each teacher's bits per byte around each span: the ``2 * window + 1`` spans centred on
    it (fewer at the ends), pooled as total NLL over total bytes.

    Shapes: ``span_logprob`` float [S, n_teachers] (a teacher's log-prob of each span's bytes),
    ``span_bytes`` [S]. Returns float [S, n_teachers]. Single spans (~4 bytes) are noisy
    estimates of which teacher is better here; a window trades locality for stability.
    """
    if span_logprob.dim() != 2 or span_bytes.shape != span_logprob.shape[:1]:
        raise ValueError(f"span_logprob must be [S, n] and span_bytes [S], got "
                         f"{tuple(span_logprob.shape)} and {tuple(span_bytes.shape)}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    nll = -span_logprob.to(torch.float64)
    nb = span_bytes.to(torch.float64)
    if window:
        # prefix sums: the window total is a difference of two cumulative sums
        pad = torch.zeros(1, nll.shape[1], dtype=nll.dtype, device=nll.device)
        c_nll = torch.cat([pad, nll.cumsum(0)])
        c_nb = torch.cat([torch.zeros(1, dtype=nb.dtype, device=nb.device), nb.cumsum(0)])
        idx = torch.arange(nll.shape[0], device=nll.device)
        lo = (idx - window).clamp(min=0)
        hi = (idx + window + 1).clamp(max=nll.shape[0])
        nll, nb = c_nll[hi] - c_nll[lo], c_nb[hi] - c_nb[lo]
    return document_bpb(nll, nb)
