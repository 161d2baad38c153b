"""Secrets and broker configuration for docker-compose's SASL_SSL variant.

``python -m arcbeat.deploy.compose_secrets /secrets`` (the one-shot ``kafka-secrets`` service of
``deploy/compose/sasl_ssl.yml``) writes, once, into a folder every service mounts:

    ca.pem, ca.key, broker.pem   a CA and the broker's certificate (SAN kafka, localhost)
    <user>.password              admin, worker, history and each ARCBEAT_KAFKA_AGENT_USERS
    server.properties            the whole broker config: the same SASL_SSL block as the
                                 local stack (kafka_security.server_properties), with
                                 compose's INTERNAL and EXTERNAL listeners
    scram.args                   the salted ``--add-scram`` values for the first format
    admin.properties             Kafka client config for admin (the container healthcheck)

Existing files are kept (passwords and the CA survive a re-run); ``server.properties``,
``scram.args`` and ``admin.properties`` are rewritten from them, so new agent users appear
after ``docker compose run kafka-secrets`` plus ``topics`` (which upserts SCRAM users and ACLs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from arcbeat.deploy import kafka_security as ks
from arcbeat.deploy.errors import StackError
from arcbeat.deploy.kafka_admin.scram import (
    ADMIN_USER,
    ensure_passwords,
    scram_argument,
    users_of,
    write_private,
)
from arcbeat.deploy.services import package_dir, render_template
from arcbeat.deploy.settings import Settings
from arcbeat.streams.settings import SettingsError


def _hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise StackError(f"compose secrets: {what} {value!r} is not HOST:PORT (e.g. kafka:9092)")
    return host, int(port)


def write_secrets(
    out: Path,
    settings: Settings,
    *,
    internal: str = "kafka:9092",
    external: str = "localhost:9092",
    external_bind: int = 9094,
    controller: str = "kafka:9093",
    bind_host: str = "",
    data_dir: str = "/tmp/kraft-combined-logs",
    hosts: Sequence[str] = ("kafka", "localhost", "127.0.0.1"),
) -> list[str]:
    """Write the folder; returns the SCRAM users (admin first)."""
    ihost, iport = _hostport(internal, "--internal")
    _hostport(external, "--external")
    chost, cport = _hostport(controller, "--controller")
    out.mkdir(parents=True, exist_ok=True)
    ks.ensure_certificates(out, hosts)
    users = users_of(settings)
    passwords = ensure_passwords(out, users)
    admin_pw = passwords[ADMIN_USER]
    listeners = [
        ks.Listener("INTERNAL", f"{bind_host}:{iport}", f"{ihost}:{iport}"),
        ks.Listener("EXTERNAL", f"{bind_host}:{external_bind}", external),
    ]
    ctrl = ks.Listener("CONTROLLER", f"{bind_host}:{cport}", f"{chost}:{cport}")
    base = render_template(
        package_dir() / "kafka" / "server.properties",
        kafka_port=iport,
        controller_port=cport,
        data_dir=data_dir,
    )
    text = base + ks.server_properties(listeners, ctrl, out, admin_pw)
    write_private(out / "server.properties", text.encode())
    scram = "".join(scram_argument(u, passwords[u]) + "\n" for u in users)
    write_private(out / "scram.args", scram.encode())
    jaas = ks.jaas_line(
        "org.apache.kafka.common.security.scram.ScramLoginModule", ADMIN_USER, admin_pw
    )
    admin = "\n".join(
        [
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            f"sasl.jaas.config={jaas}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={out / 'ca.pem'}",
            "",
        ]
    )
    write_private(out / "admin.properties", admin.encode())
    return users


def _chown(folder: Path, owner: str) -> None:
    uid, _, gid = owner.partition(":")
    for path in [folder, *folder.iterdir()]:
        os.chown(path, int(uid), int(gid or uid))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m arcbeat.deploy.compose_secrets", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("out", type=Path, help="folder to write (a volume every service mounts)")
    p.add_argument("--internal", default="kafka:9092", help="containers' listener HOST:PORT")
    p.add_argument("--external", default="localhost:9092", help="host's advertised HOST:PORT")
    p.add_argument("--external-bind", type=int, default=9094, help="EXTERNAL's port inside")
    p.add_argument("--controller", default="kafka:9093", help="controller HOST:PORT")
    p.add_argument("--bind-host", default="", help="interface to bind ('' = all)")
    p.add_argument("--data-dir", default="/tmp/kraft-combined-logs", help="the broker's log.dirs")
    p.add_argument("--owner", help="UID[:GID] to own the files (the broker's user, e.g. 1000)")
    args = p.parse_args(argv)
    try:
        users = write_secrets(
            args.out,
            Settings.load(),
            internal=args.internal,
            external=args.external,
            external_bind=args.external_bind,
            controller=args.controller,
            bind_host=args.bind_host,
            data_dir=args.data_dir,
        )
        if args.owner:
            _chown(args.out, args.owner)
    except (StackError, SettingsError, OSError, ValueError) as exc:
        print(f"compose secrets: {exc}", file=sys.stderr)
        return 2
    print(f"compose secrets: {args.out} ready for users {', '.join(users)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
