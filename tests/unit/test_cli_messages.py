"""Library errors name no CLI option or command; the CLI says the remedy (cli/_messages.py)."""

from __future__ import annotations

import ast
import importlib
import itertools
import re
import string
from pathlib import Path

import pytest

from tokenissue.cli._messages import _RENDERERS, REMEDIES, join, say
from tokenissue.errors import KeyNotFound, PinLocked, Remedy, TokenIssueError, UsageError

PACKAGE = Path(__file__).resolve().parents[2] / "tokenissue"


def test_every_remedy_has_words() -> None:
    assert set(REMEDIES) == set(Remedy)


def test_renderers_name_real_error_classes() -> None:
    for dotted in _RENDERERS:
        module, _, name = dotted.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, TokenIssueError), dotted


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (PinLocked("The PIN is locked.", remedy=Remedy.UNBLOCK_PIN),
         "The PIN is locked; unblock it with 'tokenissue token pin unblock' (needs the SO PIN)."),
        (KeyNotFound("No private key 'x' on token 't'.", remedy=Remedy.LIST_KEYS),
         "No private key 'x' on token 't'; 'tokenissue keys list' shows the keys."),
        (UsageError("Token serial 1 is present, so this enrollment can still be finished.",
                    remedy=Remedy.RESUME_OR_ABANDON, details={"journal_id": "abc"}),
         "Token serial 1 is present, so this enrollment can still be finished; finish it with 'tokenissue enroll "
         "--resume' (--ca LOCATION if its CA's address was wrong or has moved), or give up on it and remove its key "
         "with 'tokenissue journal abandon abc --remove-key'."),
        (UsageError("Plain."), "Plain."),
    ],
)  # fmt: skip
def test_the_cli_says_the_remedy(error: TokenIssueError, said: str) -> None:
    assert say(error) == said
    assert "tokenissue " not in str(error) or "tokenissue " in error.message  # str() is the library's sentence


def test_join_keeps_one_sentence_or_starts_another() -> None:
    assert join("A.", "do b.") == "A; do b."
    assert join("A.", "or do b.") == "A, or do b."
    assert join("A.", "Then b.") == "A. Then b."
    assert join("A.", "(B.)") == "A. (B.)"


def test_remedy_placeholders_are_documented_details() -> None:
    # Only these remedies take details; a placeholder anywhere else would raise KeyError when said.
    takes = {Remedy.RELABEL_TOKEN: {"example"}, Remedy.RESUME_OR_ABANDON: {"journal_id"}, Remedy.ASK_RESTORE: {"serial"}}
    for remedy, text in REMEDIES.items():
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        assert names == takes.get(remedy, set()), remedy


def _cli_options() -> set[str]:
    import typer

    from tokenissue.cli._app import app

    found: set[str] = set()

    def walk(command: object) -> None:
        for p in getattr(command, "params", []):
            found.update(o for o in getattr(p, "opts", []) if o.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    found -= {"--help", "--json"}  # "--json" is also JSON's name in prose; none is a remedy
    return found


def _message_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path`` that are not docstrings (messages, templates, f-string parts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    # Attribute docstrings (#: comments are not strings; a bare string after an assignment is).
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for a, b in itertools.pairwise(body):
                if isinstance(a, ast.AnnAssign | ast.Assign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                    docstrings.add(id(b.value))
    return [
        (n.lineno, n.value) for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]  # fmt: skip


def test_no_library_message_names_a_cli_option_or_command() -> None:
    options = _cli_options()
    pattern = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)|'tokenissue [a-z]")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for line, text in _message_strings(path):
            for m in pattern.finditer(text):
                if m.group(1) is None or m.group(1) in options:
                    found.append(f"{path.relative_to(PACKAGE)}:{line}: {m.group(0)}")
    assert not found, "\n".join(found)
