"""X.509 with cryptography: names, CSRs, certificates, chains, CRLs. Knows nothing of tokens.

Signing functions take any cryptography private key; a token key arrives as one of the
adapters from :mod:`tokenissue.p11.signing`, which this package never imports.
"""
