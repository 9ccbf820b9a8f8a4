"""tokenissue: certificates for keys that never leave a PKCS#11 token.

The package is layered; imports only go down:

    cli  ->  lifecycle  ->  enroll  ->  ca  ->  p11 | pkix | inventory  ->  config
         ->  models, credentials, errors

``p11`` is the only package that imports python-pkcs11, ``inventory`` the only one that
imports SQLAlchemy and ``cli`` the only one that imports typer/rich, reads environment
variables or prompts. Importing ``tokenissue`` itself is cheap on purpose: the CLI's start-up
time is part of every command's cost.
"""

__version__ = "0.3.0"
__all__ = ["__version__"]
