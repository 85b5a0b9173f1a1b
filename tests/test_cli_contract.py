"""The command-line contract: every command honours --workspace wherever it is given,
and every failure is one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from beanbill.cli import main
from beanbill.exits import EXIT_ERROR
from tests.support import BEANBILL

# The arguments each command needs besides --workspace (none of them is ever used:
# the workspace they point at does not exist).
ARGUMENTS = {
    ("balance",): ["org-0001"],
    ("credits", "buy"): ["org-0001", "10.00", "--date", "2026-10-01"],
    ("credits", "grant"): ["org-0001", "10.00", "--date", "2026-10-01"],
    ("invoice",): ["--period", "2026-10"],
    ("invoice", "credit"): ["INV-2026-000001", "--reason", "Wrong address"],
    ("invoice", "render"): ["INV-2026-000001"],
    ("invoice", "draft"): ["--period", "2026-10"],
    ("invoice", "show"): ["INV-2026-000001"],
    ("invoice", "send"): ["INV-2026-000001"],
    ("post",): ["--period", "2026-10"],
    ("rate",): ["--period", "2026-10"],
    ("report",): ["--period", "2026-10"],
    ("run",): [],
    ("check",): [],
    ("fava",): [],
    ("serve",): [],
    ("sync", "push"): [],
    ("sync", "status"): [],
    ("sync", "retry"): [],
    ("sync", "import-sqlite"): [],
    ("sync", "reconcile"): [],
    ("api-key", "create"): ["org-0001"],
    ("api-key", "list"): [],
    ("api-key", "revoke"): ["3f9c0a1b2c4d"],
}
SKIPPED = {("demo",), ("init",), ("ingest",)}  # demo and init make workspaces; see below


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from commands(command, path)


def test_every_command_is_listed_here() -> None:
    groups = {("credits",), ("sync",), ("api-key",)}
    assert set(commands(main)) == set(ARGUMENTS) | SKIPPED | groups


@pytest.mark.parametrize("path", sorted(ARGUMENTS))
def test_every_command_works_on_the_workspace_given_not_the_current_folder(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    here = tmp_path / "here"
    here.mkdir()
    (here / "beanbill.toml").write_text("this is the current folder's, not to be read\n")
    runner = CliRunner()
    lines = [[*path, "-w", str(elsewhere), *ARGUMENTS[path]]]
    if len(path) == 2 and path[0] == "invoice":  # the group's option, before the subcommand
        lines.append(["invoice", "-w", str(elsewhere), path[1], *ARGUMENTS[path]])
    previous = Path.cwd()
    os.chdir(here)
    try:
        for line in lines:
            result = runner.invoke(main, line)
            assert result.exit_code == EXIT_ERROR, (line, result.output)
            assert f"{elsewhere} is not a beanbill workspace" in result.output, line
            assert "Traceback" not in result.output
    finally:
        os.chdir(previous)


def test_ingest_honours_the_workspace_too(tmp_path: Path) -> None:
    usage = tmp_path / "usage.jsonl"
    usage.write_text("{}\n")
    result = CliRunner().invoke(main, ["ingest", "-w", str(tmp_path / "nowhere"), str(usage)])
    assert result.exit_code == EXIT_ERROR
    assert f"{tmp_path / 'nowhere'} is not a beanbill workspace" in result.output


def test_a_machine_refusal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    created = subprocess.run([BEANBILL, "init", str(workspace)], capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    (workspace / "state").write_text("a file where the state folder should be")
    result = subprocess.run(
        [BEANBILL, "post", "-w", str(workspace), "--period", "2026-10"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == EXIT_ERROR
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not list(workspace.rglob(".*.tmp-*"))  # no temporary file left behind
