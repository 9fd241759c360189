"""The student: its tokenizer (trained or loaded) and its model (from config or pretrained)."""

from avokit.student.model import build_student, count_parameters, student_hf_config
from avokit.student.tokenizer import (
    CHATML_TEMPLATE,
    ENDOFTEXT,
    load_student_tokenizer,
    train_student_tokenizer,
)

__all__ = [
    "CHATML_TEMPLATE",
    "ENDOFTEXT",
    "build_student",
    "count_parameters",
    "load_student_tokenizer",
    "student_hf_config",
    "train_student_tokenizer",
]
