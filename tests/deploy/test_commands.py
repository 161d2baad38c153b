"""The `arcbeat` command: every command module registered, each checked by its own parser."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

from arcbeat.deploy import cli, commands

COMMAND_MODULES = {m.__name__.rpartition(".")[2]: m for m in cli.COMMANDS}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0, argv
    return capsys.readouterr().out


def _own_options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


def test_every_module_of_the_package_is_a_registered_command() -> None:
    in_package = {
        info.name
        for info in pkgutil.iter_modules(commands.__path__)
        if not info.name.startswith("_")
    }
    assert in_package == set(COMMAND_MODULES)
    for name in in_package:
        module = importlib.import_module(f"arcbeat.deploy.commands.{name}")
        assert module in cli.COMMANDS


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_a_command_module_registers_its_own_parser_and_runs_with_run(name: str) -> None:
    module: ModuleType = COMMAND_MODULES[name]
    assert callable(module.register) and callable(module.run)
    parser = argparse.ArgumentParser(prog="arcbeat")
    module.register(parser.add_subparsers(dest="command"))
    assert list(_subparsers(parser)) == [name]  # one command, named after its module
    own = _subparsers(parser)[name]
    assert own.prog == f"arcbeat {name}"
    assert own.get_default("func") is module.run


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_each_command_help_lists_its_own_options(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _subparsers(cli.build_parser())[name]
    text = _help([name], capsys)
    assert text.startswith(f"usage: arcbeat {name}")
    assert parser.description and parser.description.split()[0] in text
    for option in _own_options(parser):
        assert option in text, (name, option)
    # a command with actions of its own: each action's help lists its options too
    for action, action_parser in _subparsers(parser).items():
        assert action in text
        action_text = _help([name, action], capsys)
        assert action_text.startswith(f"usage: arcbeat {name} {action}")
        for option in _own_options(action_parser):
            assert option in action_text, (name, action, option)


def test_the_installed_command_answers_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", "topics", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("usage: arcbeat topics") and "--acls" in out


def test_history_options_override_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["history", "--influx-api", "v2", "--port", "7001"])
    assert (args.influx_api, args.port, args.influx_url) == ("v2", 7001, None)
    bad = parser.parse_args(["history", "--port", "70000"])
    assert bad.func(bad) == 2
    assert "history_port" in capsys.readouterr().err


def test_a_worker_api_that_is_not_there_is_one_line_and_exit_code_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("fleet", "machines"):
        assert cli.main([name, "--url", "http://127.0.0.1:1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"arcbeat {name}: cannot reach a worker at http://127.0.0.1:1/")
