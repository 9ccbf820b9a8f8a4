"""``tokenissue ca serve`` refuses bad start-up input with one sentence and the right exit
status, before it listens anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.lifecycle import TokenCA, make_token_ca
from support.softhsm import SoftHSM


@pytest.fixture
def token_ca(softhsm: SoftHSM) -> TokenCA:
    return make_token_ca(softhsm)


@pytest.mark.parametrize("listen", ["8080", ":8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "[]:80"])
def test_listen_needs_host_and_port(token_ca: TokenCA, listen: str) -> None:
    proc = token_ca.run("ca", "serve", "--ca-dir", str(token_ca.dir), "--listen", listen)
    assert proc.returncode == 2, proc.stderr
    assert "explicit host" in proc.stderr
    assert "Serving CMP" not in proc.stderr


def test_wrong_ca_pin_stops_before_serving(token_ca: TokenCA) -> None:
    proc = token_ca.run("ca", "serve", "--ca-dir", str(token_ca.dir), "--listen", "127.0.0.1:1",
                        env={"TOKENISSUE_CA_PIN": "999999"})  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert "Serving CMP" not in proc.stderr
    assert "999999" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_tls_needs_both_files(token_ca: TokenCA) -> None:
    proc = token_ca.run("ca", "serve", "--ca-dir", str(token_ca.dir), "--listen", "127.0.0.1:1",
                        "--tls-cert", str(token_ca.pem))  # fmt: skip
    assert proc.returncode == 2 and "--tls-key" in proc.stderr


def test_a_tls_key_that_is_not_the_certificates_or_is_readable_is_refused_before_serving(
    token_ca: TokenCA, tmp_path: Path
) -> None:
    from support.tls import server_tls_files

    cert, key = server_tls_files(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_key = server_tls_files(other_dir)
    mismatch = token_ca.run("ca", "serve", "--ca-dir", str(token_ca.dir), "--listen", "127.0.0.1:1",
                            "--tls-cert", str(cert), "--tls-key", str(other_key))  # fmt: skip
    assert mismatch.returncode == 2 and "is not the key of --tls-cert" in mismatch.stderr, mismatch.stderr
    assert "Serving" not in mismatch.stderr
    key.chmod(0o644)
    loose = token_ca.run("ca", "serve", "--ca-dir", str(token_ca.dir), "--listen", "127.0.0.1:1",
                         "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
    assert loose.returncode == 2 and "chmod 600" in loose.stderr, loose.stderr
