"""The capacity planning section of the settings: Azure's limits and how often `arcbeat
history` computes the fleet's capacity report (docs/settings.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from arcbeat.streams.setting_values import Seconds, bad, hide_secrets, named


@dataclass(frozen=True, slots=True)
@hide_secrets
class CapacitySettings:
    """Capacity planning (docs/metrics-alerts-history.md, Capacity planning): Azure's limits
    (0 switches a check off) and how often `arcbeat history` computes the report."""

    limit_resource_groups_per_subscription: int = 980
    limit_machines_per_resource_group: int = 800
    limit_tags_per_machine: int = 50
    limit_tenant_objects: int = 50_000
    # `arcbeat history` computes the fleet's capacity report every interval (0 = off) from a
    # worker's GET /capacity at source_url (a worker's base URL; empty = http://web_host:web_port)
    interval: Seconds = named("capacity_interval", 60.0)
    source_url: str = named("capacity_source_url", "")
    # the API token (first line of this file) the capacity fetch sends, when the workers'
    # API needs one (api_tokens_file): a token of the read role
    token_file: str = named("capacity_token_file", "")

    def validate(self) -> None:
        if self.source_url and not re.match(r"https?://", self.source_url):
            raise bad(
                "capacity_source_url",
                f"must be a worker's base URL such as http://127.0.0.1:6066, "
                f"got {self.source_url!r}",
            )
