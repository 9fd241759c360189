"""Transfer (issue 31): does cross-tokenizer KD beat CE for a pretrained student (bench/quality/README.md)."""
