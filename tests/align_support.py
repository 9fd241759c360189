"""Helpers of the align tests: hand-made tokenizer byte tables and tiny trained BPEs (no
tokenizer files needed), and a time limit for code a mutant can send into an endless loop."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from avokit.align.bytes import TokenBytes
from avokit.records import TokenizedDoc


def byte_table(pieces: list[bytes], fallback: frozenset[int] = frozenset(),
               special: frozenset[int] = frozenset(), name: str = "t") -> TokenBytes:
    """A SentencePiece-like table of ``pieces``: ``preferred`` picks the regular id over a
    byte-fallback twin (ids in ``fallback``); ids in ``special`` spell no bytes of text."""
    twins: dict[bytes, list[int]] = {}
    for i, b in enumerate(pieces):
        if i not in special:
            twins.setdefault(b, []).append(i)
    preferred = {b: min(ids, key=lambda i: (i in fallback, i)) for b, ids in twins.items()}
    v = len(pieces)
    return TokenBytes(name, "sentencepiece", pieces,
                      np.array([i in special for i in range(v)], dtype=bool),
                      np.array([i in fallback for i in range(v)], dtype=bool),
                      {b: ids for b, ids in twins.items() if len(ids) > 1}, preferred)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError (instead of hanging) when the body runs longer than ``seconds``
    (SIGALRM: main thread only)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tiny_bpe(corpus: list[str], specials: list[str], vocab_size: int,
             lowercase: bool = False) -> Tokenizer:
    """A byte-level BPE trained on ``corpus`` in milliseconds (``specials`` get ids 0, 1, ...);
    ``lowercase`` adds a Lowercase normalizer, which makes the tokenizer lossy."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def greedy_doc(text: bytes, tb: TokenBytes) -> TokenizedDoc:
    """Longest-match tokenization of ``text`` with ``tb`` (every single byte must be a token)."""
    ids, ends, pos = [], [], 0
    longest = max(len(b) for b in tb.table)
    while pos < len(text):
        for n in range(min(longest, len(text) - pos), 0, -1):
            hit = tb.preferred.get(text[pos : pos + n])
            if hit is not None:
                ids.append(hit)
                pos += n
                ends.append(pos)
                break
    return TokenizedDoc(np.array(ids, np.int64), np.array(ends, np.int64), len(text))
