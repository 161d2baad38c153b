"""The handbook (README.md and docs/*.md): links resolve, it stands on its own, and the settings
reference matches the settings. Pure: reads files, starts nothing."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy.settings import SETTINGS, Settings
from arcbeat.streams.settings import Setting, SettingsError

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SETTINGS_DOC = DOCS / "settings.md"


def handbook() -> list[Path]:
    return [
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        REPO / "CONTRIBUTING.md",
        *sorted(DOCS.glob("*.md")),
    ]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


# ---- Markdown helpers -----------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _blank(m: re.Match[str]) -> str:
    """A fenced block turned into as many empty lines (line numbers stay right)."""
    return "\n" * m.group(0).count("\n")


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text without Markdown, lower case, punctuation other
    than ``-`` and ``_`` removed, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated one gets ``-1``, ``-2`` ... as on GitHub."""
    seen: Counter[str] = Counter()
    out: set[str] = set()
    for _, heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return out


# ---- links ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", handbook(), ids=_ids(handbook()))
def test_relative_links_resolve(page: Path) -> None:
    broken: list[str] = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
            continue
        if REPO not in dest.parents and dest != REPO:
            broken.append(f"{target}: outside the repository")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_every_docs_page_is_in_the_index() -> None:
    index = {Path(t.partition("#")[0]).name for t in links(DOCS / "README.md")}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in index]
    assert not missing, f"docs/README.md does not link {missing}"


@pytest.mark.parametrize("page", handbook(), ids=_ids(handbook()))
def test_table_rows_have_the_header_columns(page: Path) -> None:
    """A ``|`` inside a cell (even in a code span) splits the cell: the table breaks."""
    bad: list[str] = []
    columns = None
    for n, line in enumerate(_FENCE.sub(_blank, page.read_text(encoding="utf-8")).splitlines(), 1):
        if not line.startswith("|"):
            columns = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        if columns is None:
            columns = cells
        elif cells != columns:
            bad.append(f"line {n}: {cells - 1} cells, the header has {columns - 1}")
    assert not bad, f"{page.relative_to(REPO)}: broken table rows: {bad}"


def test_slug_matches_github() -> None:
    assert slug("Maintenance windows: /maintenance") == "maintenance-windows-maintenance"
    assert slug("GET /machines/{resourceId}") == "get-machinesresourceid"
    assert slug("Liveness is the broker's arrival time") == "liveness-is-the-brokers-arrival-time"
    assert slug("`arcbeat_*` metrics, and history_port") == "arcbeat_-metrics-and-history_port"


# ---- the handbook stands on its own -----------------------------------------------------------

# what the repository cannot point at: files outside it, and a document it does not carry
FORBIDDEN = (
    re.compile(r"\.\./shared"),
    re.compile(r"SPEC\.md"),
    re.compile(r"\bSPEC\b"),
    re.compile(r"§"),
)


@pytest.mark.parametrize("page", handbook(), ids=_ids(handbook()))
def test_no_reference_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for pattern in FORBIDDEN
        for m in pattern.finditer(text)
    ]
    assert not found, f"{page.relative_to(REPO)} points outside the repository: {found}"


# ---- the settings reference -----------------------------------------------------------------

_ROW = re.compile(
    r"^\|\s*`([a-z][a-z0-9_]*)`\s*\|\s*`([^`]*)`\s*\|\s*`([^`]*)`\s*\|\s*`([^`]*)`\s*\|(.*)\|\s*$"
)


def documented_settings() -> list[tuple[str, str, str, str, str]]:
    """``(setting, in code, environment variable, default, meaning)`` of every row of the
    settings tables in docs/settings.md (rows whose first cell is a setting name in backticks)."""
    rows = []
    for line in SETTINGS_DOC.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            name, path, env, default, meaning = m.groups()
            rows.append((name, path, env, default, meaning.strip()))
    return rows


def env_name(setting: str) -> str:
    return "ARCBEAT_" + setting.upper()


def shown_default(value: Any) -> str:
    """How the default reads in the table: as the environment variable would give it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else '""'


def suggested_row(s: Setting) -> str:
    return f"| `{s.name}` | `{s.path}` | `{s.env}` | `{shown_default(s.default)}` | <meaning> |"


def loaded(name: str, shown: str, tmp_path: Path) -> Any:
    """The value a setting gets from its environment variable set to the documented default."""
    raw = "" if shown == '""' else shown
    settings = Settings.load(env={env_name(name): raw}, toml_path=tmp_path / "absent.toml")
    return settings.value(name)


def section_fields() -> list[str]:
    """``section.field`` of every field of every section of :class:`Settings`."""
    defaults = Settings()
    return [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Settings)
        for f in dataclasses.fields(getattr(defaults, section.name))
    ]


def test_every_field_of_the_settings_is_a_setting() -> None:
    """Each field of each section has exactly one flat name (environment variable, TOML key)."""
    named = Counter(s.path for s in SETTINGS.values())
    unnamed = [path for path in section_fields() if path not in named]
    assert not unnamed, f"fields without a setting name in arcbeat.streams.settings: {unnamed}"
    assert not [p for p, c in named.items() if c > 1], f"fields named twice: {named}"
    assert not set(named) - set(section_fields()), "settings naming no field"


def test_every_setting_is_documented() -> None:
    documented = {row[0] for row in documented_settings()}
    missing = [s for s in SETTINGS.values() if s.name not in documented]
    assert not missing, "docs/settings.md lacks settings; add rows such as:\n" + "\n".join(
        suggested_row(s) for s in missing
    )


def test_no_unknown_or_repeated_setting_is_documented() -> None:
    names = Counter(row[0] for row in documented_settings())
    unknown = sorted(set(names) - set(SETTINGS))
    repeated = sorted(n for n, c in names.items() if c > 1)
    assert not unknown, f"docs/settings.md documents settings that do not exist: {unknown}"
    assert not repeated, f"docs/settings.md documents settings twice: {repeated}"


def test_documented_defaults_and_variables_are_right(tmp_path: Path) -> None:
    wrong: list[str] = []
    for name, path, env, shown, meaning in documented_settings():
        s = SETTINGS.get(name)
        if s is None:
            continue  # test_no_unknown_or_repeated_setting_is_documented
        if path != s.path:
            wrong.append(f"{name}: in code `{path}`, should be `{s.path}`")
        if env != env_name(name):
            wrong.append(f"{name}: environment variable {env}, should be {env_name(name)}")
        if not meaning:
            wrong.append(f"{name}: no meaning")
        try:
            value = loaded(name, shown, tmp_path)
        except SettingsError as exc:
            wrong.append(f"{name}: documented default `{shown}` is not a valid value: {exc}")
            continue
        if value != s.default:
            wrong.append(
                f"{name}: documented default `{shown}` gives {value!r}, the default is "
                f"{s.default!r} (e.g. `{shown_default(s.default)}`)"
            )
    assert not wrong, "docs/settings.md:\n  " + "\n  ".join(wrong)


# ---- the front page and the layout ----------------------------------------------------------


def readme_test_command() -> str:
    """The quick start's test command: what follows `bash deploy/install.sh && ` on the line
    that runs pytest, up to its comment."""
    quick = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in quick.splitlines() if "-m pytest" in ln]
    assert len(lines) == 1, f"README.md's quick start: expected one pytest line, got {lines}"
    command = lines[0].split("&&", 1)[1].split("#", 1)[0].strip()
    assert command.startswith("python3 -m pytest"), lines[0]
    return command


def test_ci_and_contributing_run_the_readmes_test_command() -> None:
    command = readme_test_command()
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    runs = [ln for ln in ci if ln.startswith("python3 -m pytest")]
    assert len(runs) == 1, f".ci/run: expected one pytest run, got {runs}"
    assert runs[0] == command or runs[0].startswith(command + " "), (
        f".ci/run runs `{runs[0]}`, not the README's `{command}` (its arguments may follow)"
    )
    assert f"`{command}` (the README's command)" in (REPO / "CONTRIBUTING.md").read_text(), (
        f"CONTRIBUTING.md's full suite does not say `{command}` (the README's command)"
    )


def test_the_front_page_stays_short() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= 14 * 1024, f"README.md is {size} bytes: move detail into docs/"


def test_the_layout_page_names_every_module_of_streams() -> None:
    """docs/layout.md matches the tree: every folder and module of streams/ is named."""
    text = (DOCS / "layout.md").read_text()
    streams = REPO / "streams"
    missing = [
        str(path.relative_to(REPO))
        for path in sorted(streams.rglob("*.py"))
        if path.name != "__init__.py" and not re.search(rf"\b{re.escape(path.name)}\b", text)
    ]
    missing += [
        f"{d.name}/"
        for d in sorted(streams.iterdir())
        if d.is_dir() and (d / "__init__.py").exists() and f"{d.name}/" not in text
    ]
    assert not missing, f"docs/layout.md does not name {missing}"
