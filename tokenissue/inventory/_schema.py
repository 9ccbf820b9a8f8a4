"""The inventory's tables as SQLAlchemy Core objects.

This is what the store queries; ``migrations/versions`` is what creates it. The two are kept
equal by a test that compares the migrated database with this metadata.

Portability rules (SQLite now, PostgreSQL later): serial numbers are up to 160-bit integers,
which overflow BIGINT, so they are lowercase hex strings; DER is ``LargeBinary``; JSON is
text written by :func:`json.dumps` so both backends store the same bytes; datetimes are
:class:`~tokenissue.inventory._types.UTCDateTime`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from ._types import UTCDateTime

__all__ = [
    "audit",
    "certificates",
    "cmp_transactions",
    "counters",
    "journal",
    "metadata",
    "registrations",
    "settings",
]

# Named constraints make future migrations (and SQLite batch migrations) able to refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

certificates = Table(
    "certificates",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("profile", String(128), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revocation_reason", String(32), nullable=True),
    Column("token_serial", String(512), nullable=True),  # a token identity (serial or pkcs11: URI)
    Column("key_id", String(256), nullable=True),
    Column("label", Text, nullable=True),
    Column("request_id", String(128), nullable=True, unique=True),
    Column("replaces", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_token_serial", "token_serial"),
)

journal = Table(
    "journal",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("state", String(64), nullable=False),
    Column("params", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished", Boolean(create_constraint=False), nullable=False),
)

# The primary key on seq is what stops two writers from both appending entry N.
audit = Table(
    "audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("action", String(64), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

# Monotonic counters (the CRL number) live in their own integer table rather than in
# settings, so an increment is one UPDATE that the database serialises for us.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Registrations an RA officer made: one per identity checked out of band. The authorization
# code is not here in any form; it is derived from the RA key (a file in the CA directory),
# the ref and the nonce, so this table alone reveals no code.
registrations = Table(
    "registrations",
    metadata,
    Column("ref", String(32), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("profile", String(128), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("max_failures", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("serial", String(64), nullable=True),
    Column("san", Text, nullable=False),
    # The CMP transactionID (hex) that holds the registration while it issues: set by one
    # conditional UPDATE before issuing, so only that transaction can use the code.
    Column("reserved_tid", String(128), nullable=True),
    # Issue 13 (migration 0004): a keyed hash of the holder's registration number (never the
    # number), the identifyData realName, how identity was verified, the terms version
    # accepted, and the certificate a re-issue replaces (serial hex).
    Column("id_hash", String(64), nullable=True),
    Column("real_name", Text, nullable=True),
    Column("verified_by", Text, nullable=True),
    Column("terms_version", String(64), nullable=True),
    Column("reissue_of", String(64), nullable=True),
    Index("ix_registrations_status", "status"),
)

# Requests that wait for an officer's approval (a profile with approval = true; SCEP PENDING),
# shared by every replica: the client's poll may reach another one. Migration 0005.
pending_requests = Table(
    "pending_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("protocol", String(16), nullable=False),
    Column("transaction_id", String(128), nullable=False),
    Column("ref", String(32), nullable=False),
    # What issuing needs, never the CSR (its challengePassword is the code): the public key
    # (SPKI DER), the SANs asked for (DER of GeneralNames, empty for none) and the reservation ID.
    Column("public_key", LargeBinary, nullable=False),
    Column("sans", LargeBinary, nullable=False),
    Column("reservation", String(64), nullable=False),
    Column("requester", LargeBinary, nullable=False),
    Column("cipher", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decided_by", Text, nullable=True),
    Column("serial", String(64), nullable=True),
    Index("ix_pending_requests_transaction", "protocol", "transaction_id"),
    Index("ix_pending_requests_status", "status"),
)

# CMP transactions, so that any server replica can continue one another replica started.
# The primary key is what refuses a second transaction with the same transactionID.
cmp_transactions = Table(
    "cmp_transactions",
    metadata,
    Column("transaction_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("ref", String(32), nullable=True),
    Column("state", String(32), nullable=False),
    Column("sender_nonce", String(128), nullable=False),
    Column("our_nonce", String(128), nullable=False),
    Column("serial", String(64), nullable=True),
    Column("pbm", Boolean(create_constraint=False), nullable=False),
    # Serial (hex) of the certificate that signed a signature-protected request: a repeated
    # request must come from the same signer.
    Column("signer", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_cmp_transactions_ref", "ref"),
)
