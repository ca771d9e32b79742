"""What a database driver's exception means for the caller.

The write path and the reads both need to tell a value the database refused (the caller's
fault: 422, or a span rejected alone) from the database failing (503, retried). Both drivers
(aiosqlite, asyncpg) reach us wrapped by SQLAlchemy, so the checks look through the wrappers.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, SQLAlchemyError

from .errors import EvolutionStoreError, InvalidInput, StorageError

_SQLITE_UNIQUE = ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message (or of the exception's), for one-line errors."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_bad_value(exc: BaseException) -> bool:
    """A driver refusing a value the caller sent (out-of-range integer, a lone surrogate)
    rather than the database failing."""
    if isinstance(exc, DataError | InterfaceError | OverflowError | UnicodeError):
        return True
    # Postgres SQLSTATE class 22 is "data exception"
    return any(state.startswith("22") for state in _sqlstates(exc))


def is_unique_violation(exc: BaseException) -> bool:
    """A row refused by a unique index or primary key, from either backend, raised by the
    driver itself (bulk inserts) or wrapped by SQLAlchemy."""
    for error in _causes(exc):
        if getattr(error, "sqlite_errorname", "") in _SQLITE_UNIQUE:
            return True
    return "23505" in _sqlstates(exc)


def is_database_error(exc: BaseException) -> bool:
    """Raised by the database or its connection, as opposed to a bug of ours."""
    return isinstance(exc, DBAPIError | SQLAlchemyError | OSError)


def translate_write_error(exc: Exception) -> EvolutionStoreError:
    """The store's error for an exception a write raised, chained to it."""
    if isinstance(exc, EvolutionStoreError):
        return exc
    if is_bad_value(exc):
        error: EvolutionStoreError = InvalidInput(
            f"the database cannot store this value: {first_line(exc)}"
        )
    elif is_database_error(exc):
        error = StorageError(f"database write failed: {type(exc).__name__}: {first_line(exc)}")
    else:
        error = StorageError(f"write failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def translate_read_error(exc: Exception) -> Exception:
    """The store's error for an exception a read raised, chained to it; anything that is not
    the database's (a bug of ours) is returned as it is, to be raised unchanged."""
    if is_bad_value(exc):
        error: Exception = InvalidInput(f"unusable value in the query: {first_line(exc)}")
    elif is_database_error(exc):
        error = StorageError(f"database read failed: {first_line(exc)}")
    else:
        return exc
    error.__cause__ = exc
    return error


def _causes(exc: BaseException) -> tuple[BaseException | None, ...]:
    # SQLAlchemy wraps the driver adapter's exception (`orig`), which wraps asyncpg's.
    orig = getattr(exc, "orig", None)
    return (exc, orig, getattr(orig, "__cause__", None))


def _sqlstates(exc: BaseException) -> list[str]:
    """The SQLSTATE codes a Postgres error carries, whatever class the driver adapter chose
    to wrap it in."""
    return [
        str(getattr(error, "sqlstate", "") or getattr(error, "pgcode", "") or "")
        for error in _causes(exc)
    ]
