"""Typed configuration files (TOML) as frozen dataclasses.

Only files are read here: environment variables and prompts belong to the CLI.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import ConfigError, Remedy

__all__ = ["CA_CONFIG_NAME", "CAConfig", "write_private_file"]

CA_CONFIG_NAME = "ca.toml"


@dataclass(frozen=True)
class CAConfig:
    """``ca.toml`` in a CA directory: where the CA key is and how the CA behaves."""

    subject: str
    """The CA's subject, RFC 4514."""
    token: str | None = None
    """Selector of the token holding the CA key (``serial:XXXX`` is written at init)."""
    key: str | None = None
    """Selector of the CA key on that token (``id:HEX``)."""
    module: str | None = None
    """PKCS#11 module path; empty means the one given on the command line or found."""
    insecure_key_file: str | None = None
    """Only for throwaway CAs made with --insecure-file-key: PEM key file in the CA dir."""
    crl_url: str | None = None
    """Put into issued certificates as the CRL distribution point, when set."""
    crl_days: int = 7
    """How long a CRL is valid (nextUpdate - thisUpdate)."""
    database: str | None = None
    """Inventory URL; default: SQLite file ca.db in the CA directory."""
    ocsp_url: str | None = None
    """Put into issued certificates as the OCSP responder's address (authorityInfoAccess), when set."""
    ocsp_key: str | None = None
    """Selector of the OCSP signer's key (``id:HEX``), written by ``ca ocsp-signer``."""
    ocsp_token: str | None = None
    """The token of the OCSP signer's key when it is not the CA's token."""
    scep_key: str | None = None
    """Selector of the SCEP RA's key (``id:HEX``, RSA, decrypts), written by ``ca scep-ra``."""
    scep_token: str | None = None
    """The token of the SCEP RA's key when it is not the CA's token."""
    scep_single_des: bool = False
    """Accept SCEP requests encrypted with single DES (56-bit keys: micromdm's scepclient up to
    2.1 sends nothing else). Off by default: anyone who records the request can read its
    challenge password."""

    @classmethod
    def load(cls, ca_dir: Path) -> CAConfig:
        path = ca_dir / CA_CONFIG_NAME
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if re.match(r"^[a-z][a-z0-9+.-]*:/", str(ca_dir)):  # a URL, its '//' folded by Path
                raise ConfigError(f"'{ca_dir}' looks like a CA server's address.", remedy=Remedy.CA_DIRECTORY) from None
            raise ConfigError(
                f"'{ca_dir}' is not a CA directory (no {CA_CONFIG_NAME}).", remedy=Remedy.CREATE_CA
            ) from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"Cannot read {path}: {e}.") from None
        section = raw.get("ca")
        if not isinstance(section, dict):
            raise ConfigError(f"{path} has no [ca] table.")
        known = {f.name for f in fields(cls)}
        unknown = set(section) - known
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}.")
        for f in fields(cls):
            if f.name in section:
                want = {"crl_days": int, "scep_single_des": bool}.get(f.name, str)
                value = section[f.name]
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    raise ConfigError(f"{path}: '{f.name}' must be a {want.__name__}, not {value!r}.")
        if "subject" not in section:
            raise ConfigError(f"{path}: the [ca] table needs 'subject'.")
        if not 1 <= section.get("crl_days", 7) <= 3650:
            raise ConfigError(f"{path}: 'crl_days' must be between 1 and 3650.")
        return cls(**section)

    def save(self, ca_dir: Path) -> None:
        lines = ["# tokenissue CA configuration", "[ca]"]
        for k, v in asdict(self).items():
            if v is None or (k == "scep_single_des" and v is False):
                continue
            lines.append(f"{k} = {json.dumps(v, ensure_ascii=False)}")
        write_private_file(ca_dir / CA_CONFIG_NAME, ("\n".join(lines) + "\n").encode("utf-8"))


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
