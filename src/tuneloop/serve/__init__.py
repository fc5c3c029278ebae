"""Serve stage: an OpenAI-compatible HTTP API over a base model with a fine-tuned adapter."""
