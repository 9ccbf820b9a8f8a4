"""A worker process of ``tokenissue batch enroll --jobs N`` (see tokenissue/fleet/parallel.py).

Reads its setup (state database, CA, module, PINs and authorization codes) as the first JSON
line on standard input, then one group of rows per line, and writes one JSON result per row
on standard output. Messages for the user go to standard error, which it shares with the
parent. Not meant to be run by hand.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..credentials import PROTECTED_AUTH, Pin, Secret
from ..errors import TokenIssueError


def main() -> int:
    try:
        return _serve()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The parent is gone (killed): nobody reads the results. The row that was running is
        # journaled; stop quietly, with nothing left to flush into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except TokenIssueError as e:
        print(f"tokenissue batch worker: {e.message}", file=sys.stderr)
        return e.exit_code


def _serve() -> int:
    from ..enroll import open_enroller
    from ..fleet.batch import RowResult, run_batch
    from ..fleet.parallel import worker_rows
    from ..inventory import Inventory
    from ._enrolling import Enrollers, ServerArgs, step_hook

    setup: dict[str, Any] = json.loads(sys.stdin.readline() or "{}")
    pin = PROTECTED_AUTH if setup.get("protected_auth") else (Pin(setup["pin"]) if setup.get("pin") is not None else None)
    ca_pin = Pin(setup["ca_pin"]) if setup.get("ca_pin") is not None else None
    codes = {ref: Secret(code) for ref, code in (setup.get("codes") or {}).items()}
    trust = Path(setup["trust_file"]) if setup.get("trust_file") else None
    module: str | None = setup.get("module")
    location: str = setup["ca"]
    state_path = Path(setup["state"])
    setup.clear()

    def opener(cmp: ServerArgs | None) -> Any:
        if cmp is None:
            return open_enroller(location, ca_pin=ca_pin, module=module)
        return open_enroller(location, ref=cmp.ref, auth_code=cmp.auth_code, trust=cmp.trust())

    def emit(result: RowResult) -> None:
        sys.stdout.write(json.dumps(result.to_wire(), ensure_ascii=False) + "\n")
        sys.stdout.flush()

    hook = step_hook()
    with Inventory.open(state_path) as db, Enrollers(opener, codes, trust) as enrollers:
        for line in sys.stdin:
            if not line.strip():
                continue
            group = worker_rows(json.loads(line))
            run_batch(
                [row for row, _ in group], pin=pin, enroller_for=enrollers.get, holder=db, module=module,
                on_result=emit, on_step=hook, present={row.token: serial for row, serial in group if serial},
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
