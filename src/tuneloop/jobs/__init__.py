"""Jobs stage: an OpenAI-compatible fine-tuning jobs API (files, jobs, events, checkpoints) and the
worker that runs jobs as training subprocesses, queued in the registry database."""
