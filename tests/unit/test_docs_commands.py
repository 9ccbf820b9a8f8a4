"""Every ``tokenissue`` command that README.md and docs/ show is one the CLI has: the command
path exists, and every option it names is an option of that command, spelt by its one shown
name (not a hidden old spelling). The README's demo transcript is run for real by
tests/cli/test_demo.py; this keeps the rest of the pages from naming commands and options that
are gone or renamed."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer

from tokenissue.cli._app import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`tokenissue ([^`\n]+)`")
SEPARATORS = {"|", "||", "&&", ";", ">", "<", "2>", ">>", "2>&1"}


def _commands(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, argv after 'tokenissue') of each tokenissue command in a page's code blocks."""
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        # In a transcript only the '$ ' lines are commands; the rest is what they printed.
        transcript = any(line.startswith("$ ") for line in block.group(1).splitlines())
        joined, start = "", first_line
        for n, line in enumerate(block.group(1).splitlines(), first_line):
            if transcript and not joined and not line.startswith("$ "):
                continue
            if not joined:
                start = n
            if line.endswith("\\"):
                joined += line[:-1] + " "
                continue
            joined += line
            logical, joined = joined.strip(), ""
            if logical.startswith("$ "):
                logical = logical[2:]
            # A command starts the line or follows && / | / ; on it.
            for part in re.split(r"&&|\|\||\||;", logical):
                part = part.strip()
                for prefix in ("tokenissue ", ".venv/bin/tokenissue "):
                    if part.startswith(prefix):
                        yield start, _words(part[len(prefix):])
    # Inline code in prose and tables: `tokenissue renew --token T [--within 30d]`.
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in INLINE.finditer(outside):
        words = _words(m.group(1))
        if "/" not in words:  # 'cert import / list / export' names several commands at once
            yield outside.count("\n", 0, m.start()) + 1, words


def _words(command: str) -> list[str]:
    # '[--status open]' shows an optional part: check what is inside the brackets too.
    command = command.replace("[", " ").replace("]", " ")
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose-like examples: split on blanks
        words = command.split()
    out = []
    for w in words:
        if w in SEPARATORS or w.startswith((">", "2>")):
            break
        out.append(w)
    return out


def _option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


def _check(root: click.Command, argv: list[str]) -> str | None:
    """Why ``tokenissue argv`` would not parse by its documented names, or None."""
    command, path = root, ["tokenissue"]
    for word in argv:
        if word in ("...", "…"):
            return None  # the rest is elided
        if isinstance(command, click.Group) and not word.startswith("-"):
            sub = command.commands.get(word)
            if sub is None:
                return f"'{' '.join(path)}' has no command '{word}'"
            command, path = sub, [*path, word]
            continue
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            if re.fullmatch(r"-[A-Za-z]{2,}", name):  # bundled short flags: -qx
                continue
            if name not in _option_names(command):
                return f"'{' '.join(path)}' has no option {name}"
    return None  # ending at a group is prose naming it ('tokenissue ra'), or --help / --version


def _all() -> list[tuple[str, int, list[str]]]:
    found = []
    for page in PAGES:
        for line, argv in _commands(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(ROOT)), line, argv))
    return found


def test_the_pages_show_commands() -> None:
    found = _all()
    pages = {page for page, _, _ in found}
    # A guard on the extraction itself: if the fences or prefixes stop matching, say so.
    assert len(found) >= 140 and {"README.md", "docs/ca-admin.md", "docs/tokens-and-keys.md"} <= pages, found


def test_the_checker_catches_what_it_is_for() -> None:
    root = typer.main.get_command(app)
    assert _check(root, ["ca", "list", "--ca", "/srv/ca", "--within", "30d"]) is None
    assert _check(root, ["ca", "list", "--ca-dir", "/srv/ca"]) == "'tokenissue ca list' has no option --ca-dir"
    assert _check(root, ["ca", "lisst"]) == "'tokenissue ca' has no command 'lisst'"
    assert _check(root, ["ca", "revoke", "--reason", "key-compromise", "--json", "-o", "x"]) == (
        "'tokenissue ca revoke' has no option -o")


@pytest.mark.parametrize("page", [str(p.relative_to(ROOT)) for p in PAGES])
def test_every_documented_command_parses(page: str) -> None:
    root = typer.main.get_command(app)  # without the hidden aliases: docs use the shown names
    wrong = [f"{p}:{line}: tokenissue {' '.join(argv)}: {why}"
             for p, line, argv in _all() if p == page and (why := _check(root, argv))]  # fmt: skip
    assert not wrong, "\n".join(wrong)
