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
from .sqlite import SQLiteStore, WriterStats

__all__ = [
    "Store",
    "ResidentRecord",
    "IdentifierRecord",
    "CodeRecord",
    "RowRejected",
    "DuplicateIdentifier",
    "DuplicateIdempotencyKey",
    "DuplicateSerial",
    "ResidentNotFound",
    "ResidentMerged",
    "CodeNotRenewable",
    "StoreClosed",
    "StoreOverloaded",
    "WriteFailed",
    "SQLiteStore",
    "WriterStats",
]
