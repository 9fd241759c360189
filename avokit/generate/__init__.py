"""The generate stage: teachers write training text from prompts (sequence-level KD)."""

from avokit.generate.prompts import Prompt, collect_prompts, corpus_prefix
from avokit.generate.run import GeneratedManifest, GenerationInterrupted, run_generate

__all__ = ["GeneratedManifest", "GenerationInterrupted", "Prompt", "collect_prompts", "corpus_prefix",
           "run_generate"]
