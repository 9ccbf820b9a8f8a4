"""The local servers tests start (``ca serve``, Pebble, ``openssl s_server``): a free port on
127.0.0.1 to put them on, and stopping them by PID, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (another process may take it before the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[Any], *, grace: float) -> None:
    """SIGTERM ``proc`` by its PID, and SIGKILL it if it has not exited ``grace`` seconds later;
    nothing when it has exited already."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
