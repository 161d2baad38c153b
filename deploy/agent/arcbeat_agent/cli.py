"""The ``arcbeat-agent`` command (docs/agent.md). Exit codes: :mod:`arcbeat_agent.errors`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from arcbeat_agent import errors, version
from arcbeat_agent.check import run_check
from arcbeat_agent.commands import connect, disconnect, show, show_text
from arcbeat_agent.config import AgentConfig, load_config
from arcbeat_agent.contract import resource_id
from arcbeat_agent.daemon import run
from arcbeat_agent.errors import AgentError, ConfigError
from arcbeat_agent.platform_info import is_windows, machine_name
from arcbeat_agent.service import agent_executable

EPILOG = (
    "exit codes: 0 done; 1 check found a problem or an unexpected error; 2 bad configuration, "
    "secret file, Resource ID or arguments; 3 Kafka unreachable; 4 Kafka refused the login or "
    "the write; 5 this machine is not onboarded (connect first)"
)


def _say(message: str) -> None:
    print(f"arcbeat-agent: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arcbeat-agent",
        description="The arcbeat agent of this machine: onboard it, send its heartbeats, "
        "show its status, test its connection.",
        epilog=EPILOG,
    )
    config_help = ("the configuration file (default: ARCBEAT_AGENT_CONFIG, else "
                   r"/etc/arcbeat/agent.toml or %%ProgramData%%\arcbeat\agent.toml)")
    p.add_argument("--config", help=config_help)
    p.add_argument("--version", action="version", version=f"arcbeat-agent {version()}")
    # --config also after the command (`arcbeat-agent run --config FILE`, as the unit has it)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, epilog=EPILOG, parents=[common])

    c = command("connect", "onboard this machine (sends `connect`)")
    c.add_argument("--resource-id", default="", help="the full Resource ID of this machine")
    c.add_argument("--subscription-id", default="", help="with --resource-group: build the ID")
    c.add_argument("--resource-group", default="")
    c.add_argument("--machine-name", default="", help="default: this host's name")
    c.add_argument("--location", default="", help="region such as westeurope")
    c.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE")

    command("disconnect", "remove this machine from arcbeat (sends `disconnect`)")
    command("run", "the daemon: a heartbeat every interval until stopped")
    s = command("show", "the local status")
    s.add_argument("--json", action="store_true", help="as a JSON object")
    k = command("check", "connectivity self-test, one verdict a line")
    k.add_argument("--timeout", type=float, default=10.0, help="seconds per step (default 10)")

    svc = sub.add_parser("service", help="install or remove the system service")
    ssub = svc.add_subparsers(dest="action", required=True, metavar="ACTION")
    i = ssub.add_parser("install", help="write the systemd unit (or the WinSW service file) "
                        "and a configuration skeleton")
    i.add_argument("--user", default="arcbeat-agent", help="the service's user (Linux)")
    i.add_argument("--root", default="/", help="write under this root (image builds)")
    i.add_argument("--no-create-user", action="store_true",
                   help="do not create the service user (Linux)")
    i.add_argument("--exec", dest="executable", default="",
                   help="the arcbeat-agent program to run (default: this one)")
    u = ssub.add_parser("uninstall", help="remove the service definition")
    u.add_argument("--root", default="/")
    return p


def _tags(items: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--tag {item!r}: expected NAME=VALUE, such as env=prod")
        tags[name] = value
    return tags


def _service(args: argparse.Namespace) -> int:
    executable = getattr(args, "executable", "") or agent_executable()
    if is_windows():
        from arcbeat_agent.service import windows

        lines = windows.install(executable) if args.action == "install" else windows.uninstall()
    else:
        from arcbeat_agent.service import systemd

        if args.action == "install":
            lines = systemd.install(executable, root=Path(args.root), user=args.user,
                                    create_user=not args.no_create_user)
        else:
            lines = systemd.uninstall(root=Path(args.root))
    print("\n".join(lines))
    return errors.OK


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "service":
        return _service(args)
    config: AgentConfig = load_config(args.config)
    if args.command == "connect":
        rid = args.resource_id
        if not rid and args.subscription_id and args.resource_group:
            rid = resource_id(args.subscription_id, args.resource_group,
                              args.machine_name or machine_name())
        state = asyncio.run(connect(config, resource_id=rid, location=args.location,
                                    tags=_tags(args.tag)))
        print(f"connected {state.resource_id} ({state.location}); start the service "
              "(systemctl enable --now arcbeat-agent) to keep it Connected")
        return errors.OK
    if args.command == "disconnect":
        state = asyncio.run(disconnect(config))
        print(f"disconnected {state.resource_id}: arcbeat removes it (Deleted); stop the "
              "service (systemctl disable --now arcbeat-agent)")
        return errors.OK
    if args.command == "show":
        status = show(config)
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json
              else show_text(status))
        return errors.OK
    if args.command == "check":
        verdicts = asyncio.run(run_check(config, timeout=args.timeout))
        for verdict in verdicts:
            print(verdict.line())
        failed = sum(v.outcome == "FAIL" for v in verdicts)
        print(f"{len(verdicts)} checks, {failed} failed")
        return errors.CHECK_FAILED if failed else errors.OK
    asyncio.run(run(config, say=_say))
    return errors.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _dispatch(args)
    except AgentError as exc:
        print(f"arcbeat-agent {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return errors.OK
