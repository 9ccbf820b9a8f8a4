"""CMS EnvelopedData for a password (protocols.cmp._envelope): how a holder's identity travels
inside a MAC-protected request. Checked against OpenSSL in both directions (``openssl cms
-encrypt/-decrypt -pwri_password``), and against what a peer could send instead."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pyasn1.codec.der import decoder, encoder
from pyasn1_alt_modules import rfc5652

from tokenissue.protocols.cmp import CMPError, SharedSecret, open_with_password, seal_with_password

CODE = "ABCDE-FGHJK-MNPQR-STVWX"
SECRET = SharedSecret.from_text(CODE)
PLAIN = b"0\x1f\x13\r8501011234567\x03\x15\x00" + bytes(range(20))


def _openssl(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, timeout=60, check=False)


def test_openssl_opens_what_we_seal() -> None:
    sealed = seal_with_password(PLAIN, SECRET)
    proc = _openssl("-decrypt", "-inform", "DER", "-pwri_password", CODE, data=sealed)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PLAIN
    wrong = _openssl("-decrypt", "-inform", "DER", "-pwri_password", "AAAAA-AAAAA-AAAAA-AAAAA", data=sealed)
    assert wrong.returncode != 0 and wrong.stdout == b""


@pytest.mark.parametrize("cipher", ["-aes256", "-aes128"])
def test_we_open_what_openssl_seals(cipher: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(PLAIN)
    proc = subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", cipher, "-pwri_password", CODE, "-in", str(plain), "-outform", "DER"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert open_with_password(proc.stdout, SECRET) == PLAIN


def test_each_seal_is_fresh_and_only_the_secret_opens_it() -> None:
    a, b = seal_with_password(PLAIN, SECRET), seal_with_password(PLAIN, SECRET)
    assert a != b and PLAIN not in a and b"8501011234567" not in a
    with pytest.raises(CMPError) as info:
        open_with_password(a, SharedSecret.from_text("AAAAA-AAAAA-AAAAA-AAAAA"))
    assert info.value.failure_info == "badMessageCheck"


def _tampered(der: bytes, change: str) -> bytes:
    info, _ = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    env, _ = decoder.decode(bytes(info["content"]), asn1Spec=rfc5652.EnvelopedData())
    pwri = env["recipientInfos"][0]["pwri"]
    if change == "iterations":
        from pyasn1_alt_modules import rfc8018

        kdf, _ = decoder.decode(bytes(pwri["keyDerivationAlgorithm"]["parameters"]), asn1Spec=rfc8018.PBKDF2_params())
        kdf["iterationCount"] = 10**9
        pwri["keyDerivationAlgorithm"]["parameters"] = encoder.encode(kdf)
    elif change == "content":
        content = bytearray(bytes(env["encryptedContentInfo"]["encryptedContent"]))
        content[-1] ^= 1
        env["encryptedContentInfo"]["encryptedContent"] = bytes(content)
    elif change == "two recipients":
        env["recipientInfos"].append(env["recipientInfos"][0])
    info["content"] = encoder.encode(env)
    return bytes(encoder.encode(info))


@pytest.mark.parametrize(
    ("change", "failure"),
    [("iterations", "badDataFormat"), ("content", "badMessageCheck"), ("two recipients", "badDataFormat")],
)
def test_what_a_peer_could_send_instead_is_refused(change: str, failure: str) -> None:
    with pytest.raises(CMPError) as info:
        open_with_password(_tampered(seal_with_password(PLAIN, SECRET), change), SECRET)
    assert info.value.failure_info == failure


@pytest.mark.parametrize("junk", [b"", b"\x30\x00", b"\x04\x03abc", seal_with_password(PLAIN, SECRET) + b"\x00"])
def test_junk_is_a_format_error(junk: bytes) -> None:
    with pytest.raises(CMPError) as info:
        open_with_password(junk, SECRET)
    assert info.value.failure_info == "badDataFormat"
