"""Kafka's (Describe|Alter)UserScramCredentials requests (KIP-554), for aiokafka.

aiokafka has no helper for SCRAM users; these are the v0 wire schemas from Kafka's
``clients/src/main/resources/common/message/*UserScramCredentials*.json`` (flexible
versions, so compact strings and tagged fields), sent with the admin client's
``_send_request`` like the ACL requests. The broker forwards them to the KRaft controller.
"""

from __future__ import annotations

from typing import TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

SCRAM_SHA_256 = 1
SCRAM_SHA_512 = 2
_STR = CompactString("utf-8")


class DescribeUserScramCredentialsResponse_v0(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        (
            "results",
            CompactArray(
                ("user", _STR),
                ("error_code", Int16),
                ("error_message", _STR),
                (
                    "credential_infos",
                    CompactArray(
                        ("mechanism", Int8), ("iterations", Int32), ("tags", TaggedFields)
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = DescribeUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("users", CompactArray(("name", _STR), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


DescribeStruct: TypeAlias = DescribeUserScramCredentialsRequest_v0


class DescribeUserScramCredentialsRequest(Request[DescribeStruct]):
    API_KEY = 50

    def __init__(self, users: list[str]) -> None:
        self._users = users

    def build(self, request_struct_class: type[DescribeStruct]) -> DescribeStruct:
        return request_struct_class([(u, {}) for u in self._users], {})


class AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user_name", _STR),
                ("error_code", Int16),
                ("error_message", _STR),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(("name", _STR), ("mechanism", Int8), ("tags", TaggedFields)),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", _STR),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


AlterStruct: TypeAlias = AlterUserScramCredentialsRequest_v0
Upsert: TypeAlias = tuple[str, int, int, bytes, bytes]  # name, mechanism, iterations, salt, salted


class AlterUserScramCredentialsRequest(Request[AlterStruct]):
    API_KEY = 51

    def __init__(self, upserts: list[Upsert]) -> None:
        self._upserts = upserts

    def build(self, request_struct_class: type[AlterStruct]) -> AlterStruct:
        return request_struct_class([], [(*u, {}) for u in self._upserts], {})
