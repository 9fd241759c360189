"""FSDP2 inside the real ``avokit train`` on 2 CPU processes (gloo): ``train.parallel: fsdp``.

KD from a cached teacher into a tiny student from config, launched as users launch it
(``avokit train RECIPE --nproc 2``). Checked from inside the run (its log): each rank holds its
own part of the parameters; a sharded checkpoint (torch.distributed.checkpoint, one part per
rank) resumes to the same next losses; the final student is one Hugging Face directory that
transformers loads and that trained like the DDP run of the same recipe.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_train import make_recipe, write_cache, write_corpus
from test_train_ddp import _env, _log

from avokit.errors import AvokitError
from avokit.recipe import recipe_from_dict
from avokit.recipe.train import TrainConfig
from avokit.train.sharding import ParamShares, avokit_shards
from avokit.train.topology import Topology, check_requested_distribution

# a ~32k-parameter student, 4 steps of 2 micro-batches (a checkpoint after 2), one evaluation of
# 17 held-out rows in batches of 8: rank 0 scores 9 rows in two forwards, rank 1 8 rows in one,
# then one more on no rows (a sharded forward needs every rank)
TINY_STUDENT = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                "tokenizer": {"vocab_size": 512}}
TRAIN = {"steps": 4, "grad_accum": 2, "log_every": 1, "eval_every": 4, "checkpoint_every": 2, "eval_max_rows": 17}


def _recipes(root: Path) -> dict[str, Any]:
    """The same KD recipe (one teacher, cached) as ``ddp`` and ``fsdp`` runs, written as YAML."""
    from avokit.student import train_student_tokenizer
    from avokit.train.data import read_split

    base = make_recipe(root, **TRAIN).model_dump(mode="json")
    base["teachers"] = base["teachers"][:1]
    base["student"] = TINY_STUDENT
    recipes = {}
    for parallel in ("ddp", "fsdp"):
        data = {**base, "name": parallel, "train": {**base["train"], "parallel": parallel}}
        recipes[parallel] = recipe_from_dict(data, root)
        (root / f"{parallel}.yaml").write_text(yaml.safe_dump(data))
    first = recipes["ddp"].run_dir
    write_corpus(first, n_train=48, n_heldout=32)
    docs = read_split(first, "train")
    tok = train_student_tokenizer([d.text for d in docs], 512, first / "tokenizer")
    write_cache(first / "cache" / "smol", "smol", tok, docs)  # a teacher with the student's tokenizer
    shutil.copytree(first, recipes["fsdp"].run_dir)
    return recipes


def _train(recipe_file: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "avokit", "train", str(recipe_file), "--no-progress", "--nproc", "2"],
                          env=_env(), capture_output=True, text=True, timeout=420, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_avokit_train_fsdp_on_two_cpu_processes_shards_resumes_and_matches_ddp(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipes = _recipes(tmp_path)
    _train(tmp_path / "fsdp.yaml")
    out = recipes["fsdp"].run_dir / "student"
    fsdp = _log(out)
    # the mechanism first: one gloo group of two, each rank holding its own part of the student
    assert {(r["world_size"], r["distributed_type"], r["backend"], r["rows_per_rank"]) for r in fsdp} == \
        {(2, "FSDP", "gloo", 4)}
    full, (mine, other) = fsdp[0]["params"], fsdp[0]["params_by_rank"]
    assert mine + other == full and 0 < mine < full and 0 < other < full, fsdp[0]
    assert all(len(r["rows_by_rank"][0]) == 8 and r["rows_by_rank"][0] != r["rows_by_rank"][1] for r in fsdp)
    assert all(r["kd"] > 0 for r in fsdp)  # KD from the cached teacher
    ckpt = out / "checkpoints" / "step-00000002" / "sharded"
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per rank

    # resume from the sharded checkpoint after step 2: the next losses are the uninterrupted run's
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    (out / "training_done.json").unlink()
    first_lines = (out / "train_log.jsonl").read_text().splitlines()
    _train(tmp_path / "fsdp.yaml")
    again = (out / "train_log.jsonl").read_text().splitlines()
    assert again[:2] == first_lines[:2]  # steps 1-2 kept from the first run, not retrained
    for a, b in zip(_log(out)[2:], fsdp[2:], strict=True):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)

    # the DDP run of the same recipe: the same losses, and one whole Hugging Face student each
    _train(tmp_path / "ddp.yaml")
    ddp = _log(recipes["ddp"].run_dir / "student")
    assert {(r["distributed_type"], r["params_by_rank"][0]) for r in ddp} == {("MULTI_CPU", full)}
    for a, b in zip(ddp, fsdp, strict=True):
        assert a["rows_by_rank"] == b["rows_by_rank"]
        assert abs(a["loss"] - b["loss"]) < 2e-3 * max(1.0, a["loss"]), (a, b)
    assert abs(ddp[-1]["heldout_bpb"] - fsdp[-1]["heldout_bpb"]) < 5e-3
    ids = torch.arange(1, 33)[None, :]
    with torch.no_grad():
        logits = [AutoModelForCausalLM.from_pretrained(str(d)).eval()(input_ids=ids).logits
                  for d in (out, recipes["ddp"].run_dir / "student")]
    assert float((logits[0] - logits[1]).abs().max()) < 5e-2
    assert len(AutoTokenizer.from_pretrained(str(out))) == \
        len(AutoTokenizer.from_pretrained(str(recipes["fsdp"].run_dir / "tokenizer")))  # the run's own


def test_fsdp_needs_a_plain_group_of_several_processes() -> None:
    assert not avokit_shards("ddp", "MULTI_CPU") and not avokit_shards("fsdp", "FSDP")  # Accelerate's own
    assert avokit_shards("fsdp", "MULTI_CPU") and avokit_shards("fsdp", "MULTI_GPU")
    with pytest.raises(AvokitError, match="train.parallel: fsdp .* this run has one; .*--nproc N"):
        avokit_shards("fsdp", "NO")
    with pytest.raises(AvokitError, match="train.parallel: fsdp .* DeepSpeed"):
        avokit_shards("fsdp", "DEEPSPEED")


def test_a_student_that_is_not_split_is_refused() -> None:
    ParamShares(full=10, by_rank=[5, 5]).check_sharded()
    ParamShares(full=11, by_rank=[6, 5]).check_sharded()
    for by_rank in ([10, 10], [10], [4, 5], [0, 10]):
        with pytest.raises(AvokitError, match=r"did not shard the student: ranks hold \["):
            ParamShares(full=10, by_rank=by_rank).check_sharded()


def test_fsdp_recipe_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="parallel\n  Input should be 'ddp' or 'fsdp'"):
        TrainConfig(parallel="zero3")
    with pytest.raises(ValueError, match="parallel 'fsdp' cannot run on_policy"):
        TrainConfig(parallel="fsdp", on_policy={})
    with pytest.raises(ValueError, match="parallel 'fsdp' trains in float32 or bf16: set mixed_precision"):
        TrainConfig(parallel="fsdp", mixed_precision="fp16")


def test_fsdp_asked_for_but_not_formed_is_refused() -> None:
    cpu = Topology(world_size=2, rank=0, distributed_type="MULTI_CPU", backend="gloo")
    check_requested_distribution({}, cpu)
    check_requested_distribution({"ACCELERATE_USE_FSDP": "true"},
                                 Topology(world_size=2, rank=0, distributed_type="FSDP", backend="nccl"))
    with pytest.raises(AvokitError, match="FSDP .*ACCELERATE_USE_FSDP.* formed MULTI_CPU.*train.parallel: fsdp"):
        check_requested_distribution({"ACCELERATE_USE_FSDP": "true"}, cpu)
    with pytest.raises(AvokitError, match="DeepSpeed .*ACCELERATE_USE_DEEPSPEED"):
        check_requested_distribution({"ACCELERATE_USE_DEEPSPEED": "true"}, cpu)
