"""The web dashboard at /ui: the whole loop on one site, for the team that runs it and the domain experts who
judge its answers.

A composition above the stages, like server.py: it reads what the stages wrote (run folders under the runs
root, the registry, fine-tuning jobs, the request log) and changes state only through the stages' own
operations (registry aliases, A/B route weights, review files that `eval ab-import` and the data stage read).
Pages are rendered on the server with Jinja2; the little JavaScript there is (live curves, jobs, the
playground) ships in static/ and talks to the same OpenAI-compatible API as any client. Nothing loads from
the network.
"""

from tuneloop.dashboard.app import dashboard_router
from tuneloop.dashboard.sources import Sources

__all__ = ["Sources", "dashboard_router"]
