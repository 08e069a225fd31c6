"""Connecting to the ledger and keeping its schema current."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from campaign.errors import UserError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class LedgerError(UserError, RuntimeError):
    """The ledger cannot be reached or used; the message says why."""

    exit_code = 4


#: faults of the ledger itself (unreachable, locked, gone away), not of the data sent to it:
#: work that meets one is retried later rather than given up
LEDGER_FAULTS: tuple[type[Exception], ...] = (LedgerError, OperationalError, InterfaceError)
#: anything the database driver raised (its message holds no bound values: `_without_values`)
DRIVER_ERRORS: tuple[type[Exception], ...] = (DBAPIError,)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets `dialer status` read while a run writes; the timeout rides out short locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLite file or PostgreSQL URL (`postgresql://` uses psycopg 3).

    Bound parameters (numbers, names, transcripts) never appear in an error's text, so
    neither in logs nor in the error columns that store such texts (`hide_parameters`,
    and `_without_values` for the values PostgreSQL quotes in its own messages).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerError(f"DIALER_DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"unsupported ledger URL {parsed.render_as_string(hide_password=True)!r}:"
            " use sqlite:///FILE or postgresql://USER@HOST/DB"
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger folder {folder}: {exc}") from None
        engine = create_engine(parsed, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        try:
            engine = create_engine(parsed, hide_parameters=True)
        except ModuleNotFoundError as exc:  # the driver is the `[postgres]` extra
            raise LedgerError(
                f"a PostgreSQL ledger needs its driver ({exc.name} is not installed):"
                " pip install 'livekit-campaign-dialer[postgres]'"
            ) from None
        event.listen(engine.pool, "checkin", _checked_in)
        event.listen(engine.pool, "checkout", _ping_if_idle(engine.dialect))
    event.listen(engine, "handle_error", _without_values)
    return engine


#: a pooled PostgreSQL connection idle this long (seconds) is pinged before it is used
#: again, so one that a server restart or a firewall closed meanwhile is replaced, not
#: failed on; one used more recently is not: the hot path reuses its connections within
#: milliseconds, and a ping per checkout was a round trip and an eighth of a claim's CPU.
#: A fault in that short gap is a transient ledger fault like any other (`store.aio`).
PING_IF_IDLE = 1.0


def _checked_in(_dbapi_conn: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Callable[[Any, Any, Any], None]:
    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) < PING_IF_IDLE:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                # the pool replaces the connection and checks out again
                raise DisconnectionError(str(exc).split("\n", 1)[0]) from exc
            raise

    return checkout


def _without_values(context: ExceptionContext) -> None:
    """Keep only the first line of a driver's message: PostgreSQL's DETAIL line quotes the
    row's values (`Key (e164)=(+14155552671) already exists.`)."""
    original = context.original_exception
    first = str(original).split("\n", 1)[0]
    if first == str(original):
        return
    original.args = (first,)
    wrapped = context.sqlalchemy_exception
    if wrapped is not None:
        wrapped.args = (f"({type(original).__module__}.{type(original).__name__}) {first}",)


class Ledger:
    """The engine plus a session factory. One per process; cheap to share."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: zone sets read so far, by id (rows are only ever added, never changed)
        self.zone_sets: dict[int, list[str]] = {}

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, committed on success: the hot path's
        (no ORM session, no identity map, a fraction of the CPU per statement)."""
        with self.engine.begin() as connection:
            yield connection

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from alembic import command

        try:
            with self.engine.begin() as connection:
                config = alembic_config(self.url)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            reason = " ".join(str(exc.orig).split())  # drivers' messages span lines
            raise LedgerError(f"cannot reach the ledger at {self.safe_url}: {reason}") from None
        except DBAPIError as exc:  # reached, but no ledger there (not a database, say)
            reason = " ".join(str(exc.orig).split())
            raise LedgerError(f"cannot use the ledger at {self.safe_url}: {reason}") from None

    def is_current(self) -> bool:
        """True when the schema is at the newest migration."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config(self.url))
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return False
            current = MigrationContext.configure(connection).get_current_heads()
        return set(current) == set(script.get_heads())

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def open_ledger(url: str, *, migrate: bool = True) -> Ledger:
    """Open the ledger and, by default, migrate it to the newest schema."""
    ledger = Ledger(url)
    if migrate:
        ledger.migrate()
    return ledger
