"""Chunk term: approximate likelihood matching (ALM) over common-boundary chunks.

Minixhofer et al. 2025, "Universal cross-tokenizer distillation via approximate likelihood
matching". Between two consecutive common boundaries both models spell the same bytes, so
both assign that byte string a likelihood: the teacher the product of its tokens'
probabilities, the student the product of its own. The chunk term makes these agree. Each
chunk is *binarised*: the event "the model produces exactly this chunk" has probability
``a = exp(log p_chunk)``, and its complement ``1 - a``; a divergence between the teacher's
and the student's Bernoulli distributions is the loss.

Debiasing (``train.loss.chunk_debias``, ALM's treatment of tokenization bias): the product
of a model's token probabilities over a chunk is the probability of *that tokenization* of
the bytes, which depends on the tokenizer: a model that may still extend the chunk's last
token ("hello" -> "hellos") has part of the chunk's mass elsewhere, differently for each
vocabulary. Where the text starts a new word right after the chunk, the event "the chunk,
then a token that starts a word" is spelled the same way by every pre-tokenizing tokenizer;
its probability is the chunk likelihood times the model's total mass on word-starting tokens
at the next position. Both sides get that factor (the teacher's was captured as
``boundary_logmass``; the student's comes from its own logits, :func:`word_start_logmass`).

Temperature ``tau`` divides both chunk log-likelihoods before binarising
(``a_tau = p_chunk^(1/tau)``). Long chunks have tiny probabilities whose Bernoulli
divergence (and gradient) vanishes; ``tau > 1`` lifts them back into a range where the term
still teaches something, exactly as in ALM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avokit.losses.bucketed import log1mexp
from avokit.losses.divergences import DivergenceName, divergence

# log-probabilities are kept at or below this so 1 - p never rounds to 0 (whose log has an
# infinite derivative); it only touches chunks with probability above 1 - 1e-6
_MAX_CHUNK_LOGPROB = -1e-6


def student_chunk_logprobs(gold: Tensor, chunk_ids: Tensor, n_chunks: int) -> tuple[Tensor, Tensor]:
    """Sum the student's gold-token log-probs per chunk.

    Shapes: ``gold`` float [N] (log p of each target token), ``chunk_ids`` long [N] in
    ``[0, n_chunks)``. Returns ``(logprob [C], n_tokens [C])``; ``C = n_chunks``.
    """
    if gold.shape != chunk_ids.shape:
        raise ValueError(f"gold {tuple(gold.shape)} and chunk_ids {tuple(chunk_ids.shape)} differ")
    if chunk_ids.numel() and (int(chunk_ids.min()) < 0 or int(chunk_ids.max()) >= n_chunks):
        raise ValueError(
            f"chunk ids must lie in [0, {n_chunks}); "
            f"got {int(chunk_ids.min())}..{int(chunk_ids.max())}"
        )
    sums = torch.zeros(n_chunks, dtype=gold.dtype, device=gold.device).index_add(0, chunk_ids, gold)
    counts = torch.zeros(n_chunks, dtype=torch.long, device=gold.device).index_add(
        0, chunk_ids, torch.ones_like(chunk_ids)
    )
    return sums, counts


def word_start_logmass(logprobs: Tensor, starts_word: Tensor) -> Tensor:
    """log of the total probability on word-starting tokens: float [N, V], bool [V] -> [N].

    ``-inf`` only when no id starts a word (then the chunk term cannot be debiased)."""
    if starts_word.shape != logprobs.shape[-1:]:
        raise ValueError(f"starts_word {tuple(starts_word.shape)} must be [V={logprobs.shape[-1]}]")
    # gather the word-starting columns rather than mask the others: no [N, V] copy forward, and
    # the backward scatters into them only (800 x 49,152 rows with the log-softmax before it and
    # the backward, 2-core Xeon, 2026-12-07: 1.05 s -> 0.37-0.44 s)
    return torch.logsumexp(logprobs.index_select(-1, starts_word.nonzero().squeeze(-1)), dim=-1)


def binarize(logprob: Tensor, tau: float) -> Tensor:
    """``[log a, log(1 - a)]`` with ``a = p^(1/tau)``: float [C] -> [C, 2]."""
    if tau <= 0.0:
        raise ValueError(f"chunk temperature tau must be positive, got {tau}")
    scaled = (logprob / tau).clamp(max=_MAX_CHUNK_LOGPROB)
    return torch.stack([scaled, log1mexp(scaled)], dim=-1)


def chunk_divergence(
    student_logprob: Tensor,
    teacher_logprob: Tensor,
    *,
    kind: DivergenceName = "forward_kl",
    beta: float = 0.5,
    tau: float = 1.0,
) -> Tensor:
    """Binarised divergence per chunk between teacher and student chunk likelihoods.

    Shapes: ``student_logprob``, ``teacher_logprob`` float [C] (log-likelihood of each chunk's
    bytes, summed over that model's tokens). Returns float [C] (zero where they are equal).
    """
    if student_logprob.shape != teacher_logprob.shape:
        raise ValueError(
            f"student {tuple(student_logprob.shape)} and teacher "
            f"{tuple(teacher_logprob.shape)} chunk shapes differ"
        )
    teacher = binarize(teacher_logprob.detach().to(student_logprob.dtype), tau)
    student = binarize(student_logprob, tau)
    return divergence(kind, teacher, student, beta=beta)
