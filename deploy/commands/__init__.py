"""The ``arcbeat`` command's subcommands: one module per command, all in one style.

Module ``arcbeat.deploy.commands.<name>`` is the command ``arcbeat <name>`` and has two
public functions:

``register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None``
    Adds the command's parser with ``sub.add_parser("<name>", help=..., description=...)``,
    its options, and ``set_defaults(func=run)``. A command with actions of its own
    (``arcbeat stack up|down|status``) adds them as sub-parsers here.

``run(args: argparse.Namespace) -> int``
    Does the command and returns the exit code: 0 done, 1 failed, 2 unusable settings or
    arguments. Expected failures are printed as ``arcbeat <name>: <message>`` on stderr,
    not raised.

A command module holds the command line only: options, reading the settings, calling the
domain (``arcbeat.streams``, ``arcbeat.exporters``, ``arcbeat.dashboards``,
``arcbeat.bench``, and the rest of ``arcbeat.deploy``) with plain values, printing, exit
codes. The work itself lives in the domain modules, which know nothing of argparse.

A new command is a new module here plus one entry in ``COMMANDS`` of
:mod:`arcbeat.deploy.cli`, which lists every command explicitly (a missing module fails
at import, it is never skipped). A module whose name starts with ``_`` holds helpers
shared by several commands and is not a command; every other module here must be in
``COMMANDS`` (tests/deploy/test_commands.py checks both, and each command's own parser).
"""
