"""The command line: the only package that imports typer/rich, reads the environment or prompts.

:func:`main` is the console-script entry point. It answers ``--version`` before importing
anything heavy, runs the typer app without click's standalone handling, and turns every
:class:`~tokenissue.errors.TokenIssueError` into one sentence on stderr and its exit status.
Tracebacks appear only with ``--debug`` (or TOKENISSUE_DEBUG=1), and even then without local
variables, so a PIN in a frame cannot be printed.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]):
        from .. import __version__

        print(f"tokenissue {__version__}")
        return 0
    debug = "--debug" in args or os.environ.get("TOKENISSUE_DEBUG") == "1"
    from ._run import run

    code = run(args, debug=debug)
    # The interpreter's last garbage collection walks every object SQLAlchemy, cryptography
    # and typer created: ~120 ms of a ~500 ms command here (bench/README.md). Freezing them
    # skips that walk; objects are still released and files closed as usual.
    import gc

    gc.freeze()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
