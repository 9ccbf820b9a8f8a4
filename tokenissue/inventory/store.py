"""The inventory store: :class:`Inventory`, every area of the store over one database.

Each area is a module of its own, and a class adding its methods to :class:`Database`
(opening, migrations and transactions, in ``_engine.py``): locks between processes
(``_locks.py``), certificates and CRL numbers (``_certificates.py``), the resumable journal
(``_journal.py``), the audit log (``_audit_log.py``), settings (``_settings.py``), the RA's
registrations (``_registrations.py``) and the CMP server's transactions
(``_transactions.py``). Every public method is one transaction, and errors from SQLAlchemy
leave as :class:`~tokenissue.errors.InventoryError` (exit status 7).
"""

from __future__ import annotations

from ._audit_log import AuditStore
from ._certificates import CertificateStore
from ._journal import JournalStore
from ._locks import Locks
from ._pending import PendingStore
from ._registrations import RegistrationStore
from ._settings import SettingStore
from ._transactions import TransactionStore

__all__ = ["Inventory"]


class Inventory(
    CertificateStore, JournalStore, AuditStore, SettingStore, RegistrationStore, TransactionStore, PendingStore, Locks
):
    """The CA's record of what it issued and the holder's record of what it enrolled.

    Create one with :meth:`open`; it runs the migrations. Use it as a context manager or call
    :meth:`close`. Instances are not meant to be shared between threads: open one each.
    """
