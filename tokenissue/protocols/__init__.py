"""Wire formats of the enrollment protocols, without transport and without tokens.

:mod:`tokenissue.protocols.cmp` encodes, parses, protects and verifies CMP messages
(RFC 4210, RFC 9480, the Lightweight CMP profile of RFC 9483). HTTP transport (RFC 6712), the
CA's decisions and the client's state machine live in the layers above. Private keys arrive as
cryptography key objects, which on a token sign inside it, so nothing here serialises one.
"""
