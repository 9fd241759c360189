"""Word tokens for dedup and contamination checks, one definition for every language.

Runs of letters and digits are words; each CJK character (Han, kana, Hangul) is a word of its
own, since those scripts put no spaces between words: a whole Chinese sentence would otherwise
be one "word", and n-gram shingles over it would find no near duplicates.
"""

from __future__ import annotations

import re

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (punctuation and whitespace dropped)."""
    return _WORD.findall(text.lower())
