"""Loading a PKCS#11 module, finding tokens, and logging in without leaking sessions.

Token-layer traps handled here (measured with SoftHSM 2.6.1 and python-pkcs11 0.10):

* python-pkcs11 calls C_Initialize without locking flags and releases the GIL, so concurrent
  calls crash SoftHSM. Every call into the module goes through :attr:`Module.lock`.
* A module can be initialised once per process; :func:`load_module` caches one per path.
* A failed C_Login leaves its freshly opened session open (python-pkcs11 never closes it), and
  a later SO login then fails with SessionReadOnlyExists. After a refused PIN we finalise and
  re-initialise the module, which closes every session, and forget the sessions we cached.
* Login state is per process and token, so we keep exactly one logged-in session per token.
* Tokens created by another process (token init runs PyKCS11 in a child) are invisible until
  the module is re-initialised: :meth:`Module.refresh`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11.exceptions as px
from pkcs11.constants import TokenFlag

from ..credentials import PROTECTED_AUTH, Pin, ProtectedAuth
from ..errors import (
    AmbiguousToken,
    ConfigError,
    PinError,
    PinIncorrect,
    PinLocked,
    Remedy,
    TokenError,
    TokenIssueError,
    TokenNotFound,
)
from ..models import KeyAlgorithm, TokenInfo
from ._capabilities import Capabilities, keygen_mechanism, library_quirks
from ._errors import translate
from .uri import TokenSelector, format_uri

__all__ = ["CANDIDATE_MODULES", "Module", "find_module", "load_module", "placeholder_serial", "token_identity"]

#: Searched in order when no module is named. p11-kit's proxy comes last: it aggregates every
#: module registered with p11-kit (OpenSC for smart cards, SoftHSM, vendor modules).
CANDIDATE_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
    "/usr/lib64/p11-kit-proxy.so",
)


def find_module(explicit: str | None = None) -> str:
    """The module path to use: the one given, else the first candidate that exists."""
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"PKCS#11 module '{explicit}' does not exist.", remedy=Remedy.CHECK_MODULE)
        return explicit
    for candidate in CANDIDATE_MODULES:
        if Path(candidate).is_file():
            return candidate
    raise ConfigError("No PKCS#11 module found; install softhsm2 or your token's driver.", remedy=Remedy.NAME_MODULE)


_MODULES: dict[str, Module] = {}
_MODULES_LOCK = threading.Lock()


def load_module(path: str | None = None) -> Module:
    """The process-wide :class:`Module` for ``path`` (found automatically when ``None``)."""
    resolved = find_module(path)
    with _MODULES_LOCK:
        mod = _MODULES.get(resolved)
        if mod is None:
            mod = _MODULES[resolved] = Module(resolved)
        return mod


def placeholder_serial(serial: str) -> bool:
    """Whether a serial cannot tell tokens apart: empty, one repeated character (tpm2-pkcs11's
    ``0000000000000000``) or shorter than 6 characters (modules that number tokens 1, 2, ...)."""
    s = serial.strip()
    return len(s) < 6 or len(set(s)) == 1


def token_identity(label: str, serial: str, manufacturer: str, model: str, *, unique: bool = True) -> str:
    """The name tokenissue records for a token (journal, inventory, locks).

    Its serial when that tells it apart; else an RFC 7512 URI with the label, manufacturer,
    model and serial, which :meth:`TokenSelector.from_identity` turns back into a selector.
    """
    if unique and not placeholder_serial(serial):
        return serial
    return format_uri(token=label, manufacturer=manufacturer, model=model, serial=serial)


def _token_info(token: Any, module: str, *, unique: bool = True) -> TokenInfo:
    f = token.flags
    serial = _serial(token)
    return TokenInfo(
        label=token.label,
        serial=serial,
        identity=token_identity(token.label, serial, token.manufacturer_id, token.model, unique=unique),
        manufacturer=token.manufacturer_id,
        model=token.model,
        initialized=bool(f & TokenFlag.TOKEN_INITIALIZED),
        user_pin_initialized=bool(f & TokenFlag.USER_PIN_INITIALIZED),
        login_required=bool(f & TokenFlag.LOGIN_REQUIRED),
        protected_auth_path=bool(f & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
        user_pin_count_low=bool(f & TokenFlag.USER_PIN_COUNT_LOW),
        user_pin_final_try=bool(f & TokenFlag.USER_PIN_FINAL_TRY),
        user_pin_locked=bool(f & TokenFlag.USER_PIN_LOCKED),
        so_pin_count_low=bool(f & TokenFlag.SO_PIN_COUNT_LOW),
        so_pin_final_try=bool(f & TokenFlag.SO_PIN_FINAL_TRY),
        so_pin_locked=bool(f & TokenFlag.SO_PIN_LOCKED),
        slot_description=token.slot.slot_description,
        module=module,
    )


def _attribute_mapper() -> Any:
    """python-pkcs11's attribute mapper, taught the two attributes it cannot encode.

    CKA_ALLOWED_MECHANISMS (an array of CK_MECHANISM_TYPE) segfaults python-pkcs11 0.10 when
    given a list, and CKA_CERTIFICATE_CATEGORY raises NotImplementedError; both matter here.
    """
    import array

    from pkcs11 import Attribute
    from pkcs11.attributes import AttributeMapper, handle_ulong

    mapper = AttributeMapper()
    mapper.register_handler(
        Attribute.ALLOWED_MECHANISMS,
        lambda v: array.array("L", [int(m) for m in v]).tobytes(),
        lambda b: list(array.array("L", b)),
    )
    mapper.register_handler(Attribute.CERTIFICATE_CATEGORY, *handle_ulong)
    return mapper


def _rv(e: Exception) -> str:
    """CKR_GENERAL_ERROR for python-pkcs11's GeneralError, and so on."""
    import re

    return "CKR_" + re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).upper()


def _serial(token: Any) -> str:
    raw = token.serial
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    return str(raw).strip()


class Module:
    """One loaded PKCS#11 module. Use :func:`load_module` rather than constructing it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._lib: Any = None
        # slot ID -> [session, user kind ("user"/"so"), reference count]; by slot, not serial:
        # serials repeat on some modules (every tpm2-pkcs11 token has 0000000000000000)
        self._sessions: dict[str, list[Any]] = {}
        self._pid = os.getpid()
        self._dirty = False  # a failed login left a session open that only a refresh closes
        self._slots: dict[str, Any] = {}  # selector -> slot of the one token it matched
        self._caps: dict[tuple[int, str], Capabilities] = {}  # (slot, identity) -> capability record
        self._dup_serials: set[str] | None = None  # serials shared by tokens, from the last listing

    # -- loading ---------------------------------------------------------------------------
    @property
    def lib(self) -> Any:
        with self.lock:
            if self._pid != os.getpid():
                # A module initialised before fork() must not be used in the child.
                raise TokenError("The PKCS#11 module was loaded before fork(); load it in the child.")
            if self._lib is None:
                try:
                    self._lib = pkcs11.lib(self.path)
                except px.PKCS11Error as e:
                    # python-pkcs11 raises the bare PKCS11Error (a RuntimeError) when dlopen fails,
                    # and a CKR_* subclass when the module loaded but its C_Initialize failed.
                    if type(e) is px.PKCS11Error:
                        raise ConfigError(
                            f"Cannot load PKCS#11 module '{self.path}': it is not a loadable PKCS#11 library.",
                            remedy=Remedy.CHECK_MODULE,
                        ) from e
                    raise ConfigError(
                        f"PKCS#11 module '{self.path}' loaded but would not start (C_Initialize: {_rv(e)}); check its "
                        "configuration (SoftHSM: SOFTHSM2_CONF; tpm2-pkcs11: TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI "
                        "and that the TPM and its resource manager are running)."
                    ) from e
            return self._lib

    def refresh(self) -> None:
        """Re-initialise the module: see tokens made by other processes, drop all sessions."""
        with self.lock:
            self._sessions.clear()
            self._slots.clear()
            self._caps.clear()
            self._dup_serials = None
            self._dirty = False
            if self._lib is not None:
                with translate("re-initialise the module"):
                    self._lib.reinitialize()

    # -- tokens ----------------------------------------------------------------------------
    def _raw_tokens(self) -> list[Any]:
        with self.lock:
            try:
                with translate("list tokens"):
                    return [slot.get_token() for slot in self.lib.get_slots(token_present=True)]
            except TokenError as e:
                # A token pulled out (for SoftHSM: its directory removed) can leave the module
                # failing every listing with GeneralError until it is re-initialised. Do that
                # when no session of ours is open (a re-initialise would close it) and try once more.
                if self._sessions or not isinstance(e.__cause__, px.GeneralError | px.DeviceError | px.DeviceRemoved):
                    raise
                self.refresh()
            with translate("list tokens"):
                found = [slot.get_token() for slot in self.lib.get_slots(token_present=True)]
                self._duplicated(found)
                return found

    def _duplicated(self, tokens: list[Any]) -> set[str]:
        """Serials that more than one initialised token present shares."""
        serials = [_serial(t) for t in tokens if t.flags & TokenFlag.TOKEN_INITIALIZED]
        self._dup_serials = {x for x in serials if serials.count(x) > 1}
        return self._dup_serials

    def tokens(self, *, include_uninitialized: bool = False) -> list[TokenInfo]:
        """Every token present, as :class:`TokenInfo` (uninitialised slots left out by default)."""
        with self.lock:
            raw = self._raw_tokens()
            dup = self._duplicated(raw)
            out = [_token_info(t, self.path, unique=_serial(t) not in dup) for t in raw]
        return [t for t in out if include_uninitialized or t.initialized]

    def find_token(self, selector: TokenSelector) -> Any:
        """The python-pkcs11 Token matching ``selector``; exactly one must match."""
        with self.lock:
            found = self._matching(selector)
            if not found and not self._sessions and self._lib is not None:
                # A token inserted (or, for SoftHSM, made by another process) since the module
                # was initialised is seen only after a re-initialise; safe with no session open.
                self.refresh()
                found = self._matching(selector)
        if not found:
            raise TokenNotFound(f"No token '{selector}' found.", remedy=Remedy.LIST_TOKENS)
        if len(found) > 1:
            raise self._ambiguous(selector, found)
        return found[0]

    def _ambiguous(self, selector: TokenSelector, found: list[Any]) -> AmbiguousToken:
        labels = [t.label for t in found]
        what = f"{len(found)} tokens match '{selector}' (serials do not tell them apart)"
        if len(set(labels)) == len(labels):
            # The labels tell them apart: name one by label (with its serial, if that helps).
            example = format_uri(token=labels[0], serial=_serial(found[0]))
            return AmbiguousToken(f"{what}; name one by label, e.g. '{labels[0]}' or '{example}'.")
        t = found[0]
        example = format_uri(token=t.label, manufacturer=t.manufacturer_id, model=t.model, serial=_serial(t))
        return AmbiguousToken(f"{what}.", remedy=Remedy.RELABEL_TOKEN, details={"example": example})

    def _matching(self, selector: TokenSelector) -> list[Any]:
        key = str(selector)
        if key in self._slots:
            # Known selector: ask its slot alone (one C_GetTokenInfo) instead of every slot, which
            # with a tray of tokens is most of a batch's time. Anything unexpected: list them all.
            try:
                with translate("read the token"):
                    t = self._slots[key].get_token()
                if (t.flags & TokenFlag.TOKEN_INITIALIZED) and selector.matches(t.label, _serial(t), t.manufacturer_id, t.model):
                    return [t]
            except TokenIssueError:
                pass
            self._slots.pop(key, None)
        tokens = [t for t in self._raw_tokens() if t.flags & TokenFlag.TOKEN_INITIALIZED]
        found = [t for t in tokens if selector.matches(t.label, _serial(t), t.manufacturer_id, t.model)]
        if len(found) == 1:
            self._slots[key] = found[0].slot
        # Remember every token by its identity too: a batch names each token by identity after
        # the first listing, and must find it without listing every slot again (one token
        # pulled out can leave a module failing every listing until it is re-initialised).
        dup = self._dup_serials or set()
        names = [
            str(TokenSelector.from_identity(token_identity(t.label, _serial(t), t.manufacturer_id, t.model,
                                                           unique=_serial(t) not in dup)))
            for t in tokens
        ]  # fmt: skip
        for name, t in zip(names, tokens, strict=True):
            if names.count(name) == 1:  # two tokens alike in every respect stay ambiguous
                self._slots.setdefault(name, t.slot)
        return found

    def token_info(self, selector: TokenSelector) -> TokenInfo:
        with self.lock:
            token = self.find_token(selector)
            return self._info_of(token)

    def _info_of(self, token: Any) -> TokenInfo:
        """TokenInfo of a token found; its identity depends on whether its serial is unique."""
        serial = _serial(token)
        unique = not placeholder_serial(serial)
        if unique:
            # A second token with this serial makes the serial useless as a name. The last full
            # listing tells (a batch asks one slot per token, not every slot).
            if self._dup_serials is None:
                self._raw_tokens()
            unique = serial not in (self._dup_serials or set())
        return _token_info(token, self.path, unique=unique)

    @property
    def quirks(self) -> Any:
        """This module's quirks (:func:`._capabilities.library_quirks`)."""
        return library_quirks(str(self.lib.manufacturer_id))

    def capabilities(self, token: Any, info: TokenInfo) -> Capabilities:
        """The capability record of ``token`` (made on first use, kept until refresh)."""
        with self.lock:
            key = (token.slot.slot_id, info.identity)
            caps = self._caps.get(key)
            if caps is None:
                with translate("list its mechanisms"):
                    mechanisms = frozenset(token.slot.get_mechanisms())
                    sizes: dict[Any, tuple[int, int]] = {}
                    for alg in KeyAlgorithm:
                        m = keygen_mechanism(alg)
                        if m in mechanisms:
                            with suppress(px.PKCS11Error):
                                mi = token.slot.get_mechanism_info(m)
                                sizes[m] = (int(mi.min_key_length or 0), int(mi.max_key_length or 0))
                caps = Capabilities(
                    library=str(self.lib.manufacturer_id).strip(),
                    mechanisms=mechanisms,
                    key_sizes=sizes,
                    serials_unique=info.identity == info.serial,
                )
                self._caps[key] = caps
            return caps

    # -- sessions --------------------------------------------------------------------------
    @contextmanager
    def session(
        self,
        selector: TokenSelector,
        pin: Pin | ProtectedAuth | None = None,
        *,
        so: bool = False,
    ) -> Iterator[Any]:
        """A read/write session on the token, logged in when a PIN is given.

        Re-entrant per token: a nested request for the same token and role shares the
        logged-in session (PKCS#11 login state is per process anyway). The session is closed,
        which logs the token out, when the outermost user leaves.
        """
        with self.lock:
            token = self.find_token(selector)
            serial = token.slot.slot_id
            role = "so" if so else ("user" if pin is not None else "public")
            entry = self._sessions.get(serial)
            if entry is not None and entry[1] != role:
                if entry[1] == "user" and role == "public":
                    role = "user"  # a logged-in session serves public reads too
                else:
                    raise TokenError(f"Token '{token.label}' is already open as {entry[1]} in this process.")
            if entry is None:
                entry = [self._open(token, pin, so), role, 0]
                self._sessions[serial] = entry
            entry[2] += 1
        try:
            yield entry[0]
        finally:
            with self.lock:
                entry[2] -= 1
                if entry[2] == 0 and self._sessions.get(serial) is entry:
                    del self._sessions[serial]
                    # The token may be gone; then there is nothing left to log out.
                    with suppress(px.PKCS11Error):
                        entry[0].close()
                    if self._dirty and not self._sessions:
                        self.refresh()  # a failed login left a session behind; see _after_failed_login

    def _open(self, token: Any, pin: Pin | ProtectedAuth | None, so: bool) -> Any:
        kwargs: dict[str, Any] = {"rw": True, "attribute_mapper": _attribute_mapper()}
        if isinstance(pin, ProtectedAuth):
            kwargs["so_pin" if so else "user_pin"] = pkcs11.PROTECTED_AUTH
        elif pin is not None:
            kwargs["so_pin" if so else "user_pin"] = pin.reveal()
        try:
            return token.open(**kwargs)
        except px.PKCS11Error as e:
            if pin is not None:
                self._after_failed_login()
            err = self._login_error(e, token, pin, so)
            raise err from (None if isinstance(e, px.PinIncorrect) else e)

    def _after_failed_login(self) -> None:
        """Close the session python-pkcs11 opened for a C_Login that failed.

        Only finalising the module closes it, and that closes every session of this process;
        when another token's session is in use (a CA token and a holder token in one
        enrollment), the clean-up waits until the last session is closed.
        """
        if self._sessions:
            self._dirty = True
        else:
            self.refresh()

    def _login_error(self, e: Exception, token: Any, pin: Pin | ProtectedAuth | None, so: bool) -> Exception:
        label = token.label
        if isinstance(e, px.PinIncorrect):
            return self._pin_incorrect(token, so, label)
        if isinstance(e, px.PinLocked):
            return self.pin_locked(label, so)
        if isinstance(e, px.UserPinNotInitialized):
            return PinError(f"Token '{label}' has no user PIN yet.", remedy=Remedy.SET_USER_PIN)
        if isinstance(e, px.UserAlreadyLoggedIn):
            return TokenError(f"Token '{label}' is already logged in by this process.")
        if isinstance(e, px.ArgumentsBad | px.FunctionNotSupported) and pin is PROTECTED_AUTH:
            return TokenError(
                f"Token '{label}' has no PIN pad (protected authentication path).", remedy=Remedy.GIVE_PIN_NOT_PAD
            )
        try:
            with translate(f"open a session on token '{label}'"):
                raise e
        except TokenIssueError as mapped:
            return mapped

    def _pin_incorrect(self, token: Any, so: bool, label: str = "") -> PinIncorrect:
        """The sentence for a refused PIN: what the token says about the tries left, and no more.

        A token whose module never sets the try-counter flags (tpm2-pkcs11) gets no claim about
        tries at all: "no warning" from such a token means nothing.
        """
        quirks = library_quirks(str(self.lib.manufacturer_id))
        who = "SO PIN" if so else "PIN"
        whose = f" of token '{label}'" if label else ""
        if not quirks.pin_counters:
            if quirks.lockout == "device":
                tail = (
                    "this token does not report how many tries are left, and after a few wrong PINs the device "
                    "locks every PIN on it for a while."
                )
            else:
                tail = "this token does not report how many tries are left."
            return PinIncorrect(f"The {who}{whose} was refused and was not retried; {tail}")
        # Token flags are cached by python-pkcs11; a fresh token object reads them anew.
        info = None
        for t in self._raw_tokens():
            if t.slot.slot_id == token.slot.slot_id:
                info = _token_info(t, self.path)
        low = bool(info and (info.so_pin_count_low if so else info.user_pin_count_low))
        final = bool(info and (info.so_pin_final_try if so else info.user_pin_final_try))
        locked = bool(info and (info.so_pin_locked if so else info.user_pin_locked))
        if locked:
            tail = "the token has now locked it; unblock it with the SO PIN."
        elif final:
            tail = "the token reports ONE try left before it locks the PIN."
        elif low:
            tail = "the token reports that few tries are left."
        else:
            tail = "the token reports no low-tries warning."
        return PinIncorrect(
            f"The {who}{whose} was refused and was not retried; {tail}",
            count_low=low,
            final_try=final,
        )

    def pin_locked(self, label: str, so: bool = False) -> PinLocked:
        """The sentence for CKR_PIN_LOCKED: how this kind of token is unlocked."""
        who = "SO PIN" if so else "PIN"
        quirks = library_quirks(str(self.lib.manufacturer_id))
        if quirks.lockout == "device":
            return PinLocked(
                f"Token '{label}' is locked (CKR_PIN_LOCKED): the device locked every PIN on it after too many wrong "
                f"ones; {quirks.unlock_hint or 'wait for its lockout to end'}, then try again with the right PIN."
            )
        if quirks.unlock_hint:
            return PinLocked(f"The {who} of token '{label}' is locked (CKR_PIN_LOCKED); {quirks.unlock_hint}.")
        return PinLocked(f"The {who} of token '{label}' is locked (CKR_PIN_LOCKED).", remedy=Remedy.UNBLOCK_PIN)
