"""The certificate authority: a CA directory, its key on a token, its inventory and profiles.

A CA directory holds::

    ca.toml        CAConfig: token and key selectors, CRL settings
    ca.pem         the CA certificate (chain.pem: its issuers, for an intermediate)
    ca.db          the inventory (SQLite, mode 0600) unless ca.toml names a database
    profiles.toml  optional: extra or overriding certificate profiles
    crl.pem        the latest CRL

Every action that changes what the CA vouches for (init, issue, revoke, suspend, restore, CRL)
is appended to the inventory's hash-chained audit log; an issuance, a revocation, a suspension
and a restoration are written in the same database transaction as their audit entry, so none
is ever on record without it.

Issuance is idempotent per ``request_id``: an enrollment that died after the CA signed asks
again with the same ID and receives the same certificate, so a certificate is never issued
twice for one request.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..config import CAConfig, write_private_file
from ..credentials import IdentityProof, Pin, ProtectedAuth
from ..errors import CAUnavailable, NotFound, Remedy, RequestRejected, UsageError
from ..inventory import DuplicateRequest, Inventory
from ..models import CertRecord, CertStatus, KeyType, RevocationReason
from ..p11 import KeySelector, TokenSelector, open_token
from ..pkix.certs import (
    cert_record,
    dump_certificates,
    issue_certificate,
    load_certificates,
    random_serial,
    self_signed_ca,
)
from ..pkix.crl import build_crl
from ..pkix.csr import verify_csr
from ..pkix.kr_vid import identify_data, identify_data_of, vid_digest
from ..pkix.names import parse_subject, sans_of
from ..publickeys import same_public_key
from .profiles import Profile, check_request, eku_for, get_profile, key_usage_for, load_profiles

__all__ = ["CertificateAuthority", "Issued"]

CERT_FILE, CHAIN_FILE, DB_FILE, CRL_FILE, PROFILES_FILE, CSR_FILE = (
    "ca.pem",
    "chain.pem",
    "ca.db",
    "crl.pem",
    "profiles.toml",
    "ca.csr",
)
# Certificates start a few minutes in the past so a relying party with a slow clock accepts them.
_BACKDATE = timedelta(minutes=5)


def _real_name(subject: x509.Name) -> str:
    """The holder's name as identifyData carries it: the CN, without the "()NUMBER" by which
    Korean CAs tell namesakes apart (CN=홍길동()0012345678901234)."""
    cns = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    return cn.split("()", 1)[0].strip()


@dataclass(frozen=True)
class Issued:
    """What the CA hands back: the certificate, its record, and the chain up to the root."""

    certificate: x509.Certificate
    record: CertRecord
    chain: list[x509.Certificate]


class CertificateAuthority:
    """A CA directory opened for use. Open with :meth:`open`, create with :meth:`init`."""

    def __init__(self, ca_dir: Path, config: CAConfig, inventory: Inventory, *, module: str | None = None) -> None:
        self.dir = ca_dir
        self.config = config
        self.inventory = inventory
        self.module = config.module or module
        self._profiles: dict[str, Profile] | None = None
        #: Set by :meth:`init` when the token made the new CA key able to decrypt (also audited).
        self.key_can_decrypt = False

    # -- opening and creating ----------------------------------------------------------------
    @classmethod
    def open(cls, ca_dir: Path, *, module: str | None = None) -> CertificateAuthority:
        config = CAConfig.load(ca_dir)
        inv = Inventory.open(config.database or ca_dir / DB_FILE)
        return cls(ca_dir, config, inv, module=module)

    def close(self) -> None:
        self.inventory.close()

    def __enter__(self) -> CertificateAuthority:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def init(
        cls,
        ca_dir: Path,
        *,
        subject: str,
        days: int,
        pin: Pin | ProtectedAuth | None,
        token: str | None,
        key_type: KeyType = KeyType.EC_P256,
        label: str = "tokenissue-ca",
        module: str | None = None,
        crl_url: str | None = None,
        csr_out: bool = False,
        insecure_file_key: bool = False,
        database: str | None = None,
        require_sign_only: bool = False,
    ) -> CertificateAuthority:
        """Create a CA: key on the token (or, explicitly insecure, in a file), then a self-signed
        root, or a CSR for a parent CA when ``csr_out`` (finish with :meth:`install_certificate`)."""
        name = parse_subject(subject)
        if (ca_dir / "ca.toml").exists():
            raise UsageError(f"'{ca_dir}' is a CA directory already; choose an empty directory.")
        if days <= 0:
            raise UsageError(f"The CA certificate's validity must be at least one day, not {days}.")
        ca_dir.mkdir(parents=True, exist_ok=True)
        ca_dir.chmod(0o700)
        if database is not None:
            # Reach the database before a key is made: a wrong URL must not leave a CA key behind.
            with Inventory.open(database) as inv:
                if inv.certificate_count() or inv.get_setting("ra.key_id") is not None or inv.audit_entries():
                    raise UsageError(
                        "That database already holds a CA's inventory; give each CA a database of its own "
                        "(replicas of one CA share it by copying its CA directory, not by 'ca init')."
                    )
        key_can_decrypt = False
        if insecure_file_key:
            from cryptography.hazmat.primitives.asymmetric import ec

            key: Any = ec.generate_private_key(ec.SECP256R1() if key_type is not KeyType.EC_P384 else ec.SECP384R1())
            write_private_file(
                ca_dir / "ca-key.pem",
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
            config = CAConfig(subject=subject, insecure_key_file="ca-key.pem", crl_url=crl_url, database=database)
            cert_or_csr = cls._make_root_or_csr(key, name, days, csr_out)
        else:
            if token is None:
                raise UsageError("The CA key needs a token to be generated on.", remedy=Remedy.NAME_CA_TOKEN)
            with open_token(TokenSelector.parse(token), pin, module=module) as s:
                info = s.generate_key(key_type, label, require_sign_only=require_sign_only)
                key_can_decrypt = info.can_decrypt
                config = CAConfig(
                    subject=subject,
                    # Its serial where that names it; else its identity URI (serials repeat on TPMs).
                    token=f"serial:{s.info.serial}" if s.info.name == s.info.serial else s.info.name,
                    key=f"id:{info.id.hex()}",
                    module=module,
                    crl_url=crl_url,
                    database=database,
                )
                try:
                    cert_or_csr = cls._make_root_or_csr(s.private_key(KeySelector(id=info.id)), name, days, csr_out)
                except BaseException:
                    # No CA came of it: do not leave its key behind to block the next attempt.
                    s.delete_key(KeySelector(id=info.id))
                    raise
        pem = cert_or_csr.public_bytes(serialization.Encoding.PEM)
        (ca_dir / (CSR_FILE if csr_out else CERT_FILE)).write_bytes(pem)
        config.save(ca_dir)
        ca = cls.open(ca_dir, module=module)
        ca.key_can_decrypt = key_can_decrypt
        ca.inventory.audit_append(
            "ca-init",
            {"subject": subject, "key_type": key_type.value, "on_token": not insecure_file_key, "csr": csr_out,
             "key_can_decrypt": key_can_decrypt},
        )
        return ca

    @staticmethod
    def _make_root_or_csr(key: Any, name: x509.Name, days: int, csr_out: bool) -> Any:
        if csr_out:
            from ..pkix.csr import build_csr

            return build_csr(key, name)
        return self_signed_ca(key, name, days)

    def install_certificate(self, cert_data: bytes, chain_data: bytes | None = None) -> x509.Certificate:
        """Install the certificate a parent CA issued for our CSR (intermediate CA).

        Everything is checked before anything is written: the certificate must be for the
        pending CSR's key, be a CA certificate allowed to sign certificates, and chain to a
        self-signed root through the certificates given — otherwise every enrollment would
        later stall after issuance on a chain the holder cannot verify.
        """
        from ..pkix.certs import verify_chain
        from ..pkix.csr import load_csr

        csr_path = self.dir / CSR_FILE
        if not csr_path.exists():
            raise UsageError("This CA is not waiting for a certificate (it has no pending ca.csr).")
        certs = load_certificates(cert_data)
        cert = certs[0]
        chain = certs[1:] + (load_certificates(chain_data) if chain_data else [])
        if not same_public_key(load_csr(csr_path.read_bytes()).public_key(), cert.public_key()):
            raise RequestRejected("That certificate is not for this CA's key.")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise RequestRejected("That certificate has no basicConstraints; it cannot be a CA.") from None
        if not bc.ca:
            raise RequestRejected("That certificate is not a CA certificate (basicConstraints CA:FALSE).")
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            if not ku.key_cert_sign:
                raise RequestRejected("That CA certificate does not allow signing certificates (keyCertSign).")
        except x509.ExtensionNotFound:
            pass
        if not chain:
            raise RequestRejected(
                "The parent CA's chain up to its root is missing; holders need it to verify certificates.",
                remedy=Remedy.GIVE_CHAIN,
            )
        verify_chain(cert, chain)
        (self.dir / CHAIN_FILE).write_bytes(dump_certificates(chain, "pem"))
        (self.dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        csr_path.unlink(missing_ok=True)
        self.inventory.audit_append("ca-install-cert", {"subject": cert.subject.rfc4514_string()})
        return cert

    # -- what the CA is ----------------------------------------------------------------------
    @property
    def certificate(self) -> x509.Certificate:
        path = self.dir / CERT_FILE
        if not path.exists():
            if (self.dir / CSR_FILE).exists():
                raise CAUnavailable("This CA waits for its certificate.", remedy=Remedy.INSTALL_CA_CERT)
            raise CAUnavailable(f"The CA certificate {path} is missing.")
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            raise CAUnavailable(f"The CA certificate {path} is damaged; restore it from a backup.") from None

    def chain(self) -> list[x509.Certificate]:
        """The CA certificate followed by its issuers (empty tail for a root)."""
        extra = self.dir / CHAIN_FILE
        return [self.certificate] + (load_certificates(extra.read_bytes()) if extra.exists() else [])

    @property
    def profiles(self) -> dict[str, Profile]:
        if self._profiles is None:
            extra = self.dir / PROFILES_FILE
            self._profiles = load_profiles(extra if extra.exists() else None)
        return self._profiles

    def profile(self, name: str) -> Profile:
        return get_profile(self.profiles, name)

    @contextmanager
    def signing_key(self, pin: Pin | ProtectedAuth | None) -> Iterator[Any]:
        """The CA key as a cryptography private key (signing happens on the CA token)."""
        if self.config.insecure_key_file:
            data = (self.dir / self.config.insecure_key_file).read_bytes()
            yield serialization.load_pem_private_key(data, password=None)
            return
        if self.config.token is None or self.config.key is None:
            raise CAUnavailable(f"{self.dir / 'ca.toml'} names no CA token and key.")
        with open_token(TokenSelector.parse(self.config.token), pin, module=self.module) as s:
            yield s.private_key(KeySelector.parse(self.config.key))

    @property
    def needs_pin(self) -> bool:
        return self.config.insecure_key_file is None

    def _check_usable(self, now: datetime) -> x509.Certificate:
        cert = self.certificate
        if now > cert.not_valid_after_utc:
            raise CAUnavailable(
                f"The CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                "renew the CA before issuing or publishing CRLs."
            )
        if now < cert.not_valid_before_utc - _BACKDATE:
            raise CAUnavailable("The CA certificate is not valid yet; check the clock.")
        return cert

    # -- issuing -----------------------------------------------------------------------------
    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        profile_name: str,
        *,
        pin: Pin | ProtectedAuth | None,
        request_id: str | None = None,
        subject: x509.Name | None = None,
        token_serial: str | None = None,
        key_id: bytes | None = None,
        label: str | None = None,
        replaces: int | None = None,
        ca_key: Any = None,
        identity: IdentityProof | None = None,
        real_name: str | None = None,
        reissue_of: int | None = None,
    ) -> Issued:
        """Check ``csr`` against the profile and issue, or return the earlier answer to ``request_id``.

        ``subject`` overrides the CSR's subject (a registration fixes it: the requester cannot
        widen it). Nothing is recorded unless the certificate is issued. ``ca_key``: see
        :meth:`issue`.
        """
        if request_id is not None:
            earlier = self._earlier_answer(request_id, csr.public_key())
            if earlier is not None:
                return earlier
        verify_csr(csr)
        try:
            san = sans_of(csr)
        except ValueError:
            # A duplicated or malformed extension: cryptography refuses to read the list.
            raise RequestRejected("The CSR's extensions cannot be read; make a new request.") from None
        if subject is None:
            with warnings.catch_warnings():
                # cryptography warns as it reads a CN or C beyond its bounds; check_request
                # (check_names) refuses those with a sentence of its own.
                warnings.simplefilter("ignore", UserWarning)
                subject = csr.subject
        return self.issue(
            csr.public_key(),
            profile_name,
            subject=subject,
            san=san,
            pin=pin,
            request_id=request_id,
            token_serial=token_serial,
            key_id=key_id,
            label=label,
            replaces=replaces,
            ca_key=ca_key,
            earlier_checked=True,
            identity=identity,
            real_name=real_name,
            reissue_of=reissue_of,
        )

    def _earlier_answer(self, request_id: str, public_key: Any) -> Issued | None:
        earlier = self.inventory.find_by_request(request_id)
        if earlier is None:
            return None
        cert = x509.load_der_x509_certificate(earlier.der)
        if not same_public_key(cert.public_key(), public_key):
            raise RequestRejected(f"Request {request_id} was already answered for another key.")
        return Issued(cert, earlier, self.chain())

    def issue(
        self,
        public_key: Any,
        profile_name: str,
        *,
        subject: x509.Name,
        san: list[x509.GeneralName],
        pin: Pin | ProtectedAuth | None,
        request_id: str | None = None,
        token_serial: str | None = None,
        key_id: bytes | None = None,
        label: str | None = None,
        replaces: int | None = None,
        ca_key: Any = None,
        earlier_checked: bool = False,
        identity: IdentityProof | None = None,
        real_name: str | None = None,
        reissue_of: int | None = None,
    ) -> Issued:
        """Issue a certificate for ``public_key`` whose possession the caller has checked.

        :meth:`sign` checks a CSR's self-signature and calls this; a CMP server checks the
        CRMF proof of possession (which has no CSR) and calls it directly. ``ca_key`` is a CA
        signing key the caller already holds open (from :meth:`signing_key`), so a server
        logs in to the CA token once rather than per request, or a function returning one,
        called only when a signature is needed; ``None`` opens it with ``pin``.
        ``earlier_checked``: the caller (:meth:`sign`) has already looked for an earlier answer
        to ``request_id`` and found none.

        A profile with ``identify_data`` binds the holder's identity: with ``identity`` (the
        registration number and R) the certificate gets identifyData with ``real_name`` (by
        default the subject's CN up to a "()") and the VID; both values are forgotten here.
        Without it, a renewal (``replaces``) carries the replaced certificate's identifyData
        over (the holder keeps R with the new key); anything else is refused.

        ``reissue_of``: the new certificate re-issues that valid certificate of this CA (a
        registration's): it keeps its notAfter if the profile has ``keep_term_on_reissue``,
        and the old one is revoked as superseded in the transaction that records the new one
        (:meth:`Inventory.add_superseding`), so exactly one of them is valid at any moment.
        """
        if request_id is not None and not earlier_checked:
            earlier = self._earlier_answer(request_id, public_key)
            if earlier is not None:
                return earlier
        profile = self.profile(profile_name)
        now = datetime.now(UTC)
        ca_cert = self._check_usable(now)
        name = subject
        check_request(profile, subject=name, san=san, public_key=public_key)
        if profile.ca:
            bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.path_length is not None and (bc.path_length == 0 or (profile.path_length or 0) >= bc.path_length):
                raise RequestRejected(
                    f"This CA's certificate allows {'no CA' if bc.path_length == 0 else f'at most {bc.path_length} CA level(s)'} "
                    f"below it (pathLenConstraint {bc.path_length}), so it cannot issue under profile '{profile.name}'."
                )
        san = san + self._identify(profile, subject, identity, real_name, replaces)
        not_before = now - _BACKDATE
        not_after = min(self._term(profile, reissue_of, now), ca_cert.not_valid_after_utc)
        serial = random_serial()
        while self.inventory.serial_exists(serial):  # 2**-64 odds, but cheap to rule out
            serial = random_serial()
        with self._key(pin, ca_key) as key:
            cert = issue_certificate(
                key,
                ca_cert,
                public_key=public_key,
                subject=name,
                san=san,
                serial=serial,
                not_before=not_before,
                not_after=not_after,
                key_usage=key_usage_for(profile, public_key),
                extended_key_usage=eku_for(profile),
                policies=profile.policies,
                crl_url=self.config.crl_url,
                ocsp_url=self.config.ocsp_url,
                is_ca=profile.ca,
                path_length=profile.path_length,
                cps_uri=profile.cps_uri,
                user_notice=profile.user_notice,
            )
        record = cert_record(
            cert, profile=profile.name, token_serial=token_serial, key_id=key_id, label=label,
            request_id=request_id, replaces=replaces,
        )  # fmt: skip
        # The chain is read before anything is recorded: a broken chain file must fail the
        # request, not strand a recorded certificate that was never handed out.
        chain = self.chain()
        audit = (
            "issue",
            {
                "serial": format(record.serial, "x"),
                "subject": record.subject,
                "profile": record.profile,
                "sha256": record.sha256,
                "request_id": request_id,
                "replaces": format(replaces, "x") if replaces else None,
            },
        )
        try:
            if reissue_of is None:
                self.inventory.add_certificate(record, audit=audit)
            else:
                audit[1]["reissue_of"] = format(reissue_of, "x")
                revoked = ("revoke", {"serial": format(reissue_of, "x"), "reason": RevocationReason.SUPERSEDED.value,
                                      "superseded_by": format(record.serial, "x")})  # fmt: skip
                self.inventory.add_superseding(record, reissue_of, now, audit=audit, revoke_audit=revoked)
        except DuplicateRequest:
            # Another process answered the same request meanwhile: hand out its certificate,
            # and let ours (never recorded, never delivered) go.
            answered = self.inventory.find_by_request(request_id or "")
            if answered is None:
                raise
            return Issued(x509.load_der_x509_certificate(answered.der), answered, chain)
        return Issued(cert, record, chain)

    def _term(self, profile: Profile, reissue_of: int | None, now: datetime) -> datetime:
        """The new certificate's notAfter: a term of the profile's days, or for a re-issue under
        ``keep_term_on_reissue`` the replaced certificate's (which must still be valid, or
        suspended: a lost token's certificate on hold)."""
        if reissue_of is None:
            return now + timedelta(days=profile.days)
        old = self.inventory.get_certificate(reissue_of)
        if old is None or old.status not in (CertStatus.VALID, CertStatus.SUSPENDED) or old.not_after <= now:
            raise RequestRejected(
                f"Certificate {reissue_of:x}, which this one was to replace, is no longer valid; nothing was issued."
            )
        if not profile.keep_term_on_reissue:
            return now + timedelta(days=profile.days)
        return x509.load_der_x509_certificate(old.der).not_valid_after_utc

    def _identify(
        self,
        profile: Profile,
        subject: x509.Name,
        identity: IdentityProof | None,
        real_name: str | None,
        replaces: int | None,
    ) -> list[x509.GeneralName]:
        """The identifyData entry a profile with ``identify_data`` adds to subjectAltName."""
        if not profile.identify_data:
            return []
        if identity is None:
            earlier = None if replaces is None else self.inventory.get_certificate(replaces)
            data = None if earlier is None else identify_data_of(x509.load_der_x509_certificate(earlier.der))
            if data is None or data.virtual_id is None or data.hash_name is None:
                raise RequestRejected(
                    f"Profile '{profile.name}' binds the holder's registration number into the certificate, "
                    "and none was given.",
                    remedy=Remedy.GIVE_ID_NUMBER,
                )
            return [identify_data(data.real_name, data.virtual_id, data.hash_name)]
        name = real_name or _real_name(subject)
        if not name:
            raise RequestRejected(f"Profile '{profile.name}' needs the holder's real name (the subject's CN).")
        return [identify_data(name, vid_digest(identity.number.reveal(), identity.random))]

    @contextmanager
    def _key(self, pin: Pin | ProtectedAuth | None, ca_key: Any) -> Iterator[Any]:
        if ca_key is not None:
            yield ca_key() if callable(ca_key) else ca_key
            return
        with self.signing_key(pin) as key:
            yield key

    # -- revocation --------------------------------------------------------------------------
    def revoke(self, serial: int, reason: RevocationReason = RevocationReason.UNSPECIFIED) -> list[CertRecord]:
        """Revoke the certificate ``serial``; for key compromise, every certificate of its key.

        Returns the certificate ``serial`` first (unchanged if it was revoked before), then, for
        :attr:`RevocationReason.KEY_COMPROMISE` only, every other certificate of the same public
        key this CA issued that was still valid and unexpired: a same-key renewal leaves its
        predecessor valid, and a compromised key must not keep a certificate. All of them are
        revoked in one transaction, each with its own audit entry (``same_key_as`` names the
        certificate the revocation was asked for). Asked again, a key compromise revokes what
        is left of the key's certificates. Any other reason revokes just the one.

        :attr:`RevocationReason.CERTIFICATE_HOLD` suspends instead (:meth:`suspend`): a hold
        can be taken back. Any other reason revokes a suspended certificate for good.
        """
        rec = self.inventory.get_certificate(serial)
        if rec is None:
            raise NotFound(f"This CA issued no certificate with serial {serial:x}.")
        if reason is RevocationReason.CERTIFICATE_HOLD:
            if rec.status is CertStatus.REVOKED:
                return [rec]  # revoked for good before: a hold asks for less, and it is done
            return [self.suspend(serial)[0]]
        now = datetime.now(UTC)
        if reason is RevocationReason.KEY_COMPROMISE:

            def audit(r: CertRecord) -> tuple[str, dict[str, object]]:
                details: dict[str, object] = {"serial": format(r.serial, "x"), "reason": reason.value}
                if r.serial != serial:
                    details["same_key_as"] = format(serial, "x")
                return "revoke", details

            return self.inventory.revoke_key(serial, reason, now, audit=audit)
        if rec.status is CertStatus.REVOKED:
            return [rec]
        return [
            self.inventory.revoke(
                serial, reason, now, audit=("revoke", {"serial": format(serial, "x"), "reason": reason.value})
            )
        ]

    def suspend(self, serial: int) -> tuple[CertRecord, bool]:
        """Suspend the certificate ``serial`` (reason certificateHold) until :meth:`restore` or a
        revocation; returns it and whether it was suspended now (False: it was already).

        The next CRL lists it with reason certificateHold and the time of the suspension.
        Refused (CertificateStateRefused) for a revoked or expired certificate.
        """
        if self.inventory.get_certificate(serial) is None:
            raise NotFound(f"This CA issued no certificate with serial {serial:x}.")
        return self.inventory.suspend(
            serial,
            datetime.now(UTC),
            audit=("suspend", {"serial": format(serial, "x"), "reason": RevocationReason.CERTIFICATE_HOLD.value}),
        )

    def restore(self, serial: int) -> CertRecord:
        """Take the suspension of ``serial`` back: valid again, and not on the next CRL (no delta
        CRLs are issued, so no removeFromCRL entry is needed). Only the CA restores: a holder
        cannot (a CMP rr with removeFromCRL is refused). Refused (CertificateStateRefused) for a
        certificate that is not suspended."""
        if self.inventory.get_certificate(serial) is None:
            raise NotFound(f"This CA issued no certificate with serial {serial:x}.")
        return self.inventory.restore(serial, audit=("restore", {"serial": format(serial, "x")}))

    def revoke_token(self, token_serial: str, reason: RevocationReason) -> list[CertRecord]:
        """Revoke every valid (or suspended) certificate whose key is on the token ``token_serial``
        (a lost token), and for key compromise every other certificate of those keys (see
        :meth:`revoke`); certificateHold suspends the valid ones instead."""
        out: dict[int, CertRecord] = {}
        statuses = [CertStatus.VALID] if reason is RevocationReason.CERTIFICATE_HOLD else [
            CertStatus.VALID, CertStatus.SUSPENDED
        ]  # fmt: skip
        recs = [r for st in statuses for r in self.inventory.list_certificates(status=st, token_serial=token_serial)]
        for rec in sorted(recs, key=lambda r: (r.not_before, r.serial)):
            if rec.serial not in out:
                out.update((r.serial, r) for r in self.revoke(rec.serial, reason))
        return list(out.values())

    def crl(self, pin: Pin | ProtectedAuth | None) -> x509.CertificateRevocationList:
        """Sign a new CRL over every revoked and every suspended certificate (reason
        certificateHold, dated from the suspension) and publish it as crl.pem. A restored
        certificate is valid again and not listed."""
        now = datetime.now(UTC)
        ca_cert = self._check_usable(now)
        listed = [
            *self.inventory.list_certificates(status=CertStatus.REVOKED),
            *self.inventory.list_certificates(status=CertStatus.SUSPENDED),
        ]
        revoked = [
            (r.serial, r.revoked_at or now, r.revocation_reason or RevocationReason.UNSPECIFIED)
            for r in sorted(listed, key=lambda r: (r.not_before, r.serial))
        ]
        with self.signing_key(pin) as ca_key:
            number = self.inventory.next_crl_number()
            crl = build_crl(
                ca_key,
                ca_cert,
                revoked,
                number=number,
                this_update=now - _BACKDATE,
                next_update=now + timedelta(days=self.config.crl_days),
            )
        write_private_file(self.dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))
        with suppress(OSError):
            (self.dir / CRL_FILE).chmod(0o644)  # a CRL is public
        held = sum(1 for r in listed if r.status is CertStatus.SUSPENDED)
        self.inventory.audit_append("crl", {"number": number, "revoked": len(revoked) - held, "suspended": held})
        return crl

    def list(self, *, expiring_within: timedelta | None = None, status: CertStatus | None = None) -> list[CertRecord]:
        before = datetime.now(UTC) + expiring_within if expiring_within is not None else None
        return self.inventory.list_certificates(status=status, expiring_before=before)


