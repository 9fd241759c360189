"""The corpus stage: documents from local files or built-in offline sources, deduplicated,
split train / held-out by source text, written as Parquet with a manifest."""

from avokit.corpus.build import (
    CorpusManifest,
    SourceStats,
    build_corpus,
    corpus_dir,
    load_split,
    read_documents,
    split_documents,
    write_documents,
)
from avokit.corpus.canary import AVOKIT_CANARY, CanaryError, refuse_canary
from avokit.corpus.dedup import dedup, minhash_signature
from avokit.corpus.document import Document
from avokit.corpus.segment import segment_text

__all__ = [
    "AVOKIT_CANARY",
    "CanaryError",
    "CorpusManifest",
    "Document",
    "SourceStats",
    "build_corpus",
    "corpus_dir",
    "dedup",
    "load_split",
    "minhash_signature",
    "refuse_canary",
    "segment_text",
    "read_documents",
    "split_documents",
    "write_documents",
]
