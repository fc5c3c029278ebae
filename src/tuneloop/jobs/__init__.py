"""Jobs stage: an OpenAI-compatible fine-tuning jobs API (files, jobs, events, checkpoints; `api.py`) and
the worker that runs queued jobs as training subprocesses (`worker.py`), in tables of its own (`tables.py`).

What a job needs from the data stage and the registry comes through `stages.Stages`, supplied by the
server process (tuneloop/server.py); it imports no other stage.
"""
