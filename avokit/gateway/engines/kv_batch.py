"""A running decode batch whose rows come and go between steps (continuous batching).

Rows are left-padded: every row's next input sits in the last column. A batch holds the KV
cache of everything each row has read, the attention mask over those positions plus the
pending input token, each row's position id for that token, and the pending tokens. New rows
are prefilled on their own and merged in at a step boundary (the shorter cache left-padded
with masked zeros); finished rows are dropped, and columns no remaining row uses are cut off,
so a long request never holds the others back and a short one never pays for a long one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer (keys, values) [B, heads, T, dim] of a transformers ``DynamicCache``; None
    for caches this module cannot merge (sliding windows, quantised, other layouts)."""
    layers = getattr(cache, "layers", None)
    if layers is None or type(cache).__name__ != "DynamicCache":
        return None
    out = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if type(layer).__name__ != "DynamicLayer" or keys is None or values is None:
            return None
        out.append((keys, values))
    return out


def _rebuild(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=tensors)


@dataclass
class DecodeBatch:
    """rows: caller's row objects; cache: the KV cache of T positions; mask: int64 [B, T + 1]
    (the last column is the pending token); positions: int64 [B, 1]; pending: int64 [B]."""

    rows: list[Any]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    pending: torch.Tensor

    @property
    def mergeable(self) -> bool:
        """Whether rows can join or leave (a cache layout this module can edit)."""
        return cache_tensors(self.cache) is not None

    def keep(self, alive: list[int]) -> DecodeBatch | None:
        """The batch of rows ``alive`` (indices), without columns none of them uses. A cache
        that cannot be edited keeps every row (finished ones are fed padding until all end)."""
        if not alive:
            return None
        tensors = cache_tensors(self.cache)
        if tensors is None:
            return self
        idx = torch.tensor(alive, dtype=torch.long, device=self.mask.device)
        mask = self.mask[idx]
        used = mask.sum(0) > 0
        first = int(used.nonzero()[0]) if bool(used.any()) else 0
        cache = _rebuild([(k[idx, :, first:], v[idx, :, first:]) for k, v in tensors])
        return DecodeBatch([self.rows[i] for i in alive], cache, mask[:, first:],
                           self.positions[idx], self.pending[idx])


def merge(a: DecodeBatch, b: DecodeBatch) -> DecodeBatch:
    """One batch of a's rows then b's, the shorter history left-padded (masked out)."""
    ta, tb = a.mask.shape[1], b.mask.shape[1]
    width = max(ta, tb)

    def pad_cache(t: torch.Tensor, cols: int) -> torch.Tensor:  # the cache is one column shorter
        return F.pad(t, (0, 0, width - 1 - cols, 0)) if cols < width - 1 else t

    ka, kb = cache_tensors(a.cache), cache_tensors(b.cache)
    assert ka is not None and kb is not None
    tensors = [(torch.cat([pad_cache(k1, ta - 1), pad_cache(k2, tb - 1)]),
                torch.cat([pad_cache(v1, ta - 1), pad_cache(v2, tb - 1)]))
               for (k1, v1), (k2, v2) in zip(ka, kb)]
    mask = torch.cat([F.pad(a.mask, (width - ta, 0)), F.pad(b.mask, (width - tb, 0))])
    return DecodeBatch(a.rows + b.rows, _rebuild(tensors), mask,
                       torch.cat([a.positions, b.positions]), torch.cat([a.pending, b.pending]))


Sampler = Callable[[int, torch.Tensor], int | None]
# edits the [B, V] logits of a step in place before any row is sampled (grammar masks); None
# when no row of the batch needs it, so free batches run exactly as before
Masker = Callable[[torch.Tensor], None] | None


def _cache_arg(model: Any) -> str:
    """The forward's name for the KV cache: ``cache`` (transformers 5.2x), else the older
    ``past_key_values``. Looked up once per model class: this runs on every decode step."""
    model_class: Any = type(model)  # typeshed's type[Any] is not Hashable to functools.cache
    return _cache_arg_of(model_class)


@functools.cache
def _cache_arg_of(cls: Any) -> str:  # a model class
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def prefill(model: Any, rows: list[Any], prompts: list[list[int]], pad_id: int, device: str,
            sample: Sampler, masker: Masker = None) -> tuple[DecodeBatch | None, Any]:
    """Read the prompts (left-padded, one forward) and sample each row's first token.

    ``sample(i, logits)`` returns row i's token, or None when the row is finished; ``masker``
    edits the batch's logits first. Returns the batch of unfinished rows (None if none) and
    the model output (for tests)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return _after_forward(rows, out, mask, positions[:, -1:], sample, masker)


def decode_step(model: Any, batch: DecodeBatch, sample: Sampler, masker: Masker = None
                ) -> DecodeBatch | None:
    """Feed every row its pending token, sample the next one, drop finished rows."""
    out = model(input_ids=batch.pending.view(-1, 1), attention_mask=batch.mask,
                position_ids=batch.positions, use_cache=True, **{_cache_arg(model): batch.cache})
    return _after_forward(batch.rows, out, batch.mask, batch.positions, sample, masker)[0]


def _after_forward(rows: list[Any], out: Any, mask: torch.Tensor, last_pos: torch.Tensor,
                   sample: Sampler, masker: Masker) -> tuple[DecodeBatch | None, Any]:
    logits = out.logits[:, -1, :].float()
    if masker is not None:
        masker(logits)
    pending = torch.zeros(len(rows), dtype=torch.long, device=mask.device)
    alive = []
    for i in range(len(rows)):
        token = sample(i, logits[i])
        if token is not None:
            pending[i] = token
            alive.append(i)
    ones = torch.ones((len(rows), 1), dtype=mask.dtype, device=mask.device)
    cache = getattr(out, "cache", None)
    batch = DecodeBatch(rows, out.past_key_values if cache is None else cache, torch.cat([mask, ones], dim=1), last_pos + 1, pending)
    return batch.keep(alive), out
