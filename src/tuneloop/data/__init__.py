"""Data stage (`tuneloop data prepare`): read raw files, validate and canonicalise rows, clean, redact PII,
deduplicate, split, report.

Entry point: `prepare.prepare`. Every input row ends in exactly one of the split files or the rejected
file (with file, line, rule and reason); the file names are in tuneloop/layout.py. Like every stage it
imports no other stage: the next one reads its output folder and manifest.
"""
