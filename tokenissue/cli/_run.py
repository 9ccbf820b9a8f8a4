"""Run the app and map every outcome to an exit status (see the README's exit codes)."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from ..errors import TokenIssueError

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Old option names that keep working but are no longer shown: one name per concept in --help
# and the docs (a CA is --ca everywhere, a renewal window --within), without breaking scripts.
HIDDEN_ALIASES: dict[str, tuple[str, ...]] = {"--ca": ("--ca-dir", "-d"), "--within": ("--expiring",)}


def run(args: list[str], *, debug: bool) -> int:
    from ._stderr import ModuleStderr

    # A server runs for days: what its modules print belongs in its log, not in a temporary file.
    serving = "serve" in args[:3]
    with ModuleStderr(enabled=not debug and not serving) as captured:
        code = _run(args, debug=debug)
        if code not in (EXIT_OK, EXIT_INTERRUPTED):
            n = len(captured.lines())
            if n:
                from ._common import err_console

                err_console().print(
                    f"(The PKCS#11 module also wrote {n} line(s) of its own to stderr; --debug shows them.)",
                    highlight=False, style="dim",
                )  # fmt: skip
        return code


def _run(args: list[str], *, debug: bool) -> int:
    # typer is pinned below 0.26, which uses click itself (not a vendored copy), so click's
    # exception classes are the ones raised. A test checks that a usage error exits 2.
    import typer

    from ._app import app
    from ._common import err_console

    command = typer.main.get_command(app)
    add_hidden_aliases(command)
    try:
        rv = command.main(args=args, prog_name="tokenissue", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except TokenIssueError as e:
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        from rich.markup import escape

        from ._messages import say

        err_console().print(f"[bold red]Error:[/] {escape(say(e))}", highlight=False)
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        err_console().print("Aborted.")
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE if isinstance(e, click.UsageError) else int(e.exit_code)
    except KeyboardInterrupt:
        err_console().print("Interrupted.")
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        else:
            err_console().print(
                f"[bold red]Unexpected error:[/] {type(e).__name__}. "
                "Rerun with --debug for details and report it if it persists.",
                highlight=False,
            )
        return EXIT_UNEXPECTED


def add_hidden_aliases(command: click.Command) -> None:
    """Let every option named in :data:`HIDDEN_ALIASES` also be spelt by its old names.

    The parser learns the old names; ``--help``, which reads ``opts``, keeps showing one.
    """
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_hidden_aliases(sub)
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        aliases = HIDDEN_ALIASES.get(param.opts[0])
        if aliases:
            param.add_to_parser = _also_parsed_as(param, aliases)  # type: ignore[method-assign]


def _also_parsed_as(option: click.Option, aliases: tuple[str, ...]) -> Any:
    shown_add = option.add_to_parser

    def add_to_parser(parser: Any, ctx: click.Context) -> None:
        shown = option.opts
        option.opts = [*shown, *aliases]
        try:
            shown_add(parser, ctx)
        finally:
            option.opts = shown

    return add_to_parser
