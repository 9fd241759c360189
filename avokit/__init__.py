"""avokit: distill several teachers with different tokenizers into one student."""

__version__ = "0.1.0"
