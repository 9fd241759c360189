"""The generate stage with tiny random teachers: provenance, the training split, resume after
a kill, dedup against the corpus, and errors that name the field or line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_train import make_docs

from avokit.corpus import load_split, read_documents
from avokit.errors import AvokitError
from avokit.generate import GenerationInterrupted, corpus_prefix, run_generate
from avokit.recipe import recipe_from_dict


def _recipe(tmp: Path, teacher_dir: Path, prompts: list[dict[str, Any]], **gen: Any) -> Any:
    corpus = tmp / "docs.jsonl"
    if not corpus.is_file():
        tmp.mkdir(parents=True, exist_ok=True)
        corpus.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in make_docs(16, 7)))
    data = {
        "name": "gen", "runs_dir": str(tmp / "runs"),
        "corpus": {"sources": [{"kind": "jsonl", "path": str(corpus), "domain": "english"}],
                   "heldout_fraction": 0.25, "min_chars": 20},
        "teachers": [{"name": "smol", "kind": "hf", "path": str(teacher_dir)}],
        "student": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
                    "num_kv_heads": 2, "tokenizer": {"vocab_size": 400}},
        "train": {"steps": 4, "batch_size": 4, "seq_len": 32, "eval_every": 4, "checkpoint_every": 4,
                  "log_every": 2, "eval_max_rows": 4},
        "generate": {"prompts": prompts, "max_new_tokens": 12, "samples_per_prompt": 2, "min_chars": 1,
                     "seed": 5, **gen},
    }
    return recipe_from_dict(data, tmp)


@pytest.fixture()
def teacher_dir(tiny_model_factory: Any, smollm2_tokenizer: Any) -> Path:
    return tiny_model_factory(smollm2_tokenizer, "llama")


def _prompt_file(tmp: Path) -> Path:
    path = tmp / "prompts.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "Name a colour.", "domain": "chat"}) + "\n\n"
                    + json.dumps({"prompt": "Count to three."}) + "\n")
    return path


def test_generations_carry_provenance_and_join_the_training_split(tmp_path: Path, teacher_dir: Path) -> None:
    prompts = [{"kind": "corpus", "prefix_chars": 40, "max_prompts": 3},
               {"kind": "jsonl", "path": str(_prompt_file(tmp_path)), "chat": True}]
    recipe = _recipe(tmp_path, teacher_dir, prompts)
    out = run_generate(recipe)
    rows = [json.loads(x) for x in (out / "smol.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["samples"]) == 2 for r in rows)
    assert {"teacher", "license", "fingerprint", "seed", "sampling", "source", "prompt", "domain"} <= rows[0].keys()
    assert rows[0]["sampling"] == {"max_new_tokens": 12, "temperature": 1.0, "top_p": 1.0}
    # corpus prompts are prefixes of training documents only, never held-out ones
    train = {d.doc_id: d for d in load_split(recipe, "train", generated=False)}
    held = {d.doc_id for d in load_split(recipe, "heldout")}
    corpus_rows = [r for r in rows if r["source"].startswith("corpus")]
    for r in corpus_rows:
        doc_id = r["prompt_id"].split(":", 1)[1]
        assert doc_id in train and doc_id not in held
        assert r["prompt"] == corpus_prefix(train[doc_id].text, 40) and not r["chat"]
    chat_rows = [r for r in rows if r["chat"]]
    assert [r["prompt_id"].split(":")[1] for r in chat_rows] == ["q1", "3"]  # id, else the line number
    assert [r["domain"] for r in chat_rows] == ["chat", "general"]
    docs = read_documents(out / "documents.parquet")
    assert docs and all(d.source == "generated:smol" and d.license for d in docs)
    assert all(d.text.startswith(next(r["prompt"] for r in rows if d.doc_id.startswith(f"gen:smol:{r['prompt_id']}:")))
               for d in docs)
    with_generated = load_split(recipe, "train")
    assert with_generated[: len(train)] == list(train.values()) and with_generated[len(train):] == docs
    assert run_generate(recipe) == out  # finished: nothing is generated twice
    assert len((out / "smol.jsonl").read_text().splitlines()) == 5


def test_a_kill_mid_generation_resumes_to_the_same_text_without_duplicates(tmp_path: Path,
                                                                          teacher_dir: Path) -> None:
    prompts = [{"kind": "corpus", "prefix_chars": 30, "max_prompts": 5}]
    straight = run_generate(_recipe(tmp_path / "a", teacher_dir, prompts))
    recipe = _recipe(tmp_path / "b", teacher_dir, prompts)
    with pytest.raises(GenerationInterrupted):
        run_generate(recipe, stop_after=lambda n: n == 2)
    path = recipe.run_dir / "generated" / "smol.jsonl"
    assert len(path.read_text().splitlines()) == 2
    with path.open("a") as f:
        f.write('{"prompt_id": "torn')  # killed while a line was written
    out = run_generate(recipe)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len({r["prompt_id"] for r in rows}) == len(rows) == 5
    want = [json.loads(x) for x in (straight / "smol.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [r["samples"] for r in want]  # seeded per (teacher, prompt)
    assert read_documents(out / "documents.parquet") == read_documents(straight / "documents.parquet")


def test_generated_copies_of_corpus_text_are_dropped(tmp_path: Path, teacher_dir: Path) -> None:
    """A teacher that reproduces a held-out document must not leak it into training."""
    from avokit.generate.run import GeneratedManifest

    recipe = _recipe(tmp_path, teacher_dir, [{"kind": "corpus", "max_prompts": 2}])
    out = run_generate(recipe)
    path = out / "smol.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    held = load_split(recipe, "heldout")[0].text
    rows[0]["prompt"], rows[0]["samples"] = "", [held, held + " again and again"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "manifest.json").unlink()  # finalise again from the edited file
    run_generate(recipe)
    docs = read_documents(out / "documents.parquet")
    assert all(held not in d.text for d in docs)
    stats = GeneratedManifest.model_validate_json((out / "manifest.json").read_text()).teachers["smol"]
    assert stats.duplicates >= 2 and stats.kept == len(docs) == stats.samples - stats.duplicates


def test_bad_generate_input_names_the_field_or_line(tmp_path: Path, teacher_dir: Path) -> None:
    with pytest.raises(AvokitError, match=r"generate.teachers: unknown teacher\(s\) \['nope'\]"):
        _recipe(tmp_path, teacher_dir, [{"kind": "corpus"}], teachers=["nope"])
    with pytest.raises(AvokitError, match=r"generate.prompts.0.*jsonl prompt source needs `path`"):
        _recipe(tmp_path, teacher_dir, [{"kind": "jsonl"}])
    with pytest.raises(AvokitError, match=r"generate.prompts"):
        _recipe(tmp_path, teacher_dir, [])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\nnot json\n")
    with pytest.raises(AvokitError, match=r"bad.jsonl:2: not valid JSON"):
        run_generate(_recipe(tmp_path, teacher_dir, [{"kind": "jsonl", "path": str(bad)}]))
    bad.write_text(json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(AvokitError, match=r"bad.jsonl:1: `prompt` must be a non-empty string"):
        run_generate(_recipe(tmp_path, teacher_dir, [{"kind": "jsonl", "path": str(bad)}]))
    bad.write_text("")
    with pytest.raises(AvokitError, match=r"generate.prompts\[0\] \(jsonl\): no prompts"):
        run_generate(_recipe(tmp_path, teacher_dir, [{"kind": "jsonl", "path": str(bad)}]))


def test_chat_prompts_need_a_chat_template(tmp_path: Path, tiny_model_factory: Any, gemma3_tokenizer: Any) -> None:
    gemma = tiny_model_factory(gemma3_tokenizer, "gemma3")
    recipe = _recipe(tmp_path, gemma, [{"kind": "jsonl", "path": str(_prompt_file(tmp_path)), "chat": True}])
    with pytest.raises(AvokitError, match="has no chat template; use `chat: false`"):
        run_generate(recipe)


def test_generate_capture_train_end_to_end(tmp_path: Path, teacher_dir: Path) -> None:
    """The distill pipeline with a generate section: generated documents are captured and
    trained on like corpus text."""
    from avokit.cache import CacheReader
    from avokit.pipeline import distill

    recipe = _recipe(tmp_path, teacher_dir, [{"kind": "corpus", "max_prompts": 3}], max_new_tokens=24)
    done = distill(recipe, stages=("corpus", "generate", "capture", "train"))
    assert [r.stage for r in done] == ["corpus", "generate", "capture", "train"]
    generated = read_documents(recipe.run_dir / "generated" / "documents.parquet")
    captured = set(CacheReader(recipe.run_dir / "cache" / "smol").doc_ids())
    assert generated and {d.doc_id for d in generated} <= captured
    log = [json.loads(x) for x in (recipe.run_dir / "student" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[-1]["kd"] > 0


def test_a_longer_floor_drops_short_generations_without_generating_again(tmp_path: Path,
                                                                        teacher_dir: Path) -> None:
    from avokit.generate.run import GeneratedManifest

    prompts = [{"kind": "corpus", "max_prompts": 2}]
    out = run_generate(_recipe(tmp_path, teacher_dir, prompts))
    lines = (out / "smol.jsonl").read_text()
    run_generate(_recipe(tmp_path, teacher_dir, prompts, min_chars=10_000))
    assert (out / "smol.jsonl").read_text() == lines  # nothing generated again
    stats = GeneratedManifest.model_validate_json((out / "manifest.json").read_text()).teachers["smol"]
    assert stats.too_short == stats.samples == 4 and stats.kept == 0
    assert read_documents(out / "documents.parquet") == []
    with pytest.raises(AvokitError, match="other generate settings"):
        run_generate(_recipe(tmp_path, teacher_dir, prompts, temperature=0.5))


def test_the_plan_lists_a_generate_stage_per_teacher(tmp_path: Path, teacher_dir: Path) -> None:
    from avokit.pipeline import make_plan

    recipe = _recipe(tmp_path, teacher_dir, [{"kind": "corpus", "max_prompts": 7}], max_new_tokens=50)
    gen = [s for s in make_plan(recipe).stages if s.stage.startswith("generate:")]
    assert [s.stage for s in gen] == ["generate:smol"] and gen[0].tokens == 7 * 2 * 50


def test_cli_generate_without_a_generate_section_is_one_clear_error(capsys: Any) -> None:
    from avokit.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "avocado-mini"])
    assert exit_info.value.code == 2
    assert "recipe 'avocado-mini' has no `generate` section" in capsys.readouterr().err
