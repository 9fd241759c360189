"""Fusion into a pretrained student (issue 32): two teachers into SmolLM2-135M (bench/quality/fusion_pretrained/README.md)."""
