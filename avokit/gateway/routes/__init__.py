"""Thin HTTP routes: parse, call services, shape the OpenAI response."""
