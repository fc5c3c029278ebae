"""Command line: one verb per stage, dispatched from the table at the bottom of this file.

    tuneloop data prepare INPUT... --out DIR [--config FILE]
    tuneloop train CONFIG --data DIR [--out DIR]
    tuneloop sweep CONFIG --data DIR [--trials N] [--parallel K] [--resume] [--register]
    tuneloop eval CONFIG --model RUN_DIR --data DIR [--out DIR]
    tuneloop registry list|show|register|alias|rollback|history|delete
    tuneloop serve [--model NAME[:VERSION|@ALIAS]|RUN_DIR]... [--routes FILE] [--port P] [--api-key KEY]...
    tuneloop rag index|add|remove|search
    tuneloop route train ROUTER --out DIR
    tuneloop monitor report|drift|alerts|export-feedback
    tuneloop run CONFIG [--out DIR] [--json]
    tuneloop loop CONFIG [--out DIR] [--json]
    tuneloop demo [--full] [--resume] [--json] [--out DIR]
    tuneloop import openai-compatible --base-url URL --job ID|--model FT_NAME --out DIR
    tuneloop init [DIR]          a project for your own data
    tuneloop doctor              is this machine ready?

A TuneloopError (bad input, missing file, unknown model) prints one line and exits with code 2.
"""

from __future__ import annotations

import sys

import typer

from tuneloop.cli.monitoring import monitor_app
from tuneloop.cli.pipelines import demo_cmd, import_app, loop_cmd, run_cmd
from tuneloop.cli.project import doctor_cmd, init_cmd
from tuneloop.cli.registry import registry_app
from tuneloop.cli.serving import rag_app, route_app, serve_cmd, ui_cmd
from tuneloop.cli.stages import data_app, eval_app, export_cmd, train_cmd
from tuneloop.cli.sweeps import sweep_cmd
from tuneloop.errors import TuneloopError
from tuneloop.ui import console

# --- the verb table ------------------------------------------------------------------------------
app = typer.Typer(help="tuneloop: fine-tune open LLMs, from raw data to a served model and back.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
VERBS = {
    "data": data_app,
    "train": train_cmd,
    "sweep": sweep_cmd,
    "eval": eval_app,
    "export": export_cmd,
    "registry": registry_app,
    "serve": serve_cmd,
    "ui": ui_cmd,
    "rag": rag_app,
    "route": route_app,
    "monitor": monitor_app,
    "run": run_cmd,
    "loop": loop_cmd,
    "demo": demo_cmd,
    "import": import_app,
    "init": init_cmd,
    "doctor": doctor_cmd,
}


def _version(show: bool) -> None:
    if show:
        from tuneloop import __version__

        print(f"tuneloop {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print tuneloop's version and exit.")) -> None:
    """tuneloop: fine-tune open LLMs, from raw data to a served model and back."""


for verb, target in VERBS.items():
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=verb)
    else:
        app.command(verb)(target)


def main() -> None:
    try:
        app()
    except TuneloopError as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
