"""Closed OpenAI-compatible gateway: keys, limits, metering and billing over released models."""
