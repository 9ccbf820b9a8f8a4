"""ACME pieces that need no server: the ARI certificate ID, location parsing, lazy imports."""

from __future__ import annotations

import datetime
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tokenissue.enroll.acme import renewal_info_id
from tokenissue.enroll.acme_options import directory_url, is_acme_location


def test_renewal_info_id_matches_rfc_9773_example() -> None:
    # RFC 9773 §4.1: AKI 69:88:5B:...:C8:D4 and serial 00:87:65:43:21 → "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(0x87654321).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier(bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    assert renewal_info_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_locations() -> None:
    assert is_acme_location("acme+https://127.0.0.1:14000/dir")
    assert is_acme_location("ACME+HTTPS://ca.example/directory")
    assert not is_acme_location("cmp+http://x/pkix/") and not is_acme_location("/var/lib/ca")
    assert directory_url("acme+https://ca.example/directory") == "https://ca.example/directory"


def test_local_and_cmp_commands_do_not_import_acme() -> None:
    code = (
        "import sys\nfrom tokenissue.enroll import open_enroller, is_acme_location\n"
        "import tokenissue.cli.lifecycle\n"
        "bad = [m for m in ('acme', 'josepy', 'requests') if m in sys.modules]\nassert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
