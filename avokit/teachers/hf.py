"""Hugging Face backend: a model directory (safetensors) or a GGUF file, via transformers."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from avokit.align.bytes import byteify, drop_unicode_normalizer
from avokit.align.extending import ExtendingIndex
from avokit.errors import AvokitError
from avokit.precision import DType, resolve_dtype, torch_dtype
from avokit.records import TeacherRecords
from avokit.teachers.base import Sampling, TeacherInfo, TokenizerTeacher
from avokit.teachers.fingerprint import tokenizer_fingerprint, weight_files, weights_fingerprint
from avokit.teachers.scoring import head_spec, resolve_start_token_id, score_tokenized


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def dtype_name(model: Any) -> str:
    """``"float32"``, ``"bfloat16"``, ...: the dtype of ``model``'s parameters."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


class HFTeacher(TokenizerTeacher):
    """Any ``AutoModelForCausalLM`` as a teacher. ``model`` is in eval mode on one device."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        license: str = "unknown",
        backend: str = "hf",
        fingerprint: str,
        start_token_id: int,
        max_length: int = 512,
        batch_size: int = 8,
        vocab_chunk: int = 512,
        load_seconds: float = 0.0,
    ) -> None:
        """Wrap a loaded model; use :meth:`from_dir` or :meth:`from_gguf` to load one."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.start_token_id = int(start_token_id)
        self.max_length = max_length
        self.batch_size = batch_size
        self.vocab_chunk = vocab_chunk
        self.load_seconds = load_seconds
        # tokens must spell the document's exact bytes (see drop_unicode_normalizer)
        self.dropped_normalizer = drop_unicode_normalizer(tokenizer)
        self._tb = byteify(tokenizer, name=name)
        self._spec = head_spec(model, self._tb)
        self._extending: ExtendingIndex | None = None
        self._info = TeacherInfo(
            name=name,
            backend=backend,
            vocab_size=self._tb.size,
            tokenizer_kind=self._tb.family,
            license=license,
            params=sum(p.numel() for p in model.parameters()),
            fingerprint=fingerprint,
            tokenizer_fingerprint=tokenizer_fingerprint(self._tb),
            dtype=dtype_name(model),
        )

    @classmethod
    def from_dir(
        cls,
        path: Path,
        name: str | None = None,
        license: str = "unknown",
        device: str = "auto",
        dtype: str = "auto",
        *,
        start_token: str | None = None,
        max_length: int = 512,
        batch_size: int = 8,
        vocab_chunk: int = 512,
        fingerprint: str | None = None,
        backend: str = "hf",
        tokenizer: Any = None,
    ) -> HFTeacher:
        """Load a Hugging Face model directory (config.json + weights + tokenizer files).

        ``fingerprint`` replaces the one computed from the weight files where the directory is
        a converted copy of other weights (registry teachers: their GGUF is their identity).
        ``tokenizer`` replaces the directory's own (a pretrained student scored with the run's
        copy of its tokenizer, whose start token may be set).
        ``dtype``: ``auto`` (bf16 where ``device`` computes it natively, else float32, see
        :mod:`avokit.precision`) or an explicit ``float32`` / ``bfloat16`` / ``float16``.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise AvokitError(f"{path} is not a Hugging Face model directory (no config.json)")
        return cls._load(path, None, name or path.name, license, device, dtype, backend,
                         start_token, max_length, batch_size, vocab_chunk, tokenizer=tokenizer,
                         fingerprint=fingerprint)

    @classmethod
    def from_gguf(
        cls,
        path: Path,
        name: str | None = None,
        license: str = "unknown",
        device: str = "auto",
        dtype: str = "auto",
        *,
        tokenizer: Any = None,
        start_token: str | None = None,
        max_length: int = 512,
        batch_size: int = 8,
        vocab_chunk: int = 512,
    ) -> HFTeacher:
        """Load a GGUF file through transformers, dequantised to float32, then cast to
        ``dtype`` (resolved as in :meth:`from_dir`).

        ``tokenizer`` skips converting the GGUF's own tokenizer (slow for 262k vocabularies)
        when a converted copy is at hand (registry teachers cache one).
        """
        path = Path(path)
        if not path.is_file():
            raise AvokitError(f"GGUF file {path} does not exist")
        return cls._load(path.parent, path.name, name or path.stem, license, device, dtype,
                         "gguf", start_token, max_length, batch_size, vocab_chunk, tokenizer)

    @classmethod
    def _load(
        cls, folder: Path, gguf_file: str | None, name: str, license: str, device: str,
        dtype: str, backend: str, start_token: str | None, max_length: int, batch_size: int,
        vocab_chunk: int, tokenizer: Any, fingerprint: str | None = None,
    ) -> HFTeacher:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub at run time
        resolved = resolve_dtype(dtype, device, field=f"teacher {name!r}: dtype")
        started = time.perf_counter()
        # GGUF weights are dequantised to float32 by transformers' loader; cast after
        kwargs: dict[str, Any] = {"dtype": torch.float32 if gguf_file else torch_dtype(resolved)}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        try:
            if tokenizer is None:
                tok_kwargs = {"gguf_file": gguf_file} if gguf_file else {}
                tokenizer = AutoTokenizer.from_pretrained(folder, **tok_kwargs)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except (OSError, ValueError, KeyError) as err:
            where = folder / gguf_file if gguf_file else folder
            raise AvokitError(f"teacher {name!r}: cannot load {where}: {err}") from err
        model.to(device=resolve_device(device), dtype=torch_dtype(resolved))  # type: ignore[call-arg]  # transformers' wrapper
        target = folder / gguf_file if gguf_file else folder
        return cls(
            model, tokenizer, name=name, license=license, backend=backend,
            fingerprint=fingerprint or weights_fingerprint(weight_files(target)),
            start_token_id=resolve_start_token_id(tokenizer, start_token),
            max_length=max_length, batch_size=batch_size, vocab_chunk=vocab_chunk,
            load_seconds=time.perf_counter() - started,
        )

    def to_dtype(self, dtype: DType) -> None:
        """Cast the model in place (e.g. float32 -> bfloat16 after a fidelity check); the
        teacher's ``info.dtype`` follows. Casting down and back up loses precision: reload a
        teacher to get float32 back."""
        self.model.to(torch_dtype(dtype))
        self._info = dataclasses.replace(self._info, dtype=dtype_name(self.model))

    def score(self, texts: list[str], doc_ids: list[str], top_k: int, *,
              inside_top_k: int = 0) -> list[TeacherRecords]:
        """Records for each document; long documents are scored in rolling windows."""
        if len(texts) != len(doc_ids):
            raise AvokitError(f"score: {len(texts)} texts but {len(doc_ids)} doc_ids")
        docs = self.tokenize(texts)
        inside = None
        if inside_top_k:
            if self._extending is None:  # built once per teacher: sorting the vocabulary
                self._extending = ExtendingIndex(self._tb)
            inside = (self._extending, inside_top_k)
        return score_tokenized(self.model, docs, doc_ids, self.start_token_id, self._spec,
                               top_k, self.max_length, self.batch_size, self.vocab_chunk, inside)

    @torch.no_grad()
    def generate(self, prompt: str, sampling: Sampling, *, n: int, seed: int, chat: bool = False) -> list[str]:
        """``n`` samples from the model (KV cache), seeded: the same seed gives the same text."""
        ids = torch.tensor([self.prompt_ids(prompt, chat)], device=self.model.device)
        torch.manual_seed(seed)
        greedy = sampling.temperature == 0.0
        extra: dict[str, Any] = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                                   "top_k": 0}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=not greedy,
                                  max_new_tokens=sampling.max_new_tokens, num_return_sequences=1 if greedy else n,
                                  pad_token_id=pad, **extra)
        texts = [self.decode_new(row[ids.shape[1]:].tolist()) for row in out]
        return texts * n if greedy else texts  # greedy: n identical answers

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None
