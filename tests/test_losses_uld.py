"""Universal Logit Distillation: the loss against a per-position reference, its properties,
the recipe option and a training run through the real loop."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train import make_recipe, write_cache, write_corpus

from avokit.losses.kd import TeacherBatch, kd_losses
from avokit.losses.uld import uld_distance, uld_loss
from avokit.recipe.train import LossConfig


def ref_uld_row(student_logits: np.ndarray, teacher_logprobs: np.ndarray) -> float:
    """One position, from the definition: each side's top-k probabilities (the student's top
    min(K, V)) plus its tail mass, sorted descending, zero-padded, L1."""
    p = [float(np.exp(x)) for x in teacher_logprobs if x > -np.inf]
    if sum(p) > 1:
        p = [x / sum(p) for x in p]
    p = p + [0.0] * (len(teacher_logprobs) - len(p))
    teacher = sorted(p + [max(0.0, 1 - sum(p))], reverse=True)
    z = np.exp(student_logits - student_logits.max())
    q = sorted((z / z.sum()).tolist(), reverse=True)[: len(teacher_logprobs)]
    student = sorted(q + [max(0.0, 1 - sum(q))], reverse=True)
    student += [0.0] * (len(teacher) - len(student))
    return sum(abs(a - b) for a, b in zip(teacher, student))


def ref_uld(student_logits: np.ndarray, teacher_logprobs: np.ndarray, weights: np.ndarray) -> float:
    num = den = 0.0
    for n in range(student_logits.shape[0]):
        if weights[n] > 0 and (teacher_logprobs[n] > -np.inf).any():
            num += weights[n] * ref_uld_row(student_logits[n], teacher_logprobs[n])
            den += weights[n]
    return num / den if den else 0.0


def _teacher_topk(g: torch.Generator, n: int, vocab: int, k: int) -> torch.Tensor:
    """Top-k log-probs of random teacher distributions over ``vocab`` ids (unsorted)."""
    full = torch.log_softmax(2 * torch.randn(n, vocab, generator=g), -1)
    top = full.topk(k, dim=-1).values
    return top[:, torch.randperm(k, generator=g)]


@pytest.mark.parametrize("n,vocab,k,t_vocab", [(7, 13, 4, 50), (5, 3, 6, 20), (4, 9, 9, 9)])
def test_uld_loss_matches_the_per_position_reference(n: int, vocab: int, k: int, t_vocab: int) -> None:
    """Random rows, a student vocabulary larger than, smaller than and equal to k."""
    g = torch.Generator().manual_seed(n * 100 + vocab)
    logits = 3 * torch.randn(n, vocab, generator=g, dtype=torch.float64)
    teacher = _teacher_topk(g, n, t_vocab, k)
    teacher[1, : k // 2] = -torch.inf  # a row with empty slots (dense targets have them)
    teacher[2] = -torch.inf  # a row with no probability at all: not informative
    weights = torch.rand(n, generator=g)
    weights[0] = 0.0
    want = ref_uld(logits.numpy(), teacher.double().numpy(), weights.double().numpy())
    got = uld_loss(logits, teacher, weights)
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)
    values, informative = uld_distance(logits, teacher)
    assert informative.tolist() == [i != 2 for i in range(n)]
    for i in range(n):
        assert float(values[i]) == pytest.approx(ref_uld_row(logits[i].numpy(), teacher[i].double().numpy()),
                                                 abs=1e-6)


def test_full_teacher_vector_is_the_papers_uld() -> None:
    """With K = V_teacher both tails are 0: the distance is the L1 between the two full sorted
    probability vectors, the shorter vocabulary padded with zeros (Boizard et al. 2024)."""
    g = torch.Generator().manual_seed(3)
    student = torch.randn(6, 10, generator=g, dtype=torch.float64)
    teacher = torch.log_softmax(torch.randn(6, 17, generator=g, dtype=torch.float64), -1)
    p = teacher.exp().sort(-1, descending=True).values
    q = torch.nn.functional.pad(student.softmax(-1).sort(-1, descending=True).values, (0, 7))
    values, _ = uld_distance(student, teacher)
    assert torch.allclose(values.double(), (p - q).abs().sum(-1), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 40), k=st.integers(1, 12))
def test_uld_properties(seed: int, vocab: int, k: int) -> None:
    """Zero for identical distributions, non-negative, blind to the order of the teacher's
    top-k entries and of the student's vocabulary."""
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(5, vocab, generator=g, dtype=torch.float64)
    own = torch.log_softmax(logits, -1).topk(min(k, vocab), dim=-1).values
    same, informative = uld_distance(logits, own)
    assert informative.all() and float(same.abs().max()) < 1e-6
    teacher = _teacher_topk(g, 5, 60, k)
    base, _ = uld_distance(logits, teacher)
    assert (base >= 0).all() and (base <= 2 + 1e-6).all()
    shuffled, _ = uld_distance(logits[:, torch.randperm(vocab, generator=g)],
                               teacher[:, torch.randperm(k, generator=g)])
    assert torch.allclose(shuffled, base, atol=1e-6)
    if float(base.max()) > 1e-4:  # unequal distributions are told apart
        assert not torch.allclose(base, same, atol=1e-6)


def test_uld_gradient_is_finite_masked_and_descends() -> None:
    g = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(4, 30, generator=g)).requires_grad_(True)
    teacher = _teacher_topk(g, 4, 80, 8)
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0])
    loss = uld_loss(logits, teacher, weights)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0
    assert float(logits.grad[1].abs().sum()) == 0.0  # weight 0: no gradient
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad / logits.grad.norm()
        assert float(uld_loss(stepped, teacher, weights)) < float(loss)
    empty = torch.randn(0, 30, requires_grad=True)
    zero = uld_loss(empty, torch.zeros(0, 8), torch.zeros(0))
    zero.backward()
    assert zero.item() == 0.0


def test_kd_losses_with_uld_ignore_the_teacher_ids() -> None:
    """``token_loss: uld`` in kd_losses is uld_loss over the boundary rows, the unmapped one
    included; the mapped ids change nothing. The chunk term is the bucketed run's."""
    g = torch.Generator().manual_seed(7)
    k, vocab = 4, 11
    ids = torch.randint(-1, vocab, (5, k), generator=g)
    ids[2] = -1
    lps = torch.log_softmax(torch.randn(5, k + 2, generator=g), -1)[:, :k]
    cot = torch.full((2, 8), -1, dtype=torch.long)
    cot[0, 0:3] = 0
    cot[1, 1:4] = 1
    batch = TeacherBatch(b_idx=torch.tensor([0, 0, 0, 1, 1]), s_pos=torch.tensor([0, 2, 5, 1, 4]),
                         topk_student_ids=ids, topk_logprobs=lps,
                         boundary_weight=torch.tensor([1.0, 0.5, 1.0, 2.0, 0.0]),
                         chunk_teacher_logprob=torch.tensor([-3.0, -5.0]), chunk_of_target=cot,
                         chunk_weight=torch.ones(2))
    logits = torch.randn(2, 8, vocab, generator=g)
    tokens = torch.randint(0, vocab, (2, 8), generator=g)
    uld = LossConfig(token_loss="uld")
    out = kd_losses(logits, tokens, batch, uld)
    rows = logits[batch.b_idx, batch.s_pos]
    assert float(out["kd"]) == pytest.approx(float(uld_loss(rows, lps, batch.boundary_weight)), rel=1e-6)
    assert float(out["kd_share"]) == pytest.approx(4.5 / 5)  # every row with teacher mass counts
    other = kd_losses(logits, tokens, replace(batch, topk_student_ids=torch.full_like(ids, -1)), uld)
    assert float(other["kd"]) == float(out["kd"])
    bucketed = kd_losses(logits, tokens, batch, LossConfig())
    assert float(bucketed["kd"]) != pytest.approx(float(out["kd"]))
    assert float(bucketed["chunk"]) == float(out["chunk"])


def test_token_loss_option_is_validated(tmp_path: Path) -> None:
    from avokit.errors import RecipeError
    from avokit.recipe import recipe_from_dict

    base = {"name": "x", "corpus": {"sources": [{"kind": "builtin", "name": "lambada-passages"}]},
            "teachers": [{"name": "gemma3-270m", "kind": "registry"}]}
    uld = recipe_from_dict({**base, "train": {"loss": {"token_loss": "uld"}}}, tmp_path)
    assert uld.train.loss.token_loss == "uld"
    assert recipe_from_dict(base, tmp_path).train.loss.token_loss == "bucketed"
    with pytest.raises(RecipeError, match=r"train\.loss\.token_loss"):
        recipe_from_dict({**base, "train": {"loss": {"token_loss": "wasserstein"}}}, tmp_path)
    with pytest.raises(RecipeError, match=r"train\.loss.*temperature=2\.0 .*token_loss 'uld'"):
        recipe_from_dict({**base, "train": {"loss": {"token_loss": "uld", "temperature": 2.0}}}, tmp_path)


def test_uld_trains_a_student_through_the_loop(tmp_path: Path) -> None:
    """``train.loss.token_loss: uld`` end to end: a tiny student from the recipe, a real cache,
    the real loop; with CE and chunk weighted 0 only ULD trains, and it goes down."""
    from avokit.student import train_student_tokenizer
    from avokit.teachers.registry import registry_tokenizer
    from avokit.train import run_training
    from avokit.train.data import read_split

    run_dir = tmp_path / "runs" / "tiny"
    write_corpus(run_dir, n_train=16, n_heldout=2)
    recipe = make_recipe(tmp_path, steps=8, eval_every=8, checkpoint_every=8, log_every=1,
                         loss={"token_loss": "uld", "ce_weight": 0.0, "chunk_weight": 0.0})
    train = read_split(run_dir, "train")
    train_student_tokenizer([d.text for d in train], 512, run_dir / "tokenizer")
    for name in ("smol", "gemma"):
        write_cache(run_dir / "cache" / name, name, registry_tokenizer("smollm2-135m"), train)
    out = run_training(recipe, progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and all(np.isfinite(r["loss"]) and 0 < r["kd"] <= 2 for r in log)
    # random tiny teachers are nearly flat over 49k ids, so the distances are small (~0.06);
    # the run takes about 7% off them in 8 steps
    assert np.mean([r["kd"] for r in log[-3:]]) < 0.97 * np.mean([r["kd"] for r in log[:3]])
    assert (out / "model.safetensors").is_file()
