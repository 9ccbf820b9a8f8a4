"""The certificate authority: profiles, issuing, serials, revocation, CRLs, registration codes.

Kept import-light on purpose: ``import tokenissue.ca`` must not pull in submodules, so that
``importlib.resources`` can find ``profiles.toml`` and the CLI starts fast.
"""
