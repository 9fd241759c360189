"""Per-domain teacher weights (``train.fusion.domain_weights``): routing each domain's documents
to the teachers named for it, in every fusion mode, and recipe errors that name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train import make_docs, make_recipe

from avokit.corpus import Document
from avokit.errors import AvokitError
from avokit.train.data import pack_documents
from avokit.train.kd_data import TeacherSource
from avokit.train.run import fusion_weights, teacher_priors


def _packed(tmp_path: Path) -> object:
    from avokit.student import train_student_tokenizer

    docs = make_docs(6, 4)
    docs = [Document(d.doc_id, d.text, d.source, domain=("code" if i % 2 else "english")) for i, d in enumerate(docs)]
    docs[5] = Document(docs[5].doc_id, docs[5].text, "test", domain="chinese")  # a domain not routed
    tok = train_student_tokenizer([d.text for d in docs], 300, tmp_path / "tok")
    return pack_documents(docs, tok, 32, tok.eos_token_id)


def _sources(packed: object, bpb: list[float]) -> list[TeacherSource]:
    class _Doc:
        def __init__(self, value: float) -> None:
            self.bpb = value

    out = []
    for name, weight, value in zip(("smol", "gemma"), (1.0, 0.5), bpb):
        src = TeacherSource(name, weight, {}, np.zeros(1, dtype=np.int64))
        src.memo.update({d: _Doc(value) for d in packed.doc_ids})  # type: ignore[attr-defined,misc]
        out.append(src)
    return out


@pytest.mark.parametrize("mode", ["fixed", "bpb_softmax", "span_softmax", "min_ce"])
def test_domain_weights_route_documents_and_keep_the_rest(tmp_path: Path, mode: str) -> None:
    packed = _packed(tmp_path)
    recipe = make_recipe(tmp_path, fusion={"mode": mode, "domain_weights": {
        "code": {"smol": 1.0}, "english": {"gemma": 2.0, "smol": 0.0}}})
    sources = _sources(packed, [1.2, 1.0])
    priors = teacher_priors(recipe, packed, sources)
    for d, dom in enumerate(packed.domains):  # type: ignore[attr-defined]
        want = {"code": [1.0, 0.0], "english": [0.0, 2.0], "chinese": [1.0, 0.5]}[dom]
        assert priors[d].tolist() == want
    w = fusion_weights(recipe, packed, sources)
    for d, dom in enumerate(packed.domains):  # type: ignore[attr-defined]
        if dom == "code":
            assert w[d].tolist() == [1.0, 0.0]
        elif dom == "english":
            assert w[d].tolist() == [0.0, 1.0]
        else:  # not routed: the teachers' own weights, as without domain_weights
            plain = fusion_weights(make_recipe(tmp_path, fusion={"mode": mode}), packed, sources)
            assert np.allclose(w[d], plain[d])


def test_domain_weights_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises((AvokitError, ValueError), match=r"domain_weights\['code'\]: unknown teacher"):
        make_recipe(tmp_path, fusion={"domain_weights": {"code": {"qwen": 1.0}}})
    with pytest.raises((AvokitError, ValueError), match=r"domain_weights\['code'\].*>= 0"):
        make_recipe(tmp_path, fusion={"domain_weights": {"code": {"smol": -1.0}}})
    with pytest.raises((AvokitError, ValueError), match=r"domain_weights\['code'\].*positive weight"):
        make_recipe(tmp_path, fusion={"domain_weights": {"code": {"smol": 0.0}}})
