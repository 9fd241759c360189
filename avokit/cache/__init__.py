"""The teacher cache: a versioned, sharded, checksummed on-disk format (docs/cache-format.md).
Writer and reader are separate; training only needs :class:`CacheReader` and
:func:`load_cache_tokenizer`."""

from avokit.cache.build import write_manifest
from avokit.cache.format import FORMAT_VERSION, CacheSpec, decode, dequantise, encode, quantise
from avokit.cache.manifest import (
    CacheManifest,
    ShardInfo,
    finished_shard,
    read_manifest,
    record_progress,
)
from avokit.cache.reader import CacheReader, load_cache_tokenizer
from avokit.cache.writer import ShardWriter

__all__ = [
    "FORMAT_VERSION",
    "CacheManifest",
    "CacheReader",
    "CacheSpec",
    "ShardInfo",
    "ShardWriter",
    "decode",
    "dequantise",
    "encode",
    "finished_shard",
    "load_cache_tokenizer",
    "quantise",
    "read_manifest",
    "record_progress",
    "write_manifest",
]
