"""Teacher-written training documents (the generate stage's output), read by the corpus
layer so that every stage that reads the training split sees them the same way."""

from __future__ import annotations

from pathlib import Path

from avokit.errors import AvokitError

GENERATED_DIR = "generated"
DOCUMENTS = "documents.parquet"  # deduplicated, canary-free: what joins the training split
MANIFEST = "manifest.json"


def generated_dir(run_dir: Path) -> Path:
    """``run_dir/generated``."""
    return Path(run_dir) / GENERATED_DIR


def generated_documents_path(run_dir: Path, recipe_name: str) -> Path:
    """The finished generated documents; a clear error when the stage has not finished."""
    path = generated_dir(run_dir) / DOCUMENTS
    if not (generated_dir(run_dir) / MANIFEST).is_file() or not path.is_file():
        raise AvokitError(f"{path}: the recipe has a generate section but its documents are not written; "
                          f"run `avokit generate {recipe_name}` first")
    return path
