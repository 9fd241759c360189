"""lm-evaluation-harness adapter: a local task YAML + JSONL data run through lm_eval against a
tiny model, and the harness's accuracy equals avokit's own scoring of the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

ROWS = [
    {"id": f"q{i}", "question": f"What is item {i}?", "choices": ["red", "green apple", "blue sky"], "label": i % 3}
    for i in range(6)
]

TASK_YAML = """task: avokit_toy
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_lm_eval_runs_local_task_with_avokit_model(tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "avokit_toy.yaml").write_text(TASK_YAML.format(data=data))

    from lm_eval.tasks import TaskManager

    import avokit.evaluate.harness  # noqa: F401  (registers "avokit")

    out = lm_eval.simple_evaluate(
        model="avokit", model_args=f"path={tiny_llama_dir},device=cpu,batch_size=4",
        tasks=["avokit_toy"], task_manager=TaskManager(include_path=str(tasks_dir)),
        num_fewshot=0, log_samples=False,
    )
    harness_acc = out["results"]["avokit_toy"]["acc,none"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from avokit.evaluate.tasks import Task, TaskItem, run_task

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    items = [TaskItem(r["id"], f"Question: {r['question']}\nAnswer:", tuple(" " + c for c in r["choices"]), r["label"])
             for r in ROWS]
    ours = run_task(model, tok, Task("toy", "multiple_choice", items)).scores()["acc"].value
    assert harness_acc == pytest.approx(ours)


def test_adapter_rejects_missing_path() -> None:
    from avokit.errors import AvokitError
    from avokit.evaluate.harness import AvokitLM

    with pytest.raises(AvokitError, match="path"):
        AvokitLM(path="/nonexistent/model")


@pytest.mark.parametrize("command", ["lm_eval", "wrapper"])
def test_harness_command_line_knows_model_avokit(tmp_path: Path, tiny_llama_dir: Path, command: str) -> None:
    """`lm_eval --model avokit` itself (lm-eval 0.4 has no plugin discovery: the installed
    avokit-lm-eval.pth registers the model when lm-eval loads its models), and
    `python -m avokit.evaluate.harness`, the harness's command line with the model imported."""
    import os
    import subprocess
    import sys

    argv0 = ([str(Path(sys.executable).parent / "lm_eval")] if command == "lm_eval"
             else [sys.executable, "-m", "avokit.evaluate.harness"])
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "avokit_toy.yaml").write_text(TASK_YAML.format(data=data))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*argv0, "run", "--model", "avokit",
         # batch size and device as the harness's own flags: it passes them to the model itself
         "--model_args", f"path={tiny_llama_dir}", "--device", "cpu", "--batch_size", "4", "--tasks", "avokit_toy",
         "--include_path", str(tasks_dir), "--num_fewshot", "0", "--output_path", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert len(results) == 1
    acc = json.loads(results[0].read_text())["results"]["avokit_toy"]["acc,none"]
    assert 0.0 <= acc <= 1.0


def test_lm_eval_hook_registers_avokit_without_importing_it_at_start_up() -> None:
    """The installed avokit-lm-eval.pth adds its finder at interpreter start-up without
    importing the avokit package (that would pin avokit to the path it was first found on, and
    mutmut's mutated copy could never be imported), and lm-eval's models then know "avokit"."""
    import subprocess
    import sys

    code = ("import sys; at_start = 'avokit' in sys.modules; import lm_eval.models; "
            "from lm_eval.api.registry import model_registry; "
            "print(at_start, 'avokit' in model_registry)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, cwd="/")
    assert out.stdout.split()[-2:] == ["False", "True"], out.stdout + out.stderr
