"""The student's tokenizer: a byte-level BPE trained on the corpus, or one loaded from disk.

The trained tokenizer carries the special tokens the rest of avokit relies on: ``<|endoftext|>``
(BOS, EOS and the separator between packed documents, so every document is predicted from the
same start token the way teachers condition on theirs), ``<|pad|>``, and the ChatML markers
``<|im_start|>`` / ``<|im_end|>`` used by the chat template the gateway applies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, PAD, IM_START, IM_END)

# A plain ChatML template (the same shape Qwen and SmolLM2 use), so any OpenAI-style message
# list renders without custom code; generation prompts end with an open assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_student_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Any:
    """Train a byte-level BPE of ``vocab_size`` ids on ``texts`` and save it (HF format) to ``out_dir``.

    Returns a ``transformers.PreTrainedTokenizerFast`` with bos/eos/pad set and a ChatML
    ``chat_template``. The vocabulary size counts the special tokens; every byte is always
    representable (the 256-symbol byte alphabet is seeded), so no text is ever out of vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise AvokitError("cannot train the student tokenizer: the corpus train split is empty")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise AvokitError(
            f"student.tokenizer.vocab_size: {vocab_size} is below the byte alphabet "
            f"(256) plus {len(SPECIAL_TOKENS)} special tokens"
        )
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a document's first word is tokenised as written, so token bytes
    # concatenate back to the exact text (the byte-level alignment relies on that).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.model_max_length = 1 << 30
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def load_student_tokenizer(path: Path) -> Any:
    """Load a student tokenizer from a HF tokenizer dir, a model dir or a ``tokenizer.json`` file.

    A tokenizer without an EOS token cannot separate packed documents; one without a pad token
    gets its EOS as pad. Raises :class:`AvokitError` naming ``path`` when nothing loads.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(path)
    tok: Any  # a fast or a SentencePiece tokenizer
    try:
        if path.is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
        else:
            tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # transformers raises many types for unreadable tokenizers
        raise AvokitError(f"student tokenizer: cannot load {path}: {err}") from err
    if tok.eos_token_id is None:
        if ENDOFTEXT in tok.get_vocab():
            tok.eos_token = ENDOFTEXT
        else:
            raise AvokitError(f"student tokenizer {path} has no EOS token (needed to separate documents)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    return tok
