"""The CA as a network service: an ASGI app speaking CMP over HTTP (RFC 6712)."""
