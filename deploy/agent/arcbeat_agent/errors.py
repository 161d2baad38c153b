"""The agent's errors and its exit codes (docs/agent.md, Exit codes)."""

from __future__ import annotations

from typing import Final

OK: Final = 0
CHECK_FAILED: Final = 1  # `check` found a problem; `run` stopped after an unexpected error
CONFIG: Final = 2  # bad configuration, secret file, Resource ID or command line
UNREACHABLE: Final = 3  # Kafka could not be reached or did not acknowledge
REFUSED: Final = 4  # Kafka refused the login or the write (credentials, ACLs)
NOT_CONNECTED: Final = 5  # `run`/`disconnect` on a machine that is not onboarded


class AgentError(Exception):
    """An error the user can fix; the message says what, where and how."""

    exit_code: int = CHECK_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(AgentError):
    exit_code = CONFIG


class KafkaUnreachable(AgentError):
    exit_code = UNREACHABLE


class KafkaRefused(AgentError):
    exit_code = REFUSED


class NotConnected(AgentError):
    exit_code = NOT_CONNECTED
