"""`tuneloop registry ...`: aliases, rollback, history and delete from the command line, with --json output."""

import json

import pytest
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.errors import TuneloopError
from tuneloop.registry.store import Registry


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    registry = Registry(url)
    for _ in range(3):
        registry.register("support", tmp_path, "base-model", "lora")
    return url


def cli(url: str, *args: str) -> dict:
    """Run a registry command with --json; the result is the JSON object on the last line of stdout."""
    result = CliRunner().invoke(app, ["registry", *args, "--registry", url, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_alias_rollback_and_history(url):
    moved = cli(url, "alias", "support", "production", "1", "--reason", "launch", "--actor", "ana")
    assert (moved["alias"], moved["to_version"], moved["actor"], moved["reason"]) == ("production", 1, "ana", "launch")
    cli(url, "alias", "support", "production", "3")
    back = cli(url, "rollback", "support", "--alias", "production", "--reason", "regression")
    assert (back["action"], back["from_version"], back["to_version"], back["reason"]) == ("rollback", 3, 1, "regression")
    events = cli(url, "history", "support", "--alias", "production")["events"]
    assert [(e["action"], e["to_version"]) for e in events] == [("set", 1), ("set", 3), ("rollback", 1)]
    shown = cli(url, "show", "support@production")
    assert (shown["ref"], shown["aliases"]) == ("support:1", ["production"])
    listed = cli(url, "list", "support")["versions"]
    assert [(v["ref"], v["aliases"]) for v in listed] == [("support:1", ["production"]), ("support:2", []), ("support:3", [])]


def test_delete_needs_force_while_aliased(url):
    cli(url, "alias", "support", "canary", "3")
    refused = CliRunner().invoke(app, ["registry", "delete", "support:3", "--registry", url])
    assert isinstance(refused.exception, TuneloopError) and "--force" in str(refused.exception)
    deleted = cli(url, "delete", "support:3", "--force")
    assert {k: deleted[k] for k in ("deleted", "aliases_removed")} == {"deleted": ["support:3"], "aliases_removed": ["support@canary"]}
    assert [v["ref"] for v in cli(url, "list")["versions"]] == ["support:1", "support:2"]


def test_human_output_names_versions_and_aliases(url):
    cli(url, "alias", "support", "production", "2", "--reason", "[urgent] fix")
    listed = CliRunner().invoke(app, ["registry", "list", "--registry", url])
    assert listed.exit_code == 0
    row = next(line for line in listed.stderr.splitlines() if "support:2" in line)
    assert "production" in row and "base-model" in row
    shown = CliRunner().invoke(app, ["registry", "show", "support@production", "--registry", url])
    assert "support:2  (aliases: production)" in shown.stderr and shown.stdout == ""
    history = CliRunner().invoke(app, ["registry", "history", "support", "--registry", url])
    assert "support@production" in history.stderr and "[urgent] fix" in history.stderr  # shown as typed, not as markup
