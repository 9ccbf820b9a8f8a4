"""Translate python-pkcs11 exceptions into :mod:`tokenissue.errors` at the p11 boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pkcs11.exceptions as px

from ..errors import (
    MechanismUnsupported,
    PinLocked,
    PinPolicyError,
    Remedy,
    TokenError,
    TokenIssueError,
    TokenNotFound,
)

__all__ = ["translate"]


@contextmanager
def translate(doing: str) -> Iterator[None]:
    """Run a block of PKCS#11 calls; re-raise their errors as one clear sentence.

    ``doing`` completes "The token refused to ...", e.g. ``"generate the key"``.
    PinIncorrect is not handled here: the session layer must clean up after a failed login
    first (see :meth:`Module._after_failed_login`).
    """
    try:
        yield
    except (TokenIssueError, px.PinIncorrect):
        # PinIncorrect passes through untouched: the caller must clean up the leaked
        # login session before it can say anything about the PIN.
        raise
    except px.PinLocked as e:
        raise PinLocked("The PIN is locked.", remedy=Remedy.UNBLOCK_PIN) from e
    except (px.PinLenRange, px.PinInvalid) as e:
        raise PinPolicyError("The token refused the new PIN (length or characters); choose another.") from e
    except (px.MechanismInvalid, px.MechanismParamInvalid) as e:
        raise MechanismUnsupported(f"The token does not support the mechanism needed to {doing}.") from e
    except (px.TokenNotPresent, px.DeviceRemoved, px.SlotIDInvalid, px.SessionHandleInvalid, px.SessionClosed) as e:
        raise TokenNotFound(
            f"The token went away while trying to {doing}; plug it in again and run the same command again."
        ) from e
    except px.ObjectHandleInvalid as e:
        # The object this session knew is gone: the token was removed and put back, or
        # another program deleted the object.
        raise TokenError(
            f"The key or certificate went away while trying to {doing} (the token was removed, or another "
            "program changed it); run the same command again."
        ) from e
    except (px.DeviceMemory, px.HostMemory) as e:
        raise TokenError(f"The token is out of memory while trying to {doing}; delete unused objects.") from e
    except (px.FunctionFailed, px.GeneralError, px.DeviceError) as e:
        # SoftHSM says FunctionFailed when its token directory is full, GeneralError when the
        # directory vanished; USB tokens say DeviceError when pulled mid-operation.
        raise TokenError(
            f"The token could not {doing} ({type(e).__name__}): it may be full, failing or removed.",
            remedy=Remedy.INSPECT_TOKEN,
        ) from e
    except px.TemplateInconsistent as e:
        raise TokenError(f"The token refused the attributes needed to {doing}.") from e
    except px.PKCS11Error as e:
        raise TokenError(f"The token refused to {doing} ({type(e).__name__}).") from e
