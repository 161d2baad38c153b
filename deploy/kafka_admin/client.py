"""Helpers for aiokafka's admin client."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient


async def close_quietly(admin: AIOKafkaAdminClient) -> None:
    """Close ``admin``, ignoring errors (it may never have connected)."""
    with contextlib.suppress(Exception):
        await admin.close()
