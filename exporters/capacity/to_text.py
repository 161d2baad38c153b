"""The ``arcbeat capacity`` text report of a report."""

from __future__ import annotations

from collections.abc import Sequence

from arcbeat.exporters.capacity.model import CRITICAL_RATIO, WARNING_RATIO, CapacityReport
from arcbeat.exporters.capacity.to_json import iso_utc


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> list[str]:
    """Plain-text table: the first ``text_columns`` left-aligned, the rest (numbers) right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _days(d: float | None) -> str:
    if d is None:
        return "-"
    return "0" if d == 0 else f"{d:.1f}"


def render_table(report: CapacityReport, top: int = 20) -> str:
    """The ``arcbeat capacity`` text report; ``top`` scopes closest to their limits."""
    out: list[str] = [
        f"Capacity report at {iso_utc(report.generated_at)}: {report.machines} machines, "
        f"{len(report.machines_per_subscription)} subscriptions, "
        f"{len(report.machines_per_resource_group)} resource groups, "
        f"{len(report.machines_per_location)} locations",
        "",
    ]
    shown = report.checks[:top]
    out.append(
        f"Limits (closest first, {len(shown)} of {len(report.checks)}; "
        f"warning at {WARNING_RATIO:.0%}, critical at {CRITICAL_RATIO:.0%}):"
    )
    out += _table(
        ["level", "kind", "scope", "used", "limit", "headroom", "use", "days to limit"],
        [
            [
                u.level,
                u.kind,
                u.scope,
                str(u.used),
                str(u.limit),
                str(u.headroom),
                f"{u.ratio:.1%}",
                _days(u.days_to_limit),
            ]
            for u in shown
        ],
        text_columns=3,
    )
    for note in report.notes:
        out.append(f"note: {note}")
    out.append("")
    out.append("Machines per location:")
    out += _table(
        ["location", "machines"],
        [[loc, str(n)] for loc, n in report.machines_per_location.items()],
    )
    out.append("")
    out.append("Machines per subscription:")
    out += _table(
        ["subscription", "machines"],
        [[s, str(n)] for s, n in list(report.machines_per_subscription.items())[:top]],
    )
    out.append("")
    out.append(
        f"Tags: at most {report.max_tags} on one machine (limit {report.limits.tags_per_machine}); "
        f"{report.machines_at_tag_limit} machines at the limit, "
        f"{report.machines_over_tag_limit} over it"
    )
    out.append(
        f"Unsupported operating systems: {report.unsupported_os_machines} machines "
        f"({report.unknown_os_machines} did not report their OS); "
        f"supported: {'; '.join(report.supported_os)}"
    )
    if report.unsupported_os:
        out += _table(
            ["os name", "os version", "machines"],
            [[o.os_name, o.os_version or "?", str(o.machines)] for o in report.unsupported_os],
            text_columns=2,
        )
    out.append(
        f"Machines outside supported regions ({', '.join(report.supported_regions)}): "
        f"{report.unsupported_region_machines}"
    )
    if report.unsupported_regions:
        out += _table(
            ["location", "machines"],
            [[loc, str(n)] for loc, n in report.unsupported_regions.items()],
        )
    out.append("")
    out.append(
        f"Agent versions: latest {report.latest_agent_version or '-'}, "
        f"{report.machines_not_on_latest_agent} machines on older versions"
    )
    out += _table(
        ["agent version", "machines", "share"],
        [
            [v, str(n), f"{n / report.machines:.1%}" if report.machines else "-"]
            for v, n in report.agent_versions.items()
        ],
    )
    return "\n".join(out) + "\n"
