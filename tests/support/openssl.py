"""The system's OpenSSL next to the test tokens (never through tokenissue): ``openssl`` itself,
whether it has the ``cmp`` command, and the pieces the TLS interop tests share: an environment
for openssl commands, libp11's engine configuration for keys on the SoftHSM token, and an
``openssl s_server`` on 127.0.0.1 started by a test and stopped by its PID."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.servers import free_port
from support.softhsm import SOFTHSM_MODULE, SoftHSM

#: OpenSSL's PKCS#11 engine (libengine-pkcs11-openssl), or None when it is not installed.
ENGINE_SO = next(
    (p for p in ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so", "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so")
     if Path(p).exists()),
    None,
)


def openssl(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the system openssl (never through tokenissue) and capture its text output."""
    return subprocess.run(
        ["openssl", *args], input=input.decode() if input else None, capture_output=True, text=True,
        timeout=120, check=False, env=env,
    )


def has_openssl_cmp() -> bool:
    """Whether the system openssl has the ``cmp`` command (OpenSSL 3.0 and later, unless left out)."""
    if shutil.which("openssl") is None:
        return False
    return subprocess.run(["openssl", "cmp", "-help"], capture_output=True, check=False).returncode in (0, 1)


def openssl_env(hsm: SoftHSM, **extra: str) -> dict[str, str]:
    """The environment for an openssl command next to ``hsm``. OPENSSL_CONF only for the command
    that uses the token key (pass it in ``extra``): with the engine loaded, OpenSSL cannot use
    file keys in the same command."""
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    env.update({"SOFTHSM2_CONF": str(hsm.conf), "LC_ALL": "C", **extra})
    return env


def engine_conf(path: Path) -> Path:
    """An OpenSSL configuration at ``path`` that loads libp11's engine for SoftHSM."""
    assert ENGINE_SO is not None
    path.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n"
        "[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {ENGINE_SO}\nMODULE_PATH = {SOFTHSM_MODULE}\ninit = 0\n"
    )
    return path


def pkcs11_id(hex_id: str) -> str:
    """A key ID in hex as a PKCS#11 URI's percent-encoded ``id``."""
    return "".join(f"%{hex_id[i:i + 2]}" for i in range(0, len(hex_id), 2))


@contextmanager
def s_server(args: list[str], env: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``openssl s_server -accept 127.0.0.1:PORT *args``, once it listens; killed by PID after."""
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        # Wait until it listens: s_server prints ACCEPT once the socket is bound. Read the raw
        # pipe (not the buffered text wrapper, which would swallow lines the selector then misses).
        assert server.stdout is not None
        fd = server.stdout.fileno()
        seen = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"ACCEPT\n" not in seen:
                if not sel.select(timeout=60):
                    pytest.fail(f"openssl s_server did not start: {seen.decode(errors='replace')}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    pytest.fail(f"openssl s_server exited {server.wait()}: {seen.decode(errors='replace')}")
                seen += chunk
        yield port, server
    finally:
        if server.poll() is None:
            os.kill(server.pid, 9)
        server.wait(timeout=30)
