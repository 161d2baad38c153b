"""One report from several runs: a run of some phases (``arcbeat bench --phases ...``) written
over a report replaces those phases' figures and keeps the others.

``arcbeat bench`` merges when it writes into a folder that holds a ``latest.json`` already;
``python -m arcbeat.bench.merge RUN.json [INTO.json]`` merges a report written elsewhere (by
default into ``bench/reports/latest.json``). Each phase taken from a later run is named in
``mergedPhases`` with that run, and the goals are evaluated again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from arcbeat.bench.goals import evaluate

REPORT = Path(__file__).resolve().parent / "reports" / "latest.json"


def _ran(section: Any) -> bool:
    return isinstance(section, dict) and not section.get("skipped")


NOTE = "Figures of "


def merge(run: dict[str, Any], earlier: dict[str, Any], phases: tuple[str, ...]) -> dict[str, Any]:
    """``earlier`` with the phases of ``phases`` that ``run`` ran (or failed) taken from
    ``run``, and its goals evaluated again. Neither report is changed.

    The earlier report stays the frame (its command, machine, versions and settings describe
    its own phases); ``mergedPhases`` names, for each phase taken from a later run, that run's
    start, command, variant and machine (its load).
    """
    out = dict(earlier)
    merged: dict[str, Any] = dict(earlier.get("mergedPhases") or {})
    origin = {
        "startedAt": run.get("startedAt"),
        "command": run.get("command"),
        "quick": run.get("quick"),
        "machine": run.get("machine"),
    }
    for phase in phases:
        if _ran(run.get(phase)):
            out[phase] = run[phase]
            merged[phase] = origin
    if merged:
        out["mergedPhases"] = merged
        later = ", ".join(sorted(merged))
        out["notes"] = [
            *[n for n in earlier.get("notes") or [] if not str(n).startswith(NOTE)],
            f"{NOTE}{later} are from later runs of those phases alone (mergedPhases names "
            "each one's run and the machine's load then).",
        ]
    out["goals"] = evaluate(out)
    return out


def merge_file(run: dict[str, Any], into: Path, phases: tuple[str, ...]) -> dict[str, Any]:
    """``run`` merged with the report at ``into`` if there is one (``run`` as it is if not)."""
    if not into.exists():
        return run
    try:
        earlier = json.loads(into.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"{into}: cannot read the earlier report to keep its phases ({exc}); move it away "
            "or pass another --out"
        ) from exc
    return merge(run, earlier, phases)


def main(argv: list[str]) -> int:
    from arcbeat.bench.report import write_report
    from arcbeat.bench.runner import PHASES

    if not argv or len(argv) > 2:
        print("usage: python -m arcbeat.bench.merge RUN.json [INTO.json]", file=sys.stderr)
        return 2
    run_path = Path(argv[0])
    into = Path(argv[1]) if len(argv) > 1 else REPORT
    try:
        run = json.loads(run_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"{run_path}: not a bench report ({exc})", file=sys.stderr)
        return 2
    md, js = write_report(merge_file(run, into, PHASES), into.parent, into.stem)
    print(f"merged {run_path} into {js} and {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
