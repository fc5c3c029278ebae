"""Compositions that chain the stages through their artifacts on disk: `run` (data -> train -> eval ->
register), `loop` (feedback -> data -> train -> eval -> promote) and `demo` (run, then serve a burst of
simulated traffic and monitor it). They sit above the stages: they may import any stage, no stage
imports them."""
