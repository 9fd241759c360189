"""On-policy vs offline vs sequence-level KD (issue 16; bench/quality/README.md)."""
