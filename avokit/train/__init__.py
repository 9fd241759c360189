"""Student training on Hugging Face Accelerate: packing, KD batches, loop, checkpoints."""

from avokit.train.run import ensure_student_tokenizer, run_training

__all__ = ["ensure_student_tokenizer", "run_training"]
