"""Registry stage: an index of trained model versions with their lineage (`store.Registry`).

The registry indexes artifacts on disk; it does not own or copy them.
"""
