"""Both registry teachers, loaded for real from their PyPI packages (offline)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from avokit.recipe.teachers import TeacherConfig
from avokit.teachers import HFTeacher, load_teacher
from avokit.teachers.check import CHECK_PARAGRAPH, check_teacher
from avokit.teachers.registry import is_installed

pytestmark = pytest.mark.real_teacher


def _load(name: str) -> Iterator[HFTeacher]:
    if not is_installed(name):
        pytest.skip(f"registry teacher {name} is not installed (pip install assets)")
    teacher = load_teacher(TeacherConfig(name=name, kind="registry", device="cpu"), Path.cwd())
    assert isinstance(teacher, HFTeacher)
    yield teacher
    teacher.close()


@pytest.fixture(scope="module")
def smollm() -> Iterator[HFTeacher]:
    yield from _load("smollm2-135m")


@pytest.fixture(scope="module")
def gemma() -> Iterator[HFTeacher]:
    yield from _load("gemma3-270m")


def test_smollm2_check_and_direct_logits(smollm: HFTeacher) -> None:
    info = smollm.info
    assert (info.vocab_size, info.tokenizer_kind, info.backend) == (49152, "byte_level", "gguf")
    assert smollm.start_token_id == smollm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    result = check_teacher(smollm)
    assert result.perplexity < 30, result
    assert " Paris" in [t for t, _ in result.top_next]
    # chunked scoring equals the model's own full logits on a real model too
    rec = smollm.score([CHECK_PARAGRAPH[:200]], ["p"], 5)[0]
    ids = torch.tensor([[smollm.start_token_id, *rec.token_ids.tolist()]])
    with torch.no_grad():
        lp = torch.log_softmax(smollm.model(ids).logits[0, :-1].float(), -1)
    gold = lp.gather(1, ids[0, 1:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(rec.gold_logprob, gold, atol=1e-3)


def test_gemma3_check(gemma: HFTeacher, smollm: HFTeacher) -> None:
    info = gemma.info
    assert (info.vocab_size, info.tokenizer_kind) == (262144, "sentencepiece")
    assert info.license == "Gemma Terms of Use"
    assert gemma.start_token_id == gemma.tokenizer.bos_token_id
    result = check_teacher(gemma)
    assert result.perplexity < 30, result
    assert " Paris" in [t for t, _ in result.top_next], result.top_next
    assert info.tokenizer_fingerprint != smollm.info.tokenizer_fingerprint
    assert info.fingerprint != smollm.info.fingerprint
