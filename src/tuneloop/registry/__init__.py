"""Registry stage (`tuneloop registry`): an index of trained model versions with their lineage
(`store.Registry`), and aliases with an audit log and rollback (`aliases`).

The registry indexes artifacts on disk; it does not own or copy them. Its tables live in tuneloop's
database (tuneloop/db, which keeps the schema); it imports no other stage.
"""
