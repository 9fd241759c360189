"""Corpus stage: every source kind, segmentation, dedup, deterministic split, canary."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avokit.cli.corpus import run_corpus
from avokit.corpus import (
    AVOKIT_CANARY,
    CanaryError,
    Document,
    build_corpus,
    dedup,
    load_split,
    minhash_signature,
    segment_text,
    split_documents,
)
from avokit.errors import AvokitError, RecipeError
from avokit.recipe import Recipe, recipe_from_dict

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def passage(seed: int, n_words: int = 60) -> str:
    """A distinct pseudo-random passage (distinct seeds share few 5-grams)."""
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def recipe_for(root: Path, sources: list[dict], **corpus: object) -> Recipe:
    data = {"name": "c", "runs_dir": str(root / "runs"),
            "corpus": {"sources": sources, "min_chars": 50, "max_chars": 800, **corpus},
            "teachers": [{"name": "gemma3-270m", "kind": "registry"}]}
    return recipe_from_dict(data, root)


def test_every_source_kind(tmp_path: Path) -> None:
    texts = [passage(i) for i in range(12)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts[:3]))
    pq.write_table(pa.table({"text": texts[3:6]}), tmp_path / "b.parquet")
    (tmp_path / "txt").mkdir()
    for i, t in enumerate(texts[6:9]):
        (tmp_path / "txt" / f"{i}.txt").write_text(t, encoding="utf-8")
    from datasets import Dataset

    Dataset.from_dict({"text": texts[9:12]}).save_to_disk(str(tmp_path / "hf"))
    recipe = recipe_for(tmp_path, [
        {"kind": "jsonl", "path": "a.jsonl", "text_field": "body"},
        {"kind": "parquet", "path": "b.parquet"},
        {"kind": "text", "path": "txt"},
        {"kind": "hf_dataset", "path": "hf"},
    ])
    manifest = build_corpus(recipe)
    assert [s.documents for s in manifest.sources] == [3, 3, 3, 3]
    docs = load_split(recipe, "train") + load_split(recipe, "heldout")
    assert sorted(d.text for d in docs) == sorted(texts)
    assert {d.source for d in docs} == {"jsonl:a.jsonl", "parquet:b.parquet", "text:txt", "hf_dataset:hf"}
    assert manifest.documents["heldout"] >= 1 and sum(manifest.documents.values()) == 12
    # a second build with the same corpus section is skipped: files untouched
    stamp = (recipe.run_dir / "corpus" / "train.parquet").stat().st_mtime_ns
    assert build_corpus(recipe) == manifest
    assert (recipe.run_dir / "corpus" / "train.parquet").stat().st_mtime_ns == stamp


def test_corpus_behind_teacher_caches_is_never_replaced(tmp_path: Path) -> None:
    """Changing the corpus section rebuilds the corpus, unless teacher caches were captured
    from the current one: then the error names them and the old corpus stays as it was."""
    texts = [passage(i) for i in range(12)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    first = recipe_for(tmp_path, [{"kind": "jsonl", "path": "a.jsonl", "max_docs": 10}])
    build_corpus(first)
    smaller = recipe_for(tmp_path, [{"kind": "jsonl", "path": "a.jsonl", "max_docs": 8}])
    assert sum(build_corpus(smaller).documents.values()) == 8  # no caches: rebuilt
    manifest = (smaller.run_dir / "corpus" / "manifest.json").read_text()
    cache = smaller.run_dir / "cache" / "gemma3-270m"
    cache.mkdir(parents=True)
    (cache / "capture.json").write_text("{}")
    with pytest.raises(AvokitError, match=r"caches gemma3-270m in .*cache were captured from the corpus"):
        build_corpus(first)
    assert (smaller.run_dir / "corpus" / "manifest.json").read_text() == manifest
    # the same corpus again (a damaged file) is rebuilt even with caches
    (smaller.run_dir / "corpus" / "train.parquet").write_bytes(b"damaged")
    assert sum(build_corpus(smaller).documents.values()) == 8


def test_builtin_source_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = recipe_for(tmp_path, [{"kind": "builtin", "name": "qasper-papers", "max_docs": 30}],
                        min_chars=200, max_chars=1500)
    yaml_path = tmp_path / "r.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    manifest = run_corpus(str(yaml_path))
    assert manifest.sources[0].documents == 30
    docs = load_split(recipe, "train")
    assert all(200 <= len(d.text) <= 1500 for d in docs)
    with pytest.raises(AvokitError, match="unknown builtin 'nope'"):
        build_corpus(recipe_for(tmp_path / "x", [{"kind": "builtin", "name": "nope"}]))


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine fine fine"}\n{not json\n')
    with pytest.raises(AvokitError, match=r"bad.jsonl:2: not valid JSON"):
        build_corpus(recipe_for(tmp_path, [{"kind": "jsonl", "path": "bad.jsonl"}]))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(AvokitError, match=r"p.parquet: .*'text'"):
        build_corpus(recipe_for(tmp_path / "2", [{"kind": "parquet", "path": str(tmp_path / "p.parquet")}]))
    with pytest.raises(AvokitError, match="corpus not built"):
        load_split(recipe_for(tmp_path / "3", [{"kind": "jsonl", "path": str(bad)}]), "train")


def test_segmentation_bounds() -> None:
    para = " ".join(f"Sentence number {i} is here." for i in range(80))
    text = "Title\n\n" + para + "\n\nshort\n\n" + passage(1) + "\n" + passage(2)
    pieces = segment_text(text, 100, 400)
    assert pieces and all(100 <= len(p) <= 400 for p in pieces)
    assert "Title" not in pieces  # too short on its own: packed with the next paragraph
    for i in range(80):  # long paragraphs are cut between sentences, never inside one
        assert sum(f"Sentence number {i} is here." in p for p in pieces) == 1


def test_exact_and_near_duplicates() -> None:
    base = passage(7, 120)
    words = base.split()
    near = " ".join(words[:-1] + ["omega."])  # one word changed at the end
    docs = [Document(f"d{i}", t, "s") for i, t in enumerate(
        [base, base.upper().replace(".", " ."), near, passage(8, 120), passage(9, 120)])]
    kept, stats = dedup(docs, threshold=0.8)
    assert [d.doc_id for d in kept] == ["d0", "d3", "d4"]
    assert (stats.exact, stats.near) == (1, 1)
    sig_a, sig_b = minhash_signature(base), minhash_signature(near)
    assert 0.8 < float((sig_a == sig_b).mean()) < 1.0
    assert float((sig_a == minhash_signature(passage(8, 120))).mean()) < 0.2


def test_split_is_deterministic_and_order_free() -> None:
    docs = [Document(f"id{i}", f"text {i}", "s") for i in range(200)]
    a = split_documents(docs, 0.1, seed=3)
    b = split_documents(list(reversed(docs)), 0.1, seed=3)
    assert {d.doc_id for d in a["heldout"]} == {d.doc_id for d in b["heldout"]}
    assert 8 <= len(a["heldout"]) <= 35
    c = split_documents(docs, 0.1, seed=4)
    assert {d.doc_id for d in c["heldout"]} != {d.doc_id for d in a["heldout"]}


def _long_text(seed: int, paragraphs: int = 5) -> str:
    """A text that segments into ``paragraphs`` documents at max_chars=800 (~680 chars each)."""
    return "\n\n".join(passage(seed * 100 + j, 110) for j in range(paragraphs))


def test_every_segment_of_a_source_text_lands_in_one_split(tmp_path: Path) -> None:
    """A long text is cut into several documents; all of them share one split (per document,
    a held-out segment would continue a text trained on), and the quotas still hold."""
    texts = [_long_text(i) for i in range(20)]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "txt").mkdir()
    for i in range(4):
        (tmp_path / "txt" / f"{i}.txt").write_text(_long_text(50 + i), encoding="utf-8")
    recipe = recipe_for(tmp_path, [{"kind": "jsonl", "path": "long.jsonl"}, {"kind": "text", "path": "txt"}],
                        heldout_fraction=0.2, validation_fraction=0.1)
    manifest = build_corpus(recipe)
    assert [s.documents for s in manifest.sources] == [100, 20]
    split_of: dict[str, set[str]] = {}
    for split in ("train", "validation", "heldout"):
        for doc in load_split(recipe, split):
            split_of.setdefault(doc.group, set()).add(split)
    assert len(split_of) == 24 and all(len(s) == 1 for s in split_of.values())
    # 120 documents in texts of 5; quotas 24 held out, 12 validation, met as closely as whole
    # texts allow: 5 texts (25 documents) and 2 (10)
    assert manifest.documents == {"train": 85, "validation": 10, "heldout": 25}
    assert manifest.split_by == "source_text"
    assert manifest.domain_texts == {"general": {"train": 17, "validation": 2, "heldout": 5}}
    groups = {d.group for d in load_split(recipe, "heldout")}
    assert all(g.startswith(("jsonl:long.jsonl:", "text:txt:")) for g in groups)


def test_max_docs_per_text_takes_each_texts_first_documents(tmp_path: Path) -> None:
    texts = [_long_text(i) for i in range(6)]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    every = build_corpus(recipe_for(tmp_path / "a", [{"kind": "jsonl", "path": str(tmp_path / "long.jsonl")}]))
    firsts = recipe_for(tmp_path / "b", [{"kind": "jsonl", "path": str(tmp_path / "long.jsonl"),
                                          "max_docs_per_text": 1}])
    assert [s.documents for s in every.sources] == [30]
    assert [s.documents for s in build_corpus(firsts).sources] == [6]
    docs = [d for split in ("train", "validation", "heldout") for d in load_split(firsts, split)]
    assert len({d.group for d in docs}) == 6
    with pytest.raises(RecipeError, match=r"corpus\.sources\[0\]\.max_docs_per_text"):
        recipe_for(tmp_path / "c", [{"kind": "jsonl", "path": "x.jsonl", "max_docs_per_text": 0}])


@pytest.mark.parametrize("name", ["avocado-smol", "avocado-mini"])
def test_the_built_in_recipes_hold_out_every_domain(tmp_path: Path, name: str) -> None:
    """The built-in recipes' reports read every figure per domain: each domain needs held-out
    text (and, where the recipe has a validation split, validation text), which the split by
    source text only gives where a domain has several texts."""
    from avokit.recipe import load_recipe

    recipe = load_recipe(name).model_copy(update={"runs_dir": tmp_path})
    manifest = build_corpus(recipe)
    assert set(manifest.domains) == {"english", "code", "chinese"}
    need = ["train", "heldout"] + (["validation"] if recipe.corpus.validation_fraction else [])
    assert all(per.get(s, 0) >= 1 for per in manifest.domains.values() for s in need), manifest.domains


def _grouped(domain: str, sizes: list[int]) -> list[Document]:
    return [Document(f"{domain}{g}-{i}", "t", "s", domain, group=f"{domain}-text{g}")
            for g, n in enumerate(sizes) for i in range(n)]


def test_split_assigns_whole_groups_order_free_with_document_quotas() -> None:
    docs = _grouped("code", [1, 30, 2, 3, 1, 4, 2, 5, 1, 1]) + _grouped("english", [6, 6])
    held_out = set()
    for seed in range(6):
        a = split_documents(docs, 0.2, seed=seed, validation_fraction=0.1)
        b = split_documents(list(reversed(docs)), 0.2, seed=seed, validation_fraction=0.1)
        for split in ("train", "validation", "heldout"):
            assert {d.doc_id for d in a[split]} == {d.doc_id for d in b[split]}
            assert [d.doc_id for d in a[split]] == [d.doc_id for d in docs if d in set(a[split])]
        where = {d.group: s for s, part in a.items() for d in part}
        assert all(where[d.group] == s for s, part in a.items() for d in part)
        code = {s: sum(d.domain == "code" for d in part) for s, part in a.items()}
        # quotas count documents (50 code: 10 held out, 5 validation); the 30-document text is
        # never taken, it would overshoot them
        assert abs(code["heldout"] - 10) <= 1 and abs(code["validation"] - 5) <= 1, (seed, code)
        assert where["code-text1"] == "train"
        # two texts of one domain: one is held out, the other trains, whatever the fraction
        english = {s: sum(d.domain == "english" for d in part) for s, part in a.items()}
        assert english == {"train": 6, "validation": 0, "heldout": 6}
        held_out |= {d.group for d in a["heldout"]}
    assert len(held_out) >= 8  # the seed re-draws which texts are held out
    tiny = split_documents(_grouped("x", [3, 3]), 0.01, seed=0)
    assert (len(tiny["heldout"]), len(tiny["train"])) == (3, 3)
    # one text: all train, even when cut into many documents
    one = split_documents(_grouped("x", [9]), 0.5, seed=0, validation_fraction=0.2)
    assert (len(one["train"]), len(one["heldout"]), len(one["validation"])) == (9, 0, 0)


def test_corpus_files_without_groups_stay_readable(tmp_path: Path) -> None:
    """A corpus Parquet written before documents carried their source text (or a generated
    document) reads with an empty group: each document is a text of its own."""
    from avokit.corpus import read_documents

    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["x", "y"], "source": ["s", "s"]}),
                   tmp_path / "old.parquet")
    docs = read_documents(tmp_path / "old.parquet")
    assert [(d.group, d.split_group) for d in docs] == [("", "a"), ("", "b")]
    split = split_documents(docs, 0.5, seed=0)
    assert len(split["heldout"]) == 1 and len(split["train"]) == 1


def test_corpus_of_an_older_format_behind_caches_names_the_format_change(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": passage(i)}) + "\n" for i in range(6)))
    recipe = recipe_for(tmp_path, [{"kind": "jsonl", "path": "a.jsonl"}])
    build_corpus(recipe)
    path = recipe.run_dir / "corpus" / "manifest.json"
    old = json.loads(path.read_text())
    old.update(format_version=2, config_hash="from-avokit-with-format-2")
    path.write_text(json.dumps(old))
    (recipe.run_dir / "cache" / "gemma3-270m").mkdir(parents=True)
    (recipe.run_dir / "cache" / "gemma3-270m" / "capture.json").write_text("{}")
    changed = r"corpus format changed \(version 2 -> 3: .*every segment of a source text together\)"
    with pytest.raises(AvokitError, match=changed):
        build_corpus(recipe)


def test_canary_is_refused(tmp_path: Path) -> None:
    texts = [passage(1), passage(2) + " " + AVOKIT_CANARY.upper() + " " + passage(3)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    recipe = recipe_for(tmp_path, [{"kind": "jsonl", "path": "c.jsonl"}])
    with pytest.raises(CanaryError, match=r"corpus source 'jsonl:c.jsonl', document 'jsonl:c.jsonl:[0-9a-f]+'"):
        build_corpus(recipe)
    assert not (recipe.run_dir / "corpus" / "manifest.json").exists()
