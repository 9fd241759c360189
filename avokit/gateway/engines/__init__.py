"""Generation engines behind the gateway: in-process transformers (batched) or a vLLM upstream."""
