"""CMP messages (RFC 4210, RFC 9480) for the Lightweight CMP profile (RFC 9483).

The pure message layer: decode and encode DER (``_der``), parse requests and responses into
frozen dataclasses (``_parse``), build every message a Lightweight CMP client or server sends
(``_build``), protect messages with a password-based MAC or a signature (``_protection``) and
verify that protection, proofs of possession and certConf hashes (``_verify``), and encrypt a
value for the MAC's shared secret (``_envelope``: CMS EnvelopedData with a password recipient,
as RFC 9483 §4.1.6.3 does). No transport (RFC 6712),
no CA policy, no state: a server and a client are built on top of this.

A client builds a request with the header fields it chooses in one :class:`MessageHeader`
(``build_ir(subject, None, key, header=MessageHeader(sender=..., recipient=...))``); a server
builds its answer from the request it answers. Typical server loop::

    msg = decode_message(body)                    # CMPError on bad DER, size, version
    req = parse_request(msg)                      # CMPError on malformed requests
    verify_protection(msg, secret=lookup(req.sender_kid))   # or trusted_signers=[...]
    ...                                           # the CA decides
    reply = protect_pbm(build_ip(req, cert, [root]), secret, sender_kid=ref)
    return encode_message(reply)

and on any :class:`CMPError` ``e``: ``build_error(req_or_None, e.failure_info, str(e))``.

Exceptions::

    Exception
    └── CMPError                         .failure_info: a PKIFailureInfo bit name
    ValueError                           a programming or configuration error of the caller's
                                         (a wrong bit name, a key that is not the certificate's)

The package stands alone, as certbot's ``acme`` does: it imports nothing else of tokenissue
(an import-linter contract keeps it so). Callers translate at their boundary: tokenissue's
CMP client turns a :class:`CMPError` that reaches its user into a
:class:`tokenissue.errors.RequestRejected`. pyasn1 and cryptography errors raised by hostile
input are translated into :class:`CMPError` at this package's boundary, the original chained
as ``__cause__``. Private keys are any cryptography private key objects (token adapters
included); only ``sign()`` and ``public_key()`` are called. Shared secrets are
:class:`SharedSecret` (or bytes), never logged; a text secret is
:meth:`SharedSecret.from_text`.
"""

from ._build import (
    MessageHeader,
    add_general_info,
    build_cert_conf,
    build_cp,
    build_cr,
    build_error,
    build_genm,
    build_genp,
    build_ip,
    build_ir,
    build_kup,
    build_kur,
    build_p10cr,
    build_pkiconf,
    build_rp,
    build_rr,
)
from ._crypto import cert_hash
from ._der import DEFAULT_MAX_MESSAGE_SIZE, decode_message, encode_message
from ._envelope import open_with_password, seal_with_password
from ._errors import FAILURE_INFO_NAMES, CMPError, FailureInfo, SharedSecret
from ._parse import (
    ID_IT_CA_CERTS,
    ID_IT_IMPLICIT_CONFIRM,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    CertConfirmation,
    CMPHeader,
    CMPRequest,
    CMPResponse,
    PKIStatus,
    RequestType,
    ResponseType,
    RevocationRequest,
    RootCaUpdate,
    StatusInfo,
    parse_header,
    parse_request,
    parse_response,
)
from ._protection import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    PBM_OID,
    PBMAC1_OID,
    mac_iterations,
    protect_pbm,
    protect_pbmac1,
    protect_signature,
    protected_part_der,
)
from ._verify import verify_cert_hash, verify_pop, verify_protection

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FAILURE_INFO_NAMES",
    "ID_IT_CA_CERTS",
    "ID_IT_IMPLICIT_CONFIRM",
    "ID_IT_ROOT_CA_CERT",
    "ID_IT_ROOT_CA_KEY_UPDATE",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "PBMAC1_OID",
    "PBM_OID",
    "CMPError",
    "CMPHeader",
    "CMPRequest",
    "CMPResponse",
    "CertConfirmation",
    "FailureInfo",
    "MessageHeader",
    "PKIStatus",
    "RequestType",
    "ResponseType",
    "RevocationRequest",
    "RootCaUpdate",
    "SharedSecret",
    "StatusInfo",
    "add_general_info",
    "build_cert_conf",
    "build_cp",
    "build_cr",
    "build_error",
    "build_genm",
    "build_genp",
    "build_ip",
    "build_ir",
    "build_kup",
    "build_kur",
    "build_p10cr",
    "build_pkiconf",
    "build_rp",
    "build_rr",
    "cert_hash",
    "decode_message",
    "encode_message",
    "mac_iterations",
    "open_with_password",
    "parse_header",
    "parse_request",
    "parse_response",
    "protect_pbm",
    "protect_pbmac1",
    "protect_signature",
    "protected_part_der",
    "seal_with_password",
    "verify_cert_hash",
    "verify_pop",
    "verify_protection",
]
