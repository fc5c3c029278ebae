"""tuneloop: self-hosted fine-tuning of open LLMs, from raw examples to a served model and back."""

__version__ = "0.1.0"
