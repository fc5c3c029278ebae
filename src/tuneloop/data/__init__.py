"""Data stage: read raw files, validate and canonicalise rows, deduplicate, split, report.

Entry point: `tuneloop.data.prepare.prepare`. Every input row ends in exactly one of train.jsonl,
val.jsonl, test.jsonl or rejected.jsonl (with file, line, rule and reason).
"""
