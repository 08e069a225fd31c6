"""Ledger queries for campaigns, contact imports, rejections and the do-not-call list."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, cast

from sqlalchemy import JSON, Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaign.campaign_file import check_campaign_name
from campaign.contacts import (
    ContactRow,
    Progress,
    Reason,
    Sheet,
    SheetResult,
    check_region,
    validate_sheet,
)
from campaign.outcomes import ContactStatus
from campaign.store.db import Ledger
from campaign.store.dialing import upsert_campaign
from campaign.store.import_writer import ImportWriter
from campaign.store.models import (
    Campaign,
    Contact,
    DncEntry,
    Rejection,
    utcnow,
    zone_key,
    zone_set_ids,
)

logger = logging.getLogger(__name__)

_BATCH = 5_000
_SQLITE_IMPORT_CACHE_KIB = 64 * 1024  # holds a 1M-contact campaign's random-order key
#: what an import writes of each new contact, in the order `new_contacts` yields them
#: (the columns every new contact shares are the import's constants)
_CONTACT_COLUMNS = (
    "e164",
    "raw_phone",
    "extension",
    "name",
    "timezones",
    "zone_set_id",
    "variables",
    "source_row",
)
#: the reason a sheet's duplicate rows are stored under in `rejections`
DUPLICATE_REASON = "duplicate"


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What one import did to a campaign."""

    campaign: str
    source: str
    rows: int
    new: int  #: contacts written by this import
    already_present: int  #: accepted rows whose E.164 the campaign already had
    duplicates: int  #: rows repeating an earlier row of the same sheet
    rejected: int  #: rows that cannot be dialed (including do-not-call)
    dnc: int  #: of the rejected, how many are on the do-not-call list


@dataclass(slots=True)
class ImportCounts:
    """What an import's write found of the accepted rows."""

    new: int = 0  #: written as new contacts
    already: int = 0  #: the campaign had the number already
    dnc: int = 0  #: on the do-not-call list (rejected here)


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    """One line of `dialer campaigns`."""

    name: str
    region: str
    status: str
    created_at: datetime
    contacts: int
    rejections: int
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DncAddResult:
    added: int
    already_listed: int


def get_or_create_campaign(session: Session, name: str, region: str) -> Campaign:
    """The campaign called `name`, created with `region` when it does not exist yet."""
    return upsert_campaign(session, check_campaign_name(name), region)


def campaign_region(ledger: Ledger, name: str) -> str | None:
    """The default region of an existing campaign, or None."""
    with ledger.session() as session:
        return session.scalar(select(Campaign.region).where(Campaign.name == name))


def _insert_ignoring_conflicts(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert a few rows, skipping any that a concurrent writer wrote first (unique keys)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - the ledger supports SQLite and PostgreSQL only
        statement = insert(table)
    for start in range(0, len(rows), _BATCH):
        session.execute(statement, rows[start : start + _BATCH])


def _bulk_insert(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    constants: dict[str, Any],
) -> None:
    """Stream rows (tuples in `columns` order, their values as the driver takes them:
    JSON as its text; plus `constants`, the values every row shares) into `table`
    through the driver's bulk path, in this transaction, skipping any that a concurrent
    import wrote first (unique keys).

    The constants are converted for the driver once per import. SQLite: `executemany`
    of `INSERT ... ON CONFLICT DO NOTHING`, the constants bound through the columns' own
    types. PostgreSQL: binary `COPY` straight into the table, a batch at a time under a
    savepoint; a batch that meets a row written meanwhile is copied again into a
    temporary table and inserted from it with `ON CONFLICT DO NOTHING`.
    """
    connection = session.connection()
    dialect = connection.dialect
    names = ", ".join([*columns, *constants])
    driver: Any = connection.connection.driver_connection
    if dialect.name == "postgresql":
        fixed = tuple(_copy_value(table, c, v) for c, v in constants.items())
        _copy_rows(driver, table.name, names, ((*row, *fixed) for row in rows))
        return

    # the dialect's own form of each type, exactly as the ORM writes it
    def bind(column: str, value: Any) -> Any:
        processor = table.c[column].type.dialect_impl(dialect).bind_processor(dialect)
        return value if processor is None else processor(value)

    fixed = tuple(bind(c, v) for c, v in constants.items())
    # A bigger page cache for this connection while it builds the indexes.
    connection.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_IMPORT_CACHE_KIB}")
    placeholders = ", ".join("?" for _ in range(len(columns) + len(constants)))
    statement = f"INSERT INTO {table.name} ({names}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"
    cursor = driver.cursor()
    try:
        for batch in _batches((*row, *fixed) for row in rows):
            cursor.executemany(statement, batch)
    finally:
        cursor.close()
        connection.exec_driver_sql("PRAGMA cache_size = -2000")  # SQLite's default


def _is_json(table: Table, column: str) -> bool:
    return isinstance(table.c[column].type, JSON)


def _json_text(value: Any) -> str:
    return json.dumps(value)


def _json_object(keys: Sequence[str]) -> Callable[[Sequence[str]], str]:
    """`json.dumps(dict(zip(keys, values)))` for string values, without the dict: the
    keys are quoted once (they are distinct: a sheet's headers)."""
    quoted = [f"{_quote(key)}: " for key in keys]

    def encode(values: Sequence[str]) -> str:
        pairs = [key + _quote(value) for key, value in zip(quoted, values, strict=True)]
        return "{" + ", ".join(pairs) + "}"

    return encode


def _copy_value(table: Table, column: str, value: Any) -> Any:
    """A constant as `COPY` takes it (JSON as its text; the rest psycopg adapts)."""
    if value is not None and _is_json(table, column):
        return _json_text(value)
    return value


def _copy_rows(driver: Any, table: str, names: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """`COPY` the rows into `table` a batch at a time, each under a savepoint: a batch
    holding a row a concurrent writer wrote first goes through a temporary table and
    `INSERT ... ON CONFLICT DO NOTHING` instead.

    Binary `COPY`, each column's type fixed up front: psycopg then picks no adapter per
    value and the server parses no text (a third of the time of a text `COPY`). JSON
    columns take their text as it is (json's binary form is its text)."""
    from psycopg.errors import UniqueViolation

    staging = f"staging_{table}"
    staged = False
    with driver.cursor() as cursor:
        types = _copy_types(cursor, table, names)
        # Rows are pulled between COPYs, so producing them may query this connection.
        for batch in _batches(rows):
            try:
                with (
                    driver.transaction(),
                    cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
                ):
                    copy.set_types(types)
                    for values in batch:
                        copy.write_row(values)
                continue
            except UniqueViolation:
                pass
            if not staged:
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS"
                    f" SELECT {names} FROM {table} WITH NO DATA"
                )
                staged = True
            with cursor.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for values in batch:
                    copy.write_row(values)
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging}"
                " ON CONFLICT DO NOTHING"
            )
            cursor.execute(f"TRUNCATE {staging}")


def _copy_types(cursor: Any, table: str, names: str) -> list[int]:
    """The type oids of `table`'s columns `names` (comma-separated), as the server has
    them; a JSON column as text (its value arrives as JSON text already)."""
    cursor.execute(
        "SELECT attname, CASE WHEN atttypid = 'json'::regtype THEN 'text'::regtype::oid"
        " ELSE atttypid END FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,),
    )
    oids = dict(cursor.fetchall())
    return [oids[name] for name in names.split(", ")]


def _batches(rows: Iterable[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows `_BATCH` at a time (the whole sheet is never held twice)."""
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


#: an accepted row as an import writes it: (row, e164, raw, extension, name (cut to
#: its column), zones as JSON text, variables as JSON text): plain strings, cheap to
#: hand to the writer process and for it to take apart
StoredRow = tuple[int, str, str, str | None, str | None, str, str]
#: sheets with fewer rows are written in this process: the writer process costs about a
#: second to start, and measured against the in-process import it gains only from about
#: 150k rows (50k: 2.2 against 1.4 s; 300k: 8.0 against 11.3 s on SQLite, 12 against 15 s
#: on PostgreSQL)
PARALLEL_ROWS = 200_000


class _Encoder:
    """Accepted rows (`ContactRow`) as `StoredRow`s; each distinct zone list is encoded once."""

    def __init__(self, variable_names: Sequence[str]) -> None:
        self._variables = _json_object(variable_names)
        self._zones: dict[tuple[str, ...], str] = {}

    def __call__(self, rows: Iterable[ContactRow]) -> Iterator[StoredRow]:
        variables, zone_texts = self._variables, self._zones
        for number, e164, raw, extension, name, zones, values in rows:
            zone_text = zone_texts.get(zones)
            if zone_text is None:
                zone_text = zone_texts[zones] = _json_text(zones)
            cut = name[:200] if name else None  # the column's length
            yield (number, e164, raw, extension, cut, zone_text, variables(values))


def import_sheet(
    ledger: Ledger,
    sheet: Sheet,
    *,
    campaign: str,
    region: str | None,
    default_region: str,
    phone_column: str | None = None,
    progress: Progress | None = None,
    parallel: bool | None = None,
) -> tuple[ImportSummary, SheetResult]:
    """Check a sheet against the do-not-call list and import it into a campaign.

    The region is the one given, else the existing campaign's, else `default_region`.
    A sheet of `PARALLEL_ROWS` or more, given two CPUs or more (or any sheet, with
    `parallel`; none with `parallel=False`), is written by a child process
    (`import_writer`) while this one checks the rest of it: the same rows, in the same
    one transaction, on a second core.
    """
    check_campaign_name(campaign)  # before the sheet is read
    region_code = check_region(region or campaign_region(ledger, campaign) or default_region)
    with ledger.session() as session:
        dnc = dnc_set(session)
    source = str(Path(sheet.source).resolve())
    if parallel is None:
        parallel = len(sheet) >= PARALLEL_ROWS and _cpus() >= 2
    if not parallel or _in_memory(ledger):
        result = validate_sheet(
            sheet, region=region_code, phone_column=phone_column, dnc=dnc, progress=progress
        )
        return import_contacts(ledger, campaign, result, source), result
    with ImportWriter(ledger.url, campaign, region_code, source) as writer:
        encoders: list[_Encoder] = []

        def hand_on(variable_names: Sequence[str], rows: list[ContactRow]) -> None:
            if not encoders:
                encoders.append(_Encoder(variable_names))
            writer.send(list(encoders[0](rows)))

        result = validate_sheet(
            sheet,
            region=region_code,
            phone_column=phone_column,
            dnc=dnc,
            progress=progress,
            accepted_rows=hand_on,
        )
        counts = writer.finish(_sheet_rejections(result))
    return _summary(campaign, source, result, counts), result


def _cpus() -> int:
    """The CPUs this process may run on (a writer process on the same one only adds work)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _in_memory(ledger: Ledger) -> bool:
    """Whether the ledger lives in this process only (no other process can write it)."""
    url = ledger.engine.url
    return url.get_backend_name() == "sqlite" and (url.database or ":memory:") == ":memory:"


def import_contacts(
    ledger: Ledger, campaign_name: str, result: SheetResult, source: str
) -> ImportSummary:
    """Write a checked sheet into a campaign: new contacts, plus this source's rejections.

    Contacts are keyed on (campaign, E.164): a number the campaign already has is
    counted, not written again, so importing a sheet twice changes nothing. The
    do-not-call list is applied here too. Rejections of `source` replace those of
    its previous import.
    """
    rows = _Encoder(result.accepted.variable_names)(result.accepted.rows())
    with ledger.session() as session:
        counts = write_import(
            session, campaign_name, result.region, source, rows, lambda: _sheet_rejections(result)
        )
    return _summary(campaign_name, source, result, counts)


def _sheet_rejections(result: SheetResult) -> list[dict[str, Any]]:
    """The sheet's rejected and duplicate rows as `rejections` rows (without the
    campaign, source and time, which the write adds)."""
    rows = [
        {
            "source_row": rejected.row,
            "raw": rejected.raw,
            "reason": rejected.reason.value,
            "e164": rejected.e164,
            "cells": rejected.cells,
        }
        for rejected in result.rejected
    ]
    rows += [
        {
            "source_row": duplicate.row,
            "raw": duplicate.raw,
            "reason": DUPLICATE_REASON,
            "e164": duplicate.e164,
            "duplicate_of_row": duplicate.duplicate_of_row,
            "cells": {},
        }
        for duplicate in result.duplicates
    ]
    return rows


def write_import(
    session: Session,
    campaign_name: str,
    region: str,
    source: str,
    rows: Iterable[StoredRow],
    sheet_rejections: Callable[[], list[dict[str, Any]]],
) -> ImportCounts:
    """An import's whole write, in the session's transaction: the campaign (created when
    new), the accepted rows streamed in as new contacts, then `sheet_rejections()` (read
    once the rows are exhausted) replacing `source`'s earlier rejections."""
    campaign = get_or_create_campaign(session, campaign_name, region)
    dnc = dnc_set(session)
    # the campaign's numbers before this import (a sheet's accepted rows are distinct),
    # streamed: a million buffered rows would cost more than the set they fill
    existing = set(
        session.scalars(
            select(Contact.e164)
            .where(Contact.campaign_id == campaign.id, Contact.is_test.is_(False))
            .execution_options(yield_per=_BATCH)
        )
    )
    now = utcnow()
    rejections: list[dict[str, Any]] = []
    counts = ImportCounts()
    #: a contact's zones as JSON text -> its zone set's id
    zoned: dict[str, int] = {}

    def new_contacts() -> Iterator[tuple[Any, ...]]:
        # Streamed: each accepted row becomes one tuple on its way to the driver.
        for number, e164, raw, extension, name, zones, variables in rows:
            if e164 in dnc:
                # accepted by the sheet check, but listed since (or the check had no list)
                counts.dnc += 1
                rejections.append(
                    {
                        "source_row": number,
                        "raw": raw,
                        "reason": Reason.DO_NOT_CALL.value,
                        "e164": e164,
                        "cells": json.loads(variables),
                    }
                )
                continue
            if e164 in existing:
                counts.already += 1
                continue
            zone_set_id = zoned.get(zones)
            if zone_set_id is None:
                key = zone_key(json.loads(zones))
                zone_set_id = zoned[zones] = zone_set_ids(session, [key])[key]
            counts.new += 1
            yield (e164, raw, extension, name, zones, zone_set_id, variables, number)

    constants = {
        "campaign_id": campaign.id,
        "source": source,
        "status": ContactStatus.PENDING.value,
        "attempts_count": 0,
        "is_test": False,
        "due_at": now,  # due since its import
        "created_at": now,
        "updated_at": now,
    }
    contacts = cast(Table, Contact.__table__)
    _bulk_insert(session, contacts, _CONTACT_COLUMNS, new_contacts(), constants)
    rejections += sheet_rejections()
    for rejection in rejections:
        rejection.update(campaign_id=campaign.id, source=source, created_at=now)
    session.execute(
        delete(Rejection).where(Rejection.campaign_id == campaign.id, Rejection.source == source)
    )
    _insert_ignoring_conflicts(session, Rejection, rejections)
    campaign.updated_at = now
    return counts


def _summary(
    campaign: str, source: str, result: SheetResult, counts: ImportCounts
) -> ImportSummary:
    summary = ImportSummary(
        campaign=campaign,
        source=source,
        rows=result.rows,
        new=counts.new,
        already_present=counts.already,
        duplicates=len(result.duplicates),
        rejected=len(result.rejected) + counts.dnc,
        dnc=counts.dnc + sum(1 for item in result.rejected if item.reason == Reason.DO_NOT_CALL),
    )
    logger.info(
        "imported %s into %s: %d new, %d already present, %d duplicates, %d rejected",
        source,
        campaign,
        summary.new,
        summary.already_present,
        summary.duplicates,
        summary.rejected,
    )
    return summary


def campaign_counts(session: Session) -> list[CampaignCounts]:
    """Every campaign with its contact counts by status and its rejection count."""
    by_status: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(Contact.campaign_id, Contact.status, func.count())
        .where(Contact.is_test.is_(False))  # test calls' contacts are not the campaign's
        .group_by(Contact.campaign_id, Contact.status)
    )
    for campaign_id, status, count in rows:
        by_status.setdefault(campaign_id, {})[status] = count
    rejections: dict[int, int] = {
        campaign_id: count
        for campaign_id, count in session.execute(
            select(Rejection.campaign_id, func.count()).group_by(Rejection.campaign_id)
        )
    }
    counts = []
    for campaign in session.scalars(select(Campaign).order_by(Campaign.created_at, Campaign.id)):
        statuses = by_status.get(campaign.id, {})
        counts.append(
            CampaignCounts(
                name=campaign.name,
                region=campaign.region,
                status=campaign.status,
                created_at=campaign.created_at,
                contacts=sum(statuses.values()),
                rejections=rejections.get(campaign.id, 0),
                by_status=statuses,
            )
        )
    return counts


# --------------------------------------------------------------------------- do-not-call


def add_dnc(
    session: Session, numbers: Iterable[str], *, source: str = "manual", note: str | None = None
) -> DncAddResult:
    """Put E.164 numbers on the do-not-call list (idempotent)."""
    wanted = list(dict.fromkeys(numbers))
    listed = _listed(session, wanted)
    new = [number for number in wanted if number not in listed]
    now = utcnow()
    _insert_ignoring_conflicts(
        session,
        DncEntry,
        [{"e164": number, "source": source, "note": note, "added_at": now} for number in new],
    )
    return DncAddResult(added=len(new), already_listed=len(wanted) - len(new))


def _listed(session: Session, numbers: Sequence[str]) -> set[str]:
    listed: set[str] = set()
    for start in range(0, len(numbers), _BATCH):
        chunk = numbers[start : start + _BATCH]
        listed.update(session.scalars(select(DncEntry.e164).where(DncEntry.e164.in_(chunk))))
    return listed


def remove_dnc(session: Session, numbers: Iterable[str]) -> int:
    """Take numbers off the list; returns how many were on it."""
    wanted = list(dict.fromkeys(numbers))
    removed = 0
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        removed += len(_listed(session, chunk))
        session.execute(delete(DncEntry).where(DncEntry.e164.in_(chunk)))
    return removed


def is_dnc(session: Session, e164: str) -> bool:
    """Whether a number is on the do-not-call list (checked right before each dial)."""
    return session.get(DncEntry, e164) is not None


def dnc_set(session: Session) -> set[str]:
    """The whole do-not-call list, for applying it to a sheet."""
    return set(session.scalars(select(DncEntry.e164)))


def dnc_entries(session: Session) -> Iterator[DncEntry]:
    """The list in the order numbers were added."""
    yield from session.scalars(select(DncEntry).order_by(DncEntry.added_at, DncEntry.e164))
