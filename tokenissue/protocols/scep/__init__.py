"""SCEP (RFC 8894) messages: parse a client's pkiMessage, make the CA's CertRep.

Transport (``/scep`` on ``ca serve``), the RA's key on a token and the CA's decisions live in
:mod:`tokenissue.server.scep_service`; nothing here imports the rest of tokenissue.
"""

from ._message import (
    CIPHERS,
    MAX_MESSAGE_SIZE,
    FailInfo,
    MessageType,
    PKIStatus,
    SCEPFailure,
    SCEPMalformed,
    SCEPRequest,
    cert_rep,
    degenerate_certificates,
    parse_request,
)

__all__ = [
    "CIPHERS",
    "MAX_MESSAGE_SIZE",
    "FailInfo",
    "MessageType",
    "PKIStatus",
    "SCEPFailure",
    "SCEPMalformed",
    "SCEPRequest",
    "cert_rep",
    "degenerate_certificates",
    "parse_request",
]
