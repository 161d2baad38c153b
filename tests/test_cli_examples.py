"""Every ``arcbeat …`` example in the README and docs/ parses with the real argument parser
(:func:`arcbeat.deploy.cli.build_parser`): code blocks and code spans alike. Pure: nothing runs.

An example is a shell line (``\\`` continuations joined, a ``$`` prompt and ``VAR=value``
prefixes dropped; in a block with ``$`` prompts only the prompted lines, the rest is output) from
``arcbeat`` up to a pipe, ``&&``, ``&``, ``;``, a redirection or a comment;
``[--option]`` (optional) counts as ``--option``, and ``a`` / ``b`` alternatives in a span are
each an example. Placeholders stand for values: ``N`` and ``%i`` (a worker id) for a number; a
command written ``<command>`` stands for any. A span without options that names a command
(`arcbeat maintenance`, `arcbeat maintenance create`) is a reference to it: its words must be
commands, its required arguments may be left out.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass

import pytest

from arcbeat.deploy.cli import build_parser
from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(```|~~~)([^\n]*)\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")
_STOP = re.compile(r"\s(?:\||&&|&|;|#|>|2>|<)(?:\s|$)")
SHELLS = {"", "sh", "bash", "shell", "console"}


NUMBER_PLACEHOLDERS = {"N", "%i"}


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    text: str
    span: bool = False  # a code span in prose (else a line of a code block)


def _command(text: str) -> str | None:
    """The ``arcbeat …`` command of a shell line, or None."""
    text = text.strip()
    text = re.sub(r"^\$\s+", "", text)
    text = _ENV.sub("", text)
    if not re.match(r"arcbeat(\s|$)", text):
        return None
    m = _STOP.search(text)
    if m:
        text = text[: m.start()]
    return re.sub(r"\[(-[^\]]+)\]", r"\1", text).strip()


def examples() -> list[Example]:
    out: list[Example] = []
    for page in PAGES:
        raw = page.read_text(encoding="utf-8")
        name = str(page.relative_to(REPO))
        blocks: list[tuple[int, int]] = []
        for fence in _FENCE.finditer(raw):
            blocks.append(fence.span())
            if fence.group(2).strip().lower() not in SHELLS:
                continue
            first = raw.count("\n", 0, fence.start(3)) + 1
            joined = fence.group(3).replace("\\\n", " ")
            # a block with `$ ` prompts is a session: its other lines are output
            prompted = any(line.startswith("$ ") for line in joined.splitlines())
            lineno = first
            for line in joined.splitlines():
                cmd = _command(line) if not prompted or line.startswith("$ ") else None
                if cmd:
                    out.append(Example(name, lineno, cmd))
                lineno += 1
        for span in _SPAN.finditer(raw):
            if any(a <= span.start() < b for a, b in blocks):
                continue
            line = raw.count("\n", 0, span.start()) + 1
            for part in span.group(1).split(" / "):
                part = part.strip()
                if not part.startswith("arcbeat"):
                    # `arcbeat stack up` / `down`: the alternative continues the command before
                    continue
                cmd = _command(part)
                if cmd and cmd != "arcbeat":
                    out.append(Example(name, line, cmd, span=True))
    return out


EXAMPLES = examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 30, [e.text for e in EXAMPLES]
    commands = {shlex.split(e.text)[1] for e in EXAMPLES if len(shlex.split(e.text)) > 1}
    assert {"worker", "history", "maintenance", "stack", "topics"} <= commands, commands


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.page}:{e.line}")
def test_every_example_parses(example: Example) -> None:
    parser = build_parser()
    argv = ["0" if a in NUMBER_PLACEHOLDERS else a for a in shlex.split(example.text)[1:]]
    if argv and re.fullmatch(r"<[^>]+>", argv[0]):
        argv = ["worker", *argv[1:]]  # `arcbeat <command> --help`: any command takes these
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        reference = example.span and not any(a.startswith("-") for a in argv)
        missing_only = "the following arguments are required" in err.getvalue()
        if exc.code not in (0, None) and not (reference and missing_only):  # --help exits 0
            pytest.fail(
                f"{example.page}:{example.line}: `{example.text}` is refused by the parser:\n"
                f"{err.getvalue().strip()}",
                pytrace=False,
            )
