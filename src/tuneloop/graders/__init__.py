"""Graders: reward functions in the shape of OpenAI's grader objects (string_check, text_similarity,
python, score_model, multi, plus tuneloop's json_schema and metric), a library any stage may use.

GRPO training takes its reward from them (`objective.reward`, by default the objective's gates); an
evaluation or the monitor can score answers with the same definitions. `specs.py` holds the typed
configs (the config file imports it, so this package imports nothing of tuneloop here); `build.py`
turns a spec into a grader.
"""
