"""Where the issuer keeps residents, identifiers and issued codes.

:mod:`issuer.store.base` is the interface (records, errors, :class:`Store`);
:mod:`issuer.store.sqlite` the default implementation. A PostgreSQL store
implements the same interface.
"""

from .base import (
    CodeNotRenewable,
    CodeRecord,
    DuplicateIdempotencyKey,
    DuplicateIdentifier,
    DuplicateSerial,
    IdentifierRecord,
    ResidentMerged,
    ResidentNotFound,
    ResidentRecord,
    RowRejected,
    Store,
    StoreClosed,
    StoreOverloaded,
    WriteFailed,
)
from . import base as _base
from .sqlite import SQLiteStore, WriterStats

__all__ = [*_base.__all__, "SQLiteStore", "WriterStats"]
