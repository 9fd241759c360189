"""Bucketed top-k term, same-vocabulary term and kd_losses against dense float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avokit.losses.bucketed import bucket_distributions, bucketed_divergence
from avokit.losses.kd import TeacherBatch, kd_losses
from avokit.losses.same_vocab import identity_student_ids, same_vocab_divergence, shares_vocabulary
from avokit.recipe.train import LossConfig

KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")


def ref_divergence(kind: str, p: np.ndarray, q: np.ndarray, beta: float = 0.5) -> float:
    """Dense reference from the definitions (0 log 0 = 0)."""

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * (np.log(a[nz]) - np.log(b[nz]))))

    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    return 0.5 * float(np.abs(p - q).sum())


def ref_bucketed(
    student_logits: np.ndarray,
    ids: np.ndarray,
    logprobs: np.ndarray,
    kind: str,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> float:
    """Buckets built by hand over the dense student vocabulary, float64."""
    q = np.exp(student_logits - student_logits.max())
    q /= q.sum()
    teacher: dict[int, float] = {}
    for sid, lp in zip(ids.tolist(), logprobs.tolist(), strict=True):
        if sid >= 0:
            teacher[sid] = teacher.get(sid, 0.0) + math.exp(lp)
    mapped = sorted(teacher)
    p = np.array([teacher[s] for s in mapped])
    qq = np.array([q[s] for s in mapped])
    if len(mapped) < q.size:  # OTHER exists
        p = np.append(p, max(1.0 - p.sum(), 0.0))
        qq = np.append(qq, q[[s for s in range(q.size) if s not in teacher]].sum())
    p = p ** (1 / temperature)
    qq = qq ** (1 / temperature)
    return ref_divergence(kind, p / p.sum(), qq / qq.sum(), beta)


def _random_case(rng: np.random.Generator, m: int, v_teacher: int, v_student: int, k: int):
    """Full teacher distributions, a many-to-one partial vocabulary map, top-k mapped."""
    t2s = rng.integers(-1, v_student, size=v_teacher)  # -1 = unmapped; collisions = twins
    t_logits = rng.normal(0, 2.5, size=(m, v_teacher))
    t_logp = t_logits - np.log(np.exp(t_logits).sum(-1, keepdims=True))
    top = np.argsort(-t_logp, axis=1)[:, :k]
    ids = t2s[top]
    lps = np.take_along_axis(t_logp, top, 1)
    s_logits = rng.normal(0, 2.0, size=(m, v_student))
    return s_logits, ids, lps


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(2, 30),
    st.integers(2, 25),
    st.integers(1, 10),
    st.sampled_from(KINDS),
    st.sampled_from([1.0, 2.5, 0.5]),
)
def test_bucketed_matches_dense_reference(seed, v_teacher, v_student, k, kind, temperature) -> None:
    rng = np.random.default_rng(seed)
    # k < V_teacher keeps a real tail; k = V is covered exactly by the identical-vocabulary test
    k = min(k, v_teacher - 1)
    s_logits, ids, lps = _random_case(rng, 4, v_teacher, v_student, k)
    got, informative = bucketed_divergence(
        torch.log_softmax(torch.tensor(s_logits), -1),
        torch.tensor(ids),
        torch.tensor(lps),
        kind=kind,
        beta=0.3,
        temperature=temperature,
    )
    for r in range(4):
        want = ref_bucketed(s_logits[r], ids[r], lps[r], kind, 0.3, temperature)
        assert float(got[r]) == pytest.approx(want, abs=1e-9, rel=1e-6)
        assert float(got[r]) >= -1e-12
        assert bool(informative[r]) == bool((ids[r] >= 0).any())


@pytest.mark.parametrize("kind", KINDS)
def test_identical_vocabularies_with_k_equal_v_give_the_exact_divergence(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    v = 9
    t_logp = torch.log_softmax(3 * torch.randn(3, v, generator=g, dtype=torch.float64), -1)
    s_logp = torch.log_softmax(3 * torch.randn(3, v, generator=g, dtype=torch.float64), -1)
    perm = torch.stack([torch.randperm(v, generator=g) for _ in range(3)])  # any order of the top-k
    got, _ = bucketed_divergence(s_logp, perm, t_logp.gather(1, perm), kind=kind)
    for r in range(3):
        want = ref_divergence(kind, t_logp[r].exp().numpy(), s_logp[r].exp().numpy())
        assert float(got[r]) == pytest.approx(want, abs=1e-10, rel=1e-8)
    same, _ = bucketed_divergence(t_logp, perm, t_logp.gather(1, perm), kind=kind)
    assert torch.allclose(same, torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_one_mapped_token_is_a_binary_kl_and_nothing_mapped_is_zero_without_gradient() -> None:
    logits = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    s_logp = torch.log_softmax(logits, -1)
    lps = torch.log(torch.tensor([[0.6, 0.2, 0.1], [0.6, 0.2, 0.1]], dtype=torch.float64))
    ids = torch.tensor([[-1, 4, -1], [-1, -1, -1]])
    got, informative = bucketed_divergence(s_logp, ids, lps)
    p, q = 0.2, float(s_logp[0, 4].detach().exp())
    assert got[0].item() == pytest.approx(
        p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)), rel=1e-9
    )
    assert informative.tolist() == [True, False]
    assert got[1].item() == 0.0
    (grad,) = torch.autograd.grad(got[1], logits)
    assert float(grad.abs().sum()) == 0.0  # no token is ever pushed by unmapped mass


def test_twins_merge_their_mass_into_one_bucket() -> None:
    s_logp = torch.log_softmax(torch.randn(1, 10, dtype=torch.float64), -1)
    a, b, c = math.log(0.3), math.log(0.25), math.log(0.1)
    twins = bucketed_divergence(
        s_logp, torch.tensor([[7, 2, 7]]), torch.tensor([[a, c, b]], dtype=torch.float64)
    )[0]
    merged = bucketed_divergence(
        s_logp, torch.tensor([[7, 2]]), torch.tensor([[math.log(0.55), c]], dtype=torch.float64)
    )[0]
    assert float(twins[0]) == pytest.approx(float(merged[0]), rel=1e-12)
    teacher, _, present = bucket_distributions(
        s_logp, torch.tensor([[7, 2, 7]]), torch.tensor([[a, c, b]], dtype=torch.float64)
    )
    assert present.tolist() == [[True, True, False, True]]
    assert float(teacher[0, 0].exp()) == pytest.approx(0.55)
    assert float(teacher[0, 3].exp()) == pytest.approx(0.35)


def test_quantised_topk_summing_above_one_is_renormalised() -> None:
    s_logp = torch.log_softmax(torch.randn(1, 6), -1)
    lps = torch.log(torch.tensor([[0.7, 0.3001, 0.0002]]))
    teacher, _, present = bucket_distributions(s_logp, torch.tensor([[0, 1, 2]]), lps)
    assert float(teacher[present].exp().sum()) == pytest.approx(1.0, abs=1e-6)
    value, _ = bucketed_divergence(s_logp, torch.tensor([[0, 1, 2]]), lps)
    assert torch.isfinite(value).all()


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_at_extremes_and_for_empty_rows(kind: str) -> None:
    logits = torch.tensor(
        [[40.0, -1e4, 0.0, -60.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True
    )
    ids = torch.tensor([[0, 1, 2, 3, 4], [3, -1, 3, 1, -1]])
    lps = torch.tensor(
        [[-1e-6, -math.inf, -1e30, -20.0, -15.0], [-0.1, -math.inf, -3.0, -1e30, -50.0]]
    )
    value, _ = bucketed_divergence(
        torch.log_softmax(logits, -1), ids, lps, kind=kind, temperature=2.0
    )
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    empty = torch.zeros(0, 5, requires_grad=True)
    value, informative = bucketed_divergence(
        torch.log_softmax(empty, -1),
        torch.zeros(0, 3, dtype=torch.long),
        torch.zeros(0, 3),
        kind=kind,
    )
    assert value.shape == (0,) and informative.shape == (0,)


def test_ids_outside_the_student_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="student vocabulary"):
        bucketed_divergence(torch.zeros(1, 4), torch.tensor([[1, 4]]), torch.zeros(1, 2))


def test_teacher_bucket_distribution_is_the_stationary_point_and_descent_approaches_it() -> None:
    ids = torch.tensor([[3, 8, 3, -1, 11]])
    lps = torch.log(torch.tensor([[0.3, 0.2, 0.15, 0.2, 0.05]], dtype=torch.float64))
    # buckets: {3: 0.45, 8: 0.2, 11: 0.05, OTHER: 0.3 spread over the 17 other ids}
    q = torch.full((1, 20), 0.3 / 17, dtype=torch.float64)
    q[0, 3], q[0, 8], q[0, 11] = 0.45, 0.2, 0.05
    at_optimum = q.log().requires_grad_(True)
    value, _ = bucketed_divergence(torch.log_softmax(at_optimum, -1), ids, lps)
    (grad,) = torch.autograd.grad(value.sum(), at_optimum)
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    assert float(grad.abs().max()) < 1e-12
    logits = torch.zeros(1, 20, dtype=torch.float64, requires_grad=True)
    seen = []
    for _ in range(15):
        value, _ = bucketed_divergence(torch.log_softmax(logits, -1), ids, lps)
        (grad,) = torch.autograd.grad(value.sum(), logits)
        seen.append(value.item())
        with torch.no_grad():
            logits -= 2.0 * grad
    assert all(b < a for a, b in zip(seen, seen[1:], strict=False)) and seen[-1] < 0.01 * seen[0]


# ---------------------------------------------------------------- same vocabulary


def test_same_vocabulary_topk_plus_tail() -> None:
    assert shares_vocabulary({"a": 0, "b": 1}, {"b": 1, "a": 0})
    assert not shares_vocabulary({"a": 0, "b": 1}, {"a": 1, "b": 0})
    assert identity_student_ids(torch.tensor([[0, 5, 7, -3]]), 6).tolist() == [[0, 5, -1, -1]]
    rng = np.random.default_rng(3)
    t_logits = rng.normal(0, 2, size=(2, 8))
    t_logp = t_logits - np.log(np.exp(t_logits).sum(-1, keepdims=True))
    top = np.argsort(-t_logp, 1)[:, :3]
    s_logits = rng.normal(0, 2, size=(2, 8))
    got = same_vocab_divergence(
        torch.log_softmax(torch.tensor(s_logits), -1),
        torch.tensor(top),
        torch.tensor(np.take_along_axis(t_logp, top, 1)),
    )
    for r in range(2):
        p_top, q = np.exp(t_logp[r, top[r]]), np.exp(s_logits[r]) / np.exp(s_logits[r]).sum()
        p = np.append(p_top, 1 - p_top.sum())
        qq = np.append(q[top[r]], 1 - q[top[r]].sum())
        assert float(got[r]) == pytest.approx(ref_divergence("forward_kl", p, qq), rel=1e-8)


# ---------------------------------------------------------------- kd_losses


def _make_batch(
    g: torch.Generator, bsz: int = 2, seq: int = 8, vocab: int = 11, k: int = 4
) -> TeacherBatch:
    b_idx = torch.tensor([0, 0, 0, 1, 1])
    s_pos = torch.tensor([0, 2, 5, 1, 4])
    ids = torch.randint(-1, vocab, (5, k), generator=g)
    ids[2] = -1  # a boundary where nothing maps
    lps = torch.log_softmax(torch.randn(5, k + 2, generator=g), -1)[:, :k]
    cot = torch.full((bsz, seq), -1, dtype=torch.long)
    cot[0, 0:2] = 0
    cot[0, 2:5] = 1
    cot[1, 1:4] = 2
    cot[1, 4:6] = 3  # chunk 4 has no token in the window
    return TeacherBatch(
        b_idx=b_idx,
        s_pos=s_pos,
        topk_student_ids=ids,
        topk_logprobs=lps,
        boundary_weight=torch.tensor([1.0, 0.5, 1.0, 2.0, 0.0]),
        chunk_teacher_logprob=-torch.rand(5, generator=g) * 6,
        chunk_of_target=cot,
        chunk_weight=torch.tensor([1.0, 0.5, 2.0, 0.0, 1.0]),
    )


def _kd_reference(
    logits: torch.Tensor, ids: torch.Tensor, batch: TeacherBatch, cfg: LossConfig
) -> tuple[float, float]:
    num = den = 0.0
    for m in range(batch.n_boundaries):
        row = logits[batch.b_idx[m], batch.s_pos[m]].double().numpy()
        tid, tlp = batch.topk_student_ids[m].numpy(), batch.topk_logprobs[m].double().numpy()
        if (tid >= 0).any():
            w = float(batch.boundary_weight[m])
            num += w * ref_bucketed(row, tid, tlp, cfg.divergence, cfg.jsd_beta, cfg.temperature)
            den += w
    sums = [0.0] * batch.n_chunks
    seen = [False] * batch.n_chunks
    lp = torch.log_softmax(logits.double(), -1)
    for b in range(ids.shape[0]):
        for p in range(ids.shape[1] - 1):
            c = int(batch.chunk_of_target[b, p])
            if c >= 0:
                sums[c] += float(lp[b, p, ids[b, p + 1]])
                seen[c] = True
    cnum = cden = 0.0
    for c in range(batch.n_chunks):
        if seen[c]:
            a = math.exp(float(batch.chunk_teacher_logprob[c]) / cfg.chunk_tau)
            s = math.exp(sums[c] / cfg.chunk_tau)
            w = float(batch.chunk_weight[c])
            cnum += w * ref_divergence(
                cfg.divergence, np.array([a, 1 - a]), np.array([s, 1 - s]), cfg.jsd_beta
            )
            cden += w
    return num / den, cnum / cden


@pytest.mark.parametrize("kind", KINDS)
def test_kd_losses_match_reference_with_and_without_precomputed_logprobs(kind: str) -> None:
    g = torch.Generator().manual_seed(7)
    batch = _make_batch(g)
    logits = torch.randn(2, 8, 11, generator=g)
    ids = torch.randint(0, 11, (2, 8), generator=g)
    cfg = LossConfig(divergence=kind, temperature=1.5, chunk_tau=2.0, jsd_beta=0.4)
    want_kd, want_chunk = _kd_reference(logits, ids, batch, cfg)
    for pre in (None, torch.log_softmax(logits, -1)):
        out = kd_losses(logits, ids, batch, cfg, pre)
        assert set(out) == {"kd", "chunk", "kd_share", "chunk_share"}
        assert float(out["kd"]) == pytest.approx(want_kd, rel=1e-5, abs=1e-7)
        assert float(out["chunk"]) == pytest.approx(want_chunk, rel=1e-5, abs=1e-7)


def test_kd_losses_ignore_masked_boundaries_chunks_and_positions() -> None:
    g = torch.Generator().manual_seed(8)
    batch = _make_batch(g)
    logits = torch.randn(2, 8, 11, generator=g)
    ids = torch.randint(0, 11, (2, 8), generator=g)
    cfg = LossConfig()
    base = kd_losses(logits, ids, batch, cfg)
    # row 1 position 4 is a zero-weight boundary and chunk 3 (weight 0) covers positions 4-5;
    # positions 6-7 of both rows are padding; position 5 of row 0 is an uninformative boundary
    noisy = logits.clone()
    noisy[1, 4:] += 50 * torch.randn(4, 11, generator=g)
    noisy[0, 6:] += 50 * torch.randn(2, 11, generator=g)
    noisy[0, 5] += 50 * torch.randn(11, generator=g)
    noisy.requires_grad_(True)
    out = kd_losses(noisy, ids, batch, cfg)
    assert out["kd"].item() == pytest.approx(base["kd"].item(), rel=1e-6)
    assert out["chunk"].item() == pytest.approx(base["chunk"].item(), rel=1e-6)
    (out["kd"] + out["chunk"]).backward()
    assert (
        float(noisy.grad[1, 4:].abs().sum()) == 0.0 and float(noisy.grad[0, 5:].abs().sum()) == 0.0
    )
    assert torch.isfinite(noisy.grad).all() and float(noisy.grad.abs().sum()) > 0


def test_kd_losses_empty_batch_is_zero_and_differentiable() -> None:
    logits = torch.randn(2, 6, 9, requires_grad=True)
    batch = TeacherBatch.empty(2, 6, k=4).to("cpu")
    out = kd_losses(logits, torch.zeros(2, 6, dtype=torch.long), batch, LossConfig())
    total = out["kd"] + out["chunk"]
    total.backward()
    assert total.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_kd_losses_explicit_targets_allow_a_chunk_at_the_last_position() -> None:
    # seeded: drawn from the global generator, some logits put the student's chunk probability
    # so close to the teacher's that the float32 divergence (~1e-5) is mostly rounding
    logits = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(7))
    targets = torch.tensor([[2, 3, 1, 5]])
    batch = TeacherBatch(
        b_idx=torch.zeros(0, dtype=torch.long),
        s_pos=torch.zeros(0, dtype=torch.long),
        topk_student_ids=torch.zeros(0, 2, dtype=torch.long),
        topk_logprobs=torch.zeros(0, 2),
        boundary_weight=torch.zeros(0),
        chunk_teacher_logprob=torch.tensor([-4.0]),
        chunk_of_target=torch.tensor([[-1, -1, 0, 0]]),
        chunk_weight=torch.ones(1),
    )
    out = kd_losses(logits, None, batch, LossConfig(), targets=targets)
    lp = torch.log_softmax(logits.double(), -1)
    s = math.exp(float(lp[0, 2, 1] + lp[0, 3, 5]))
    a = math.exp(-4.0)
    assert float(out["chunk"]) == pytest.approx(
        ref_divergence("forward_kl", np.array([a, 1 - a]), np.array([s, 1 - s])), rel=1e-5, abs=1e-7
    )
    with pytest.raises(ValueError, match="last position"):
        kd_losses(logits, torch.zeros(1, 4, dtype=torch.long), batch, LossConfig())


def test_teacher_batch_validation_names_the_field() -> None:
    g = torch.Generator().manual_seed(9)
    batch = _make_batch(g)
    logits = torch.randn(2, 8, 11)
    ids = torch.zeros(2, 8, dtype=torch.long)
    from dataclasses import replace

    with pytest.raises(ValueError, match="b_idx"):
        kd_losses(logits, ids, replace(batch, b_idx=torch.tensor([0, 0, 0, 1, 2])), LossConfig())
    with pytest.raises(ValueError, match="s_pos"):
        kd_losses(logits, ids, replace(batch, s_pos=torch.tensor([0, 2, 5, 1, 8])), LossConfig())
    with pytest.raises(ValueError, match="chunk_weight"):
        kd_losses(logits, ids, replace(batch, chunk_weight=torch.ones(3)), LossConfig())
    with pytest.raises(ValueError, match="chunk_of_target"):
        kd_losses(logits, ids, replace(batch, chunk_of_target=torch.full((2, 7), -1)), LossConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kd_losses_on_cuda_equal_cpu() -> None:
    g = torch.Generator().manual_seed(11)
    batch = _make_batch(g)
    logits = torch.randn(2, 8, 11, generator=g)
    ids = torch.randint(0, 11, (2, 8), generator=g)
    cpu = kd_losses(logits, ids, batch, LossConfig())
    gpu = kd_losses(logits.cuda(), ids.cuda(), batch.to("cuda"), LossConfig())
    for key in ("kd", "chunk"):
        assert gpu[key].device.type == "cuda"
        assert gpu[key].item() == pytest.approx(cpu[key].item(), rel=1e-5, abs=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_debiased_chunks_and_fixed_priors_accept_host_inputs_on_cuda() -> None:
    """On CUDA, a CPU ``starts_word`` mask (debiased chunks) and fixed fusion priors given as
    a list are moved to the logits' device: the results equal the CPU ones (CPU-only runs,
    mutmut's included, cannot tell a missing ``.to(device)`` apart)."""
    from dataclasses import replace

    from avokit.losses.fusion import document_weights

    g = torch.Generator().manual_seed(12)
    # debiased: chunk c's next position is the flat index b * T + p after its last token
    batch = replace(_make_batch(g), chunk_next=torch.tensor([2, 5, 12, -1, -1]))
    logits = torch.randn(2, 8, 11, generator=g)
    ids = torch.randint(0, 11, (2, 8), generator=g)
    starts = torch.rand(11, generator=g) < 0.5
    cpu = kd_losses(logits, ids, batch, LossConfig(), starts_word=starts)
    gpu = kd_losses(logits.cuda(), ids.cuda(), batch.to("cuda"), LossConfig(), starts_word=starts)
    assert gpu["chunk"].item() == pytest.approx(cpu["chunk"].item(), rel=1e-5, abs=1e-7)
    bpb = torch.tensor([[0.9, 1.1], [1.2, 0.8]], dtype=torch.float64)
    want = document_weights(bpb, "fixed", 1.0, [3.0, 1.0])
    got = document_weights(bpb.cuda(), "fixed", 1.0, [3.0, 1.0])
    assert got.device.type == "cuda" and torch.allclose(got.cpu(), want)
