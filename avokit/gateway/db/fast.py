"""Core statements compiled once per database and run straight on the DBAPI cursor.

Every request runs the same handful of statements (look up a key, reserve, settle). Through a
SQLAlchemy ``Connection`` each costs ~0.1-0.15 ms of Python (execution context, events,
result wrapping) on top of the ~0.02 ms SQLite needs for it. Here SQLAlchemy still writes the
SQL (from the same Core statement, for the engine's dialect) and still converts values with
the column types' own bind/result processors, so storage formats are exactly the ORM's;
only the per-execution machinery is skipped. Transactions and locking follow
:mod:`avokit.gateway.db.session`: ``BEGIN IMMEDIATE`` plus the process's write lock on
SQLite, the driver's implicit transaction on PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable

from avokit.gateway.db.session import sqlite_write_lock

Processor = Callable[[Any], Any]


class _Compiled:
    """One statement's SQL, parameter order and type processors for one dialect."""

    def __init__(self, stmt: Any, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        if getattr(compiled, "escaped_bind_names", None):
            raise ValueError("bind names that need escaping are not supported here")
        self.sql: str = compiled.string
        self.order: list[str] | None = (list(compiled.positiontup or [])
                                        if dialect.positional else None)
        # literal values written in the statement itself (e.g. status == "open")
        self.defaults = {name: bind.value for name, bind in compiled.binds.items()
                         if not bind.required and bind.callable is None}
        self.bind_procs: dict[str, Processor] = {}
        for name, bind in compiled.binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.bind_procs[name] = proc
        self.result_procs: list[Processor | None] = [
            col.type.dialect_impl(dialect).result_processor(dialect, None)
            # a SELECT's columns, or an INSERT/UPDATE's RETURNING columns
            for col in getattr(stmt, "exported_columns", [])]

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        merged = {**self.defaults, **values}
        for name, proc in self.bind_procs.items():
            if merged.get(name) is not None:
                merged[name] = proc(merged[name])
        if self.order is None:
            return merged
        return tuple(merged[name] for name in self.order)

    def row(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(value if proc is None or value is None else proc(value)
                     for proc, value in zip(self.result_procs, raw))


class FastStatement:
    """A Core statement with bind parameters, compiled lazily for each dialect it meets."""

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        self._compiled: dict[int, _Compiled] = {}

    def for_dialect(self, dialect: Dialect) -> _Compiled:
        """The compiled form for ``dialect`` (built on first use)."""
        found = self._compiled.get(id(dialect))
        if found is None:
            found = self._compiled[id(dialect)] = _Compiled(self.stmt, dialect)
        return found


class Cursor:
    """Runs :class:`FastStatement` s on one DBAPI cursor."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    @property
    def dialect_name(self) -> str:
        """The database's dialect (``sqlite``, ``postgresql``), for dialect-specific SQL."""
        return str(self._dialect.name)

    def execute(self, stmt: FastStatement, values: dict[str, Any]) -> int:
        """Run a statement; returns the affected row count."""
        compiled = stmt.for_dialect(self._dialect)
        self._cursor.execute(compiled.sql, compiled.params(values))
        return int(self._cursor.rowcount)

    def first(self, stmt: FastStatement, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run a SELECT (or an UPDATE ... RETURNING); its first row with column types
        applied, or None. Every row is fetched, so the statement is finished on return (a
        SQLite statement still stepping would hold up the commit)."""
        compiled = stmt.for_dialect(self._dialect)
        self._cursor.execute(compiled.sql, compiled.params(values))
        rows = self._cursor.fetchall()
        return compiled.row(tuple(rows[0])) if rows else None


@contextlib.contextmanager
def fast_read(engine: Engine) -> Iterator[Cursor]:
    """A cursor for one read-only statement (SQLite: no transaction, no write lock)."""
    conn = engine.raw_connection()
    try:
        yield Cursor(conn.cursor(), engine.dialect)
    finally:
        conn.close()  # the pool rolls back whatever the driver opened


@contextlib.contextmanager
def fast_write(engine: Engine) -> Iterator[Cursor]:
    """A transaction that commits when the block ends and rolls back on any error."""
    lock = sqlite_write_lock(engine)
    with lock if lock is not None else contextlib.nullcontext():
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            if lock is not None:
                cursor.execute("BEGIN IMMEDIATE")
            yield Cursor(cursor, engine.dialect)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()
