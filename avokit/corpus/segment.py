"""Cut long texts into documents of ``min_chars..max_chars`` on paragraph and sentence breaks."""

from __future__ import annotations

import re

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n|\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Split one paragraph longer than ``max_chars`` at sentence ends, then at spaces."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:  # a run-on sentence: cut at the last space that fits
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        joined = f"{current} {sentence}" if current else sentence
        if len(joined) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = joined
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def segment_text(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Pack a text's paragraphs greedily into pieces of at most ``max_chars`` characters.

    Paragraphs (separated by newlines) are joined with ``"\\n"`` while the piece stays under
    ``max_chars``; a paragraph longer than ``max_chars`` is cut at sentence ends. Pieces shorter
    than ``min_chars`` are dropped (headers, captions, stray lines), so every returned piece
    has ``min_chars <= len <= max_chars``.
    """
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    units: list[str] = []
    for p in paragraphs:
        units.extend(_split_long(p, max_chars) if len(p) > max_chars else [p])
    pieces: list[str] = []
    current = ""
    for unit in units:
        joined = f"{current}\n{unit}" if current else unit
        if len(joined) > max_chars:
            pieces.append(current)
            current = unit
        else:
            current = joined
    if current:
        pieces.append(current)
    return [p for p in pieces if min_chars <= len(p) <= max_chars]


def segment_lines(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Pack whole lines, byte for byte, into pieces of at most ``max_chars`` characters.

    For code: indentation, tabs, runs of spaces and blank lines stay exactly as written (every
    piece is a contiguous slice of ``text``); a single line longer than ``max_chars`` is cut
    hard. Pieces shorter than ``min_chars`` are dropped.
    """
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = line
        else:
            current += line
    if current:
        pieces.append(current)
    return [p for p in pieces if min_chars <= len(p) <= max_chars and p.strip()]
