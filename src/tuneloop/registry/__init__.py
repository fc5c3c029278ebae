"""Registry stage: an index of trained model versions with their lineage (`store.Registry`), aliases
with an audit log and rollback (`aliases`), and the serving request log (`requestlog`).

The registry indexes artifacts on disk; it does not own or copy them. Its schema is kept by alembic
migrations (`migrate`, `migrations/`), applied when a Registry is opened.
"""
