"""Turning request text into the token ids the engine sees (runs in a worker thread).

* Customer text is never read as control tokens: in chat, a message containing
  ``<|user|>``-style text is tokenised with special tokens disabled, so it stays text and
  cannot forge a turn of another role. Only the chat template itself emits special tokens.
* A prompt that cannot fit the context is refused before it is tokenised: a token covers at
  most :func:`max_token_bytes` bytes of text, so a longer text is over the limit for sure.
"""

from __future__ import annotations

import copy
import secrets
import threading
import weakref
from typing import Any

from avokit.gateway.errors import BadRequestError

_LOCK = threading.Lock()
# per tokenizer: (a copy that splits special tokens, their texts, the longest token in bytes)
_DERIVED: weakref.WeakKeyDictionary[Any, tuple[Any, tuple[str, ...], int]] = (
    weakref.WeakKeyDictionary())


def _derived(tok: Any) -> tuple[Any, tuple[str, ...], int]:
    with _LOCK:
        found = _DERIVED.get(tok)
        if found is None:
            # a separate copy: flipping the flag per call on a shared tokenizer would race
            # with other threads encoding through it
            literal = copy.deepcopy(tok)
            specials = tuple(sorted({t.content for t in tok.added_tokens_decoder.values()
                                     if t.content}, key=len, reverse=True))
            longest = max((len(t.encode("utf-8", "surrogatepass")) for t in tok.get_vocab()),
                          default=1)
            found = _DERIVED[tok] = (literal, specials, max(longest, 1))
        return found


def max_token_bytes(tok: Any) -> int:
    """An upper bound on the UTF-8 bytes of text one token of ``tok`` stands for."""
    return _derived(tok)[2]


def check_fits(tok: Any, text: str, context_length: int, param: str) -> None:
    """400 ``context_length_exceeded`` for a text too long to fit, without tokenising it."""
    limit = context_length * max_token_bytes(tok)
    if len(text) > limit or len(text.encode("utf-8")) > limit:
        raise BadRequestError(
            f"{param}: the text is longer than any prompt the model's context "
            f"({context_length} tokens) can hold.", param=param, code="context_length_exceeded")


def encode_text(tok: Any, text: str) -> list[int]:
    """A completion prompt: the model's own encoding (its BOS included) of raw text."""
    return list(tok(text).input_ids)


def encode_literal(tok: Any, text: str) -> list[int]:
    """``text`` with every special token spelled out as ordinary characters."""
    literal, _, _ = _derived(tok)
    return list(literal(text, add_special_tokens=False, split_special_tokens=True).input_ids)


def encode_chat(tok: Any, messages: list[dict[str, Any]], **template_kwargs: Any) -> list[int]:
    """Render ``messages`` with the model's chat template; message text stays text.

    ``template_kwargs`` go to the template as they are (``tools``).

    When no message contains special-token text, the whole rendering is tokenised at once
    (exactly what the model was trained on). Otherwise each message's content is replaced
    by a unique marker, the template is rendered around the markers, and the template's own
    pieces are tokenised normally while every content piece is encoded literally.
    """
    _, specials, _ = _derived(tok)
    if not any(s in m["content"] for m in messages for s in specials):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       **template_kwargs)
        return list(tok(text, add_special_tokens=False).input_ids)
    marks = [f"AVOKITMSG{secrets.token_hex(8)}X{i}" for i in range(len(messages))]
    skeleton = tok.apply_chat_template(
        [{**m, "content": mark} for m, mark in zip(messages, marks)], tokenize=False,
        add_generation_prompt=True, **template_kwargs)
    ids: list[int] = []
    rest = skeleton
    for message, mark in zip(messages, marks):
        before, found, rest = rest.partition(mark)
        if not found or mark in rest:  # a template that rewrites or repeats content
            raise BadRequestError("messages: this model's chat template cannot take message "
                                  "text that contains its special tokens", param="messages")
        ids += list(tok(before, add_special_tokens=False).input_ids) if before else []
        ids += encode_literal(tok, message["content"])
    ids += list(tok(rest, add_special_tokens=False).input_ids) if rest else []
    return ids
