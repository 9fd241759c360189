"""Which documents go into which shard file: fixed by the corpus and ``docs_per_shard`` alone,
so every machine of an ``--shard i/n`` capture computes the same plan and a shard file's
bytes never depend on how the work was divided."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from avokit.corpus import Document
from avokit.errors import AvokitError
from avokit.recipe import Recipe, TeacherConfig


@dataclass(frozen=True)
class ShardPlan:
    """One shard file to produce: its global index, file name, split and documents."""

    index: int
    file: str
    split: str
    docs: tuple[Document, ...]


def plan_shards(splits: dict[str, list[Document]], docs_per_shard: int) -> list[ShardPlan]:
    """Cut each split (in corpus order, train first) into shards of ``docs_per_shard``."""
    plans: list[ShardPlan] = []
    for split in ("train", "heldout"):
        docs = splits.get(split, [])
        for j in range(0, len(docs), docs_per_shard):
            plans.append(
                ShardPlan(len(plans), f"{split}-{j // docs_per_shard:05d}.arrow", split,
                          tuple(docs[j : j + docs_per_shard]))
            )
    return plans


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; a clear error names the option."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise AvokitError(f"--shard: expected i/n such as 0/4, got {text!r}") from None
    check_shard((i, n))
    return i, n


def check_shard(shard: tuple[int, int]) -> None:
    """Validate a ``(i, n)`` machine slot."""
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise AvokitError(f"--shard: need 0 <= i < n, got {i}/{n}")


def mine(plans: list[ShardPlan], shard: tuple[int, int] | None) -> list[ShardPlan]:
    """The shards machine ``i`` of ``n`` captures: every n-th, starting at i (round robin
    keeps train and held-out work spread across machines)."""
    if shard is None:
        return plans
    check_shard(shard)
    i, n = shard
    return [p for p in plans if p.index % n == i]


def plan_hash(recipe: Recipe, teacher: TeacherConfig, corpus_hash: str) -> str:
    """What decides the cache's content: the corpus, the stored format and the teacher.

    Batch size and device are left out: they change throughput, not what is stored beyond
    float rounding, and a cache must survive resuming with another batch size. The dtype is
    left out too: the dtype the teacher actually computed in (``auto`` resolves per machine)
    is part of the cache spec, checked before a cache is extended.
    """
    cap = recipe.capture
    data = {
        "corpus": corpus_hash,
        "capture": {"top_k": cap.top_k, "docs_per_shard": cap.docs_per_shard,
                    "logprob_bits": cap.logprob_bits, "compression": cap.compression,
                    # only when set, so the caches captured before the field keep their hash
                    **({"inside_top_k": cap.inside_top_k} if cap.inside_top_k else {})},
        "teacher": teacher.model_dump(mode="json", exclude={"device", "weight", "dtype"}),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()
