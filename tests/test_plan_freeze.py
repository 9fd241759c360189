"""The dry-run plan's training FLOPs with ``train.freeze``, checked against torch's own count
of the matrix products in a real forward and backward of a tiny model with the same freeze."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from avokit.pipeline.student_size import forward_flops_per_token, train_flops_per_token
from avokit.recipe.train import FreezeConfig
from avokit.train.freeze import freeze_student

CONTEXT = 8  # short: the attention terms, which the estimate approximates, stay ~1% of the total


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def _measured(model: LlamaForCausalLM) -> tuple[float, float]:
    """Matrix-product FLOPs per token of one forward, and of forward + backward."""
    ids = torch.randint(0, 512, (1, CONTEXT))
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(ids)
    with FlopCounterMode(display=False) as both:
        model(ids, labels=ids).loss.backward()
    return fwd.get_total_flops() / CONTEXT, both.get_total_flops() / CONTEXT


@pytest.mark.parametrize("freeze", [FreezeConfig(), FreezeConfig(layers=2), FreezeConfig(embeddings=True),
                                    FreezeConfig(embeddings=True, layers=3), FreezeConfig(layers=4)])
def test_train_flops_match_the_counted_backward(freeze: FreezeConfig) -> None:
    model = _model()
    params = sum(p.numel() for p in model.parameters())
    forward = forward_flops_per_token(model.config, params, CONTEXT)
    estimate = train_flops_per_token(model, forward, CONTEXT, freeze)
    freeze_student(model, freeze) if freeze.any else None
    fwd_measured, train_measured = _measured(model)
    # the mechanism is there: freezing really removes backward work torch would otherwise do
    if freeze.any:
        assert train_measured < 2.95 * fwd_measured
    # the plan's ratio of training to forward cost is torch's, within the estimate's approximations
    assert estimate / forward == pytest.approx(train_measured / fwd_measured, rel=0.03)
