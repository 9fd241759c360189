"""Capture of :class:`avokit.records.PrefixCuts`: the teacher's mass inside its gold tokens.

For every proper prefix ``u`` of every gold token, from the full-vocabulary distribution of
that position: the log of the total probability of the tokens that strictly extend ``u`` (the
normaliser of ``p(next token | it extends u)``, exact) and the ``m`` most likely of them. The
extending tokens are one contiguous run of the vocabulary in byte order
(:class:`avokit.align.extending.ExtendingIndex`), and positions that share a prefix (every
space-led word shares ``b" "``) are gathered together, one group per distinct prefix.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from avokit.align.extending import ExtendingIndex
from avokit.records import PrefixCuts, TokenizedDoc


def cut_offsets(ids: np.ndarray, index: ExtendingIndex) -> np.ndarray:
    """int64 [n + 1]: where each position's cut rows start (see :class:`PrefixCuts`)."""
    counts = np.fromiter((len(index.cuts(int(t))) for t in ids), dtype=np.int64, count=len(ids))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


class CutCollector:
    """Fills the :class:`PrefixCuts` of the documents of one scoring call, chunk by chunk.

    Usage: :meth:`plan` the positions of a model batch (in the order their hidden states are
    scored), then hand each chunk of full-vocabulary probabilities to :meth:`on_chunk`.
    """

    def __init__(self, docs: list[TokenizedDoc], index: ExtendingIndex, width: int) -> None:
        """Room for every cut of ``docs`` (``width`` = ``m`` ids per cut)."""
        if width < 1:
            raise ValueError(f"inside_top_k must be >= 1, got {width}")
        self.index = index
        self.width = width
        self.docs = docs
        self.offsets = [cut_offsets(d.ids, index) for d in docs]
        self.logmass = [np.full(int(o[-1]), -np.inf, np.float32) for o in self.offsets]
        self.ids = [np.full((int(o[-1]), width), -1, np.int32) for o in self.offsets]
        self.logprobs = [np.full((int(o[-1]), width), -np.inf, np.float32) for o in self.offsets]
        self._order: torch.Tensor | None = None
        self._reqs = np.zeros((0, 5), dtype=np.int64)  # q, doc, row, lo, hi of the planned batch

    def plan(self, positions: list[tuple[int, int]]) -> None:
        """The batch's scored positions, ``(document, token index)`` in scoring order."""
        reqs = []
        for q, (d, t) in enumerate(positions):
            base = int(self.offsets[d][t])
            for j, (lo, hi) in enumerate(self.index.cuts(int(self.docs[d].ids[t]))):
                if hi > lo:
                    reqs.append((q, d, base + j, lo, hi))
        self._reqs = np.asarray(reqs, dtype=np.int64).reshape(-1, 5)

    def on_chunk(self, first: int, probs: torch.Tensor, log_total: torch.Tensor) -> None:
        """Scored positions ``first .. first + len(probs) - 1`` of the planned batch:
        ``probs`` [c, W] = exp(logits - peak) per row, ``log_total`` [c] its log row sums."""
        q = self._reqs[:, 0]
        sel = self._reqs[(q >= first) & (q < first + probs.shape[0])]
        if sel.size == 0:
            return
        if self._order is None or self._order.device != probs.device:
            self._order = torch.from_numpy(self.index.order).to(probs.device)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for r, (lo, hi) in enumerate(sel[:, 3:5].tolist()):
            groups[(lo, hi)].append(r)
        for (lo, hi), members in groups.items():
            rows = sel[members]
            local = torch.from_numpy(rows[:, 0] - first).to(probs.device)
            seg = probs.index_select(0, local).index_select(1, self._order[lo:hi])
            lt = log_total.index_select(0, local).double()
            mass = (seg.sum(dim=1, dtype=torch.float64).log() - lt).float().cpu().numpy()
            k = min(self.width, hi - lo)
            vals, idx = torch.topk(seg, k, dim=1, sorted=True)
            lps = (vals.double().log() - lt[:, None]).float().cpu().numpy()
            ids = self._order[lo:hi][idx].cpu().numpy()
            for n, (_, d, row, _, _) in enumerate(rows.tolist()):
                self.logmass[d][row] = mass[n]
                self.ids[d][row, :k] = np.where(np.isfinite(lps[n]), ids[n], -1)
                self.logprobs[d][row, :k] = lps[n]

    def result(self, doc: int) -> PrefixCuts:
        """The finished cuts of document ``doc``."""
        return PrefixCuts(offsets=self.offsets[doc], logmass=self.logmass[doc],
                          ids=self.ids[doc], logprobs=self.logprobs[doc])


def cuts_reference(logprobs: np.ndarray, gold: np.ndarray, table: list[bytes], special: np.ndarray,
                   width: int) -> list[list[tuple[float, list[tuple[int, float]]]]]:
    """Slow reference from the definition, for tests: per position, per cut ``j = 1..L-1``,
    ``(log mass of the strictly extending tokens, their top-``width`` (id, log-prob))``,
    scanning the whole vocabulary. ``logprobs`` float [n, V] full log-softmax rows."""
    out = []
    for i, g in enumerate(gold.tolist()):
        data = b"" if special[g] else table[g]
        per = []
        for j in range(1, len(data)):
            u = data[:j]
            ext = [(t, float(logprobs[i, t])) for t, b in enumerate(table)
                   if not special[t] and len(b) > j and b.startswith(u)]
            total = sum(math.exp(lp) for _, lp in ext)
            ext.sort(key=lambda x: -x[1])
            per.append((math.log(total) if total > 0 else -math.inf, ext[:width]))
        out.append(per)
    return out
