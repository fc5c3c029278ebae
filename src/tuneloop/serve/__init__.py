"""Serve stage (`tuneloop serve`): an OpenAI-compatible HTTP API (`app.create_app`) over our own
continuous-batching engine, many adapters on one base, A/B routes and content-based routers.

It resolves model names through a registry it is given (`catalog.Versions`) and writes the request log
(tuneloop/db); the HTTP process that wires it to the registry and the jobs API is tuneloop/server.py.
It imports no other stage.
"""
