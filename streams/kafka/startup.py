"""Starting against a Kafka cluster that is partly down.

A broker that has just died stays in the cluster's metadata until the controller fences it
(``broker.session.timeout.ms``, seconds): requests routed to it fail with retriable errors
(``NodeNotReadyError``, ``KafkaConnectionError``, ``RequestTimedOutError``,
``NotControllerError``). A start-up step that meets one is tried again with a capped backoff,
one progress line per retry, until the ``startup_deadline`` setting runs out; only then does
the process give up with :class:`StartupError`, naming the step and the last error. Errors
Kafka calls non-retriable (authorization, a topic of the wrong shape) fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError

T = TypeVar("T")
Say = Callable[[str], None]

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 5.0


class StartupError(RuntimeError):
    """Kafka did not become usable before the start-up deadline; the message says which step,
    the last error and what to check."""


def transient_cause(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain (itself, or what it was raised from) that Kafka says may
    pass on retry: a node not ready, a connection refused, a request timed out, a coordinator
    moving; None when there is none."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # explicit causes only (raise ... from)
        seen.add(id(cause))
        kafka_says_retry = isinstance(cause, KafkaError) and bool(getattr(cause, "retriable", 0))
        if kafka_says_retry or isinstance(cause, TimeoutError | ConnectionError):
            return cause
        cause = cause.__cause__
    return None


def retriable(exc: BaseException) -> bool:
    """Whether a retry may get past ``exc`` (see :func:`transient_cause`)."""
    return transient_cause(exc) is not None


class Deadline:
    """One deadline for every start-up step of a process (``startup_deadline`` seconds)."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.started = clock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    @property
    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed)


def backoff(attempt: int) -> float:
    """The wait before retry ``attempt`` (1, 2, ...): doubling from 0.5 s, at most 5 s."""
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** min(16, max(0, attempt - 1))))


async def retry_start(
    step: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline: Deadline,
    say: Say,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``attempt()`` until it succeeds, retrying retriable Kafka errors until ``deadline``.

    ``step`` names what is started (for the progress lines and the error); ``cleanup`` undoes a
    failed attempt (stops a half-started client) before the next one.
    """
    n = 0
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if cleanup is not None:
                with contextlib.suppress(Exception):
                    await cleanup()
            cause = transient_cause(exc)
            if cause is None:
                raise
            n += 1
            wait = min(backoff(n), deadline.left)
            error = f"{type(exc).__name__}: {exc}"  # the whole story, for the final error
            brief = _describe(cause)  # the root, on each retry
            if deadline.left <= 0:
                raise StartupError(
                    f"{step}: Kafka was still not usable after {deadline.elapsed:.0f}s and "
                    f"{n} attempt(s) (setting startup_deadline, ARCBEAT_STARTUP_DEADLINE="
                    f"{deadline.seconds:g}s); last error: {error}. Check that the brokers of "
                    "ARCBEAT_KAFKA_BOOTSTRAP are up and reachable, and that a controller quorum "
                    "is running"
                ) from exc
            say(
                f"start-up: {step}: Kafka not ready ({brief}); retry {n} in {wait:.1f}s "
                f"({deadline.left:.0f}s left of ARCBEAT_STARTUP_DEADLINE)"
            )
            await asyncio.sleep(wait)


def _describe(exc: BaseException) -> str:
    """``Type: message`` once (aiokafka's messages may start with their type already)."""
    name = type(exc).__name__
    text = str(exc) or "timed out"
    return text if text.startswith(name) else f"{name}: {text}"
