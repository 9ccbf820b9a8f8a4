"""Errors as the CLI says them: the library's sentence plus what to type about it.

The library's errors carry data (the candidates, the tries left, the URL) and a sentence that
names no command or option, since the same error reaches a server, a batch worker or another
program. Here each kind the user can do something about gets its remedy in this CLI's words,
as yubikey-manager's CLI turns ``InvalidPinError.attempts_remaining`` into a sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import Remedy, TokenIssueError

__all__ = ["REMEDIES", "join", "say"]


def join(message: str, remedy: str) -> str:
    """``message`` and ``remedy`` as the user reads them: a remedy that starts a sentence of its
    own follows the message; one that starts in lower case continues it after a semicolon (or a
    comma, for "or ...")."""
    if remedy[:1].isupper() or remedy.startswith("("):
        return f"{message} {remedy}"
    sep = ", " if remedy.startswith("or ") else "; "
    return f"{message.rstrip('.')}{sep}{remedy}"


#: Each remedy in this CLI's words; ``{name}`` takes the error's ``details[name]``.
REMEDIES: dict[Remedy, str] = {
    Remedy.GIVE_PIN: "give the PIN with TOKENISSUE_PIN, --pin-file or the prompt.",
    Remedy.GIVE_PIN_NOT_PAD: "give the PIN instead of --protected-auth.",
    Remedy.NAME_TOKEN: "a USB token needs --token.",
    Remedy.LIST_TOKENS: "'tokenissue tokens' lists the tokens present.",
    Remedy.RELABEL_TOKEN: "they share labels too, so re-label one ('tokenissue token init') or name it by URI, e.g. '{example}'.",
    Remedy.INIT_TOKEN: "Then make a new one with 'tokenissue token init --label LABEL'.",
    Remedy.INSPECT_TOKEN: "Check it with 'tokenissue tokens' and 'tokenissue keys list', delete unused keys if it is "
    "full, then run the same command again.",
    Remedy.PROBE_TOKEN: "'tokenissue token check --probe' shows what it accepts.",
    Remedy.LIST_KEY_TYPES: "'tokenissue token check' lists the key types it can make.",
    Remedy.LIST_KEYS: "'tokenissue keys list' shows the keys.",
    Remedy.FREE_TOKEN: "Delete keys or certificates it no longer needs ('tokenissue keys list', 'tokenissue keys "
    "delete'), then run the same command again.",
    Remedy.UNBLOCK_PIN: "unblock it with 'tokenissue token pin unblock' (needs the SO PIN).",
    Remedy.SET_USER_PIN: "set one with 'tokenissue token pin unblock'.",
    Remedy.CHECK_MODULE: "check --module / TOKENISSUE_MODULE.",
    Remedy.NAME_MODULE: "or name it with --module / TOKENISSUE_MODULE.",
    Remedy.OTHER_LABEL: "choose another --label.",
    Remedy.SIGN_ONLY_HOW: "(Sign-only keys are required by --require-sign-only or by the profile's require_sign_only.)",
    Remedy.NAME_CA: "name its CA with --ca.",
    Remedy.LIST_JOURNAL: "'tokenissue journal list' shows the open ones.",
    Remedy.RESUME: "finish it with 'tokenissue enroll --resume'.",
    Remedy.RESUME_OR_ABANDON: "finish it with 'tokenissue enroll --resume' (--ca LOCATION if its CA's "
    "address was wrong or has moved), or give up on it and remove its key with "
    "'tokenissue journal abandon {journal_id} --remove-key'.",
    Remedy.LIST_REGISTRATIONS: "check the reference with 'tokenissue ra list'.",
    Remedy.LIST_CERTIFICATES: "check the serial with 'tokenissue cert list'.",
    Remedy.CREATE_CA: "create one with 'tokenissue ca init'.",
    Remedy.CA_DIRECTORY: "'tokenissue ca' and 'ra' commands work on the CA's own directory (set --ca or "
    "TOKENISSUE_CA_DIR to it).",
    Remedy.NAME_CA_TOKEN: "name it with --token (or use --insecure-file-key).",
    Remedy.NAME_OCSP_TOKEN: "name one with --token.",
    Remedy.GIVE_CHAIN: "give it with --chain.",
    Remedy.GIVE_DNS_HOOK: "give it with --dns-hook.",
    Remedy.GIVE_EAB: "give --eab-kid and --eab-hmac-file with the key ID and HMAC key the CA gave you.",
    Remedy.CHECK_EAB_HMAC: "check the --eab-hmac-file.",
    Remedy.HTTP_01_ADDRESS: "give --http-01-address HOST:PORT where the CA's port 80 reaches this machine.",
    Remedy.GIVE_CA_TRUST: "give its CA with --ca-trust (or TOKENISSUE_CA_TRUST).",
    Remedy.GIVE_CA_TRUST_AGAIN: "give it with --ca-trust and run the same command again.",
    Remedy.GIVE_ACME_TRUST: "give its CA with --acme-trust (or $TOKENISSUE_ACME_TRUST).",
    Remedy.GIVE_ROOT: "give the root with --ca-trust.",
    Remedy.GIVE_SIGNER_TRUST: "give the CA certificate that signs its answers with --ca-trust.",
    Remedy.CHECK_CA_TRUST: "check --ca-trust.",
    Remedy.GIVE_REF: "give --ref.",
    Remedy.GIVE_AUTH_CODE: "set TOKENISSUE_AUTH_CODE or give --auth-code-file.",
    Remedy.CHECK_REF_AND_CODE: "check --ref and the authorization code.",
    Remedy.OR_RESUME: "(Or finish it with 'tokenissue enroll --resume'.)",
    Remedy.CHECK_URL: "check the URL (--ca).",
    Remedy.GIVE_ID_NUMBER: "give the holder's registration number with --id-number-file, TOKENISSUE_ID_NUMBER or "
    "the prompt.",
    Remedy.INSTALL_CA_CERT: "install it with 'tokenissue ca install-cert'.",
    Remedy.GIVE_VERIFIED_BY: "say how with --verified-by (e.g. 'branch visit with ID card').",
    Remedy.LIST_CA_CERTIFICATES: "check the serial with 'tokenissue ca list'.",
    Remedy.DELIVER_AGAIN: "check the --deliver-code command, then run 'tokenissue ra register' again.",
    Remedy.LIST_SUSPENDED: "'tokenissue ca list --status suspended' lists the suspended certificates.",
    Remedy.ASK_RESTORE: "once the token is back in its holder's hands, the CA restores it with 'tokenissue ca restore "
    "{serial}' (or revokes it for good with 'tokenissue ca revoke {serial}').",
}


def _ambiguous_lost_token(e: Any) -> str:
    return join(e.message, f"name one with --token-serial and its URI: {', '.join(repr(c) for c in e.candidates)}.")


def _nothing_recorded(e: Any) -> str:
    return join(
        e.message,
        "--token-serial takes the token's serial (or the pkcs11: URI where serials repeat) as 'tokenissue ca list' "
        "shows it in its Token column, not its label.",
    )


#: Renderers by the error class's dotted name, so that printing an error imports nothing.
_RENDERERS: dict[str, Callable[[Any], str]] = {
    "tokenissue.fleet.lost_token.AmbiguousLostToken": _ambiguous_lost_token,
    "tokenissue.fleet.lost_token.NothingRecorded": _nothing_recorded,
}


def say(error: TokenIssueError) -> str:
    """What the CLI prints for ``error``: its message, with the remedy where one is known."""
    for kind in type(error).__mro__:
        render = _RENDERERS.get(f"{kind.__module__}.{kind.__qualname__}")
        if render is not None:
            return render(error)
    if error.remedy is not None:
        return join(error.message, REMEDIES[error.remedy].format_map(error.details))
    return error.message
