"""Errors of the local stack manager."""

from __future__ import annotations


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message names the service, what failed
    and where to look (log path and its last lines)."""
