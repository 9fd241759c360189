"""configs/accelerate/deepspeed.yaml, turned into the DeepSpeed config an `accelerate launch` of
``avokit train`` would hand DeepSpeed, and validated by DeepSpeed's own parser.

What runs here is what the launcher and Accelerate do with the YAML: Accelerate's launcher
parses it and exports its DeepSpeed settings, Accelerate's ``DeepSpeedPlugin`` builds the
DeepSpeed dict from them, avokit fills the batch sizes from the recipe
(:func:`avokit.train.engine.fill_deepspeed_batch`), and ``deepspeed.runtime.config.DeepSpeedConfig``
parses the result. It is not a run on GPUs (docs/scale-out.md says what is and is not proven).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from test_accelerate_configs import CONFIGS

from avokit.errors import AvokitError
from avokit.train.engine import fill_deepspeed_batch


def _plugin_config(monkeypatch: pytest.MonkeyPatch, config: Path) -> dict[str, Any]:
    """The DeepSpeed dict Accelerate builds in each process that `accelerate launch` starts."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    parsed = launch_command_parser().parse_args(["--config_file", str(config), "-m", "avokit", "train", "R"])
    args, defaults, mp_from_config = _validate_launch_command(parsed)
    # as accelerate's launch_command does before it hands over to its DeepSpeed launcher
    assert args.use_deepspeed and not args.cpu
    args.deepspeed_fields_from_accelerate_config = ",".join(
        [*defaults.deepspeed_config.keys(), *(["mixed_precision"] if mp_from_config else [])])
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(env["ACCELERATE_MIXED_PRECISION"])
    return copy.deepcopy(plugin.deepspeed_config)


def test_deepspeed_yaml_passes_deepspeeds_own_config_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install 'avokit[deepspeed]')")
    from deepspeed.runtime.config import DeepSpeedConfig

    ds = _plugin_config(monkeypatch, CONFIGS / "deepspeed.yaml")
    assert ds["train_micro_batch_size_per_gpu"] == "auto"  # Accelerate leaves it to a DataLoader
    # one process here (DeepSpeed takes the world size from its process group, none is formed):
    # a recipe's global batch of 8 rows, 2 micro-batches per step
    fill_deepspeed_batch(ds, batch_size=8, grad_accum=2, world_size=1)
    parsed = DeepSpeedConfig(ds)
    assert parsed.world_size == 1
    assert (parsed.zero_enabled, parsed.zero_optimization_stage) == (True, 2)
    assert (parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps,
            parsed.train_batch_size) == (8, 2, 16)
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.gradient_clipping == 1.0
    assert parsed.zero_config.offload_optimizer.device == parsed.zero_config.offload_param.device == "none"
    # the parser is real: the same dict with a stage DeepSpeed does not have is refused
    bad = copy.deepcopy(ds)
    bad["zero_optimization"]["stage"] = 7
    with pytest.raises(Exception, match="stage"):
        DeepSpeedConfig(bad)


def test_deepspeed_batch_sizes_come_from_the_recipe() -> None:
    ds: dict[str, Any] = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                          "gradient_accumulation_steps": "auto"}
    fill_deepspeed_batch(ds, batch_size=16, grad_accum=4, world_size=8)
    assert ds == {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4}
    fill_deepspeed_batch(ds, batch_size=16, grad_accum=4, world_size=8)  # the same numbers again: fine
    with pytest.raises(AvokitError, match="sets train_micro_batch_size_per_gpu=2, but the recipe gives 4"):
        fill_deepspeed_batch(ds, batch_size=16, grad_accum=4, world_size=4)
    with pytest.raises(AvokitError, match=r"train.batch_size=10 must be divisible by the number of processes \(4\)"):
        fill_deepspeed_batch({}, batch_size=10, grad_accum=1, world_size=4)
