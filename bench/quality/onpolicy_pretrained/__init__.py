"""On-policy distillation from two teachers into the pretrained SmolLM2-135M (issue 33)."""
