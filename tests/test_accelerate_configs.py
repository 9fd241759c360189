"""configs/accelerate/*.yaml: parsed by Accelerate's own launcher, and each one is routed to a
launcher that starts its ``num_processes`` processes (torchrun or DeepSpeed's), never to the
single-process CPU launcher that the removed ddp_cpu.yaml fell into."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def _validated(config: Path) -> object:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "avokit", "train", "R"])
    return _validate_launch_command(args)[0]


@pytest.mark.parametrize(("name", "flag"), [("ddp_gpu", "multi_gpu"), ("fsdp", "use_fsdp"),
                                             ("deepspeed", "use_deepspeed")])
def test_each_config_starts_its_processes(name: str, flag: str) -> None:
    args = _validated(CONFIGS / f"{name}.yaml")
    assert getattr(args, flag) is True and not args.cpu  # launch_command: torchrun / deepspeed
    assert args.num_processes == 8 and args.num_machines == 1
    if name == "fsdp":
        assert args.fsdp_version == 2 and args.fsdp_reshard_after_forward is True


def test_no_config_uses_the_cpu_launcher_that_starts_one_process() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["ddp_gpu", "deepspeed", "fsdp"]
    for config in CONFIGS.glob("*.yaml"):
        text = config.read_text()
        assert "MULTI_CPU" not in text and "use_cpu: true" not in text, config
