"""Leaving the consumer group as a static member (LeaveGroup v3, KIP-345).

A static member (``group_instance_id``) does not leave the group when it stops, so that a
restart takes its partitions back at once; aiokafka sends no LeaveGroup for it at all. A
worker that is stopped on purpose (scale-in, deploy) must hand its partitions over at once
instead of after the session timeout: it sends LeaveGroup v3 naming its instance id, the
request Kafka's own admin client uses to remove static members. Wire schema from Kafka's
``clients/src/main/resources/common/message/LeaveGroup{Request,Response}.json``.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger("arcbeat.leave_group")
_STR = String("utf-8")


class LeaveGroupResponse_v3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", _STR), ("group_instance_id", _STR), ("error_code", Int16))),
    )


class LeaveGroupRequest_v3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", _STR),
        ("members", Array(("member_id", _STR), ("group_instance_id", _STR))),
    )


LeaveStruct: TypeAlias = LeaveGroupRequest_v3


class StaticLeaveGroupRequest(Request[LeaveStruct]):
    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance_id: str) -> None:
        self._group = group
        self._member = (member_id, instance_id)

    def build(self, request_struct_class: type[LeaveStruct]) -> LeaveStruct:
        return request_struct_class(self._group, [self._member])


async def leave_as_static_member(consumer: Any, group: str, instance_id: str) -> bool:
    """Remove this static member from ``group`` now; False when it could not be sent.

    Best effort, like aiokafka's own leave: when it fails, the partitions move after the
    session timeout.
    """
    coordinator = consumer._coordinator  # aiokafka's GroupCoordinator: member id, node
    member_id = coordinator.member_id
    node = coordinator.coordinator_id
    if node is None or not member_id:
        return False
    try:
        response = await consumer._client.send(
            node, StaticLeaveGroupRequest(group, member_id, instance_id)
        )
    except Exception as exc:  # best effort: the session timeout still applies
        log.warning("could not leave consumer group %s: %s", group, exc)
        return False
    errors = [response.error_code, *(m[2] for m in response.members)]
    if any(errors):
        log.warning("leaving consumer group %s: error codes %s", group, errors)
        return False
    return True
