"""Token initialisation (C_InitToken) through PyKCS11 in a child process."""

from __future__ import annotations

import json
import subprocess
import sys

from ..credentials import Pin
from ..errors import ConfigError, PinIncorrect, Remedy, TokenError, TokenNotFound
from ._module import load_module

__all__ = ["init_token"]


def init_token(
    label: str,
    so_pin: Pin,
    user_pin: Pin,
    *,
    module: str | None = None,
    serial: str | None = None,
    current_label: str | None = None,
) -> str:
    """Initialise a token and set its user PIN; return its serial.

    With ``serial`` (and ``current_label``, since serials repeat on some modules) that token is
    wiped and re-initialised (its current SO PIN must be given); without, the first
    uninitialised token (SoftHSM's free slot, tpm2-pkcs11's empty slot) is used.
    """
    mod = load_module(module)
    with mod.lock:
        mod.refresh()  # close our sessions: C_InitToken fails while any session is open
        req = {
            "module": mod.path,
            "label": label,
            "so_pin": so_pin.reveal(),
            "user_pin": user_pin.reveal(),
            "serial": serial,
            "current_label": current_label,
        }
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "tokenissue.p11._inittoken_child"],
                input=json.dumps(req),
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            raise TokenError("The token did not finish initialising within 2 minutes; check it and retry.") from None
        finally:
            del req
        mod.refresh()  # make the new token visible to this process
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TokenError("Token initialisation failed in the helper process.") from None
    err = out.get("error")
    if err == "nopykcs11":
        raise ConfigError("Initialising tokens needs PyKCS11: pip install 'tokenissue[init]'.")
    if err == "ambiguous":
        raise TokenError(
            f"Several tokens have serial {serial} and label '{current_label}'; tokenissue will not guess which one "
            "to erase. Re-initialise it with the module's own tool."
        )
    if err == "noslot":
        if serial:
            raise TokenNotFound(f"No initialised token with serial {serial} to re-initialise.")
        raise TokenNotFound("No free slot for a new token (SoftHSM always offers one).", remedy=Remedy.NAME_TOKEN)
    if err == "pkcs11":
        rv = out.get("rv", "")
        if rv == "CKR_PIN_INCORRECT":
            raise PinIncorrect("The SO PIN was refused; re-initialising needs the token's current SO PIN.")
        if rv in ("CKR_PIN_LEN_RANGE", "CKR_PIN_INVALID"):
            from ..errors import PinPolicyError

            raise PinPolicyError("The token refused the PIN length; SoftHSM wants 4 to 255 characters.")
        if serial and rv == "CKR_ARGUMENTS_BAD":
            # tpm2-pkcs11 answers this to C_InitToken on a token that exists (measured).
            raise TokenError(
                "This token's module cannot re-initialise a token in place (C_InitToken: CKR_ARGUMENTS_BAD); nothing "
                "was erased. Remove the token with the module's own tool (tpm2-pkcs11: 'tpm2_ptool rmtoken').",
                remedy=Remedy.INIT_TOKEN,
            )
        raise TokenError(f"The token refused to initialise ({rv}).")
    return str(out["serial"])
