"""The `dialer` command. Thin on purpose: parse options, call one function, print.

Each command is one function; output helpers sit at the bottom. Errors the user
can fix (`campaign.errors.UserError`: a bad sheet, settings, an unreachable ledger)
print one red line and exit with the error's own code, never a traceback. Every CSV
written here goes through the workbook's `safe_text` gate, so no cell is a formula.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from dotenv import load_dotenv
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from campaign import preflight, runner
from campaign.call import call_number
from campaign.config import SettingsError, get_settings
from campaign.contacts import (
    Progress as ProgressCallback,
)
from campaign.contacts import (
    Reason,
    SheetError,
    SheetResult,
    check_region,
    normalise_number,
    read_sheet,
    validate_sheet,
)
from campaign.errors import UserError
from campaign.live_view import status_table
from campaign.report import safe_text, write_report
from campaign.scheduler import RunResult, ScheduleView, campaign_scheduler
from campaign.store import Ledger, LedgerError, open_ledger
from campaign.store import imports as import_store
from campaign.store.db import DRIVER_ERRORS

app = typer.Typer(
    name="dialer",
    help="Outbound campaign dialer for AI voice agents on LiveKit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dnc_app = typer.Typer(help="The do-not-call list (applied at import and before each dial).")
app.add_typer(dnc_app, name="dnc", no_args_is_help=True)
schedule_app = typer.Typer(help="Nightly campaign runs, fired by `dialer scheduler`.")
app.add_typer(schedule_app, name="schedule", no_args_is_help=True)

# Piped output (scripts, logs, tests) is not wrapped at 80 columns: a long path stays one line.
# Markup only where a line asks for it (`markup=True`): sheet cells, notes and names
# are printed as they are (a cell "[/x]" is text, not a broken tag).
out = Console(highlight=False, markup=False, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=not sys.stderr.isatty())

#: sheets with more rows than this get a progress bar
PROGRESS_ROWS = 10_000
#: problem rows listed by the table output before "... and N more"
TABLE_LIMIT = 50
DEFAULT_REGION = "US"


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class DoctorFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


DbOption = Annotated[
    str | None, typer.Option("--db", help="Ledger URL; default: DIALER_DATABASE_URL.")
]
RegionOption = Annotated[
    str | None,
    typer.Option("--region", help="Default region (ISO code: US, GB, ...) for numbers without +."),
]
PhoneColumnOption = Annotated[
    str | None,
    typer.Option("--phone-column", help="Phone column by header, letter (B) or number (2)."),
]
SheetOption = Annotated[
    str | None, typer.Option("--sheet", help="Excel sheet to read (default: the first).")
]
FileArgument = Annotated[Path, typer.Argument(help="CSV, XLSX or XLS file.", show_default=False)]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Our own errors become one red line and their exit code instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            fail(str(exc), code=exc.exit_code)
        except DRIVER_ERRORS as exc:  # the ledger failed mid-command
            cause = getattr(exc, "orig", None) or exc
            fail(f"the ledger failed: {str(cause).splitlines()[0]}", code=LedgerError.exit_code)

    return wrapper


# --------------------------------------------------------------------------- commands


@app.command()
@friendly_errors
def check(
    file: FileArgument,
    region: RegionOption = None,
    phone_column: PhoneColumnOption = None,
    sheet: SheetOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Check a contact sheet: which rows are dialable and why the rest are not. Writes nothing."""
    region_code = check_region(region or DEFAULT_REGION)
    try:
        with _reading(file):
            data = read_sheet(file, sheet=sheet)
        with _progress(len(data)) as progress:
            result = validate_sheet(
                data, region=region_code, phone_column=phone_column, progress=progress
            )
    except SheetError as exc:
        if output is OutputFormat.JSON:  # scripts read stdout: the refusal is there too
            _print_json({"source": str(file), "errors": [{"line": exc.line, "message": str(exc)}]})
        raise
    _emit(
        output,
        as_json=result.to_json,
        as_csv=lambda: _check_csv(result),
        as_table=lambda: _print_check_table(result),
    )


@app.command("import")
@friendly_errors
def import_(
    file: FileArgument,
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign name (created if new).")],
    region: RegionOption = None,
    phone_column: PhoneColumnOption = None,
    sheet: SheetOption = None,
    db: DbOption = None,
) -> None:
    """Import a contact sheet into a campaign (idempotent: numbers are keyed on E.164)."""
    ledger = _ledger(db)
    with _reading(file):
        data = read_sheet(file, sheet=sheet)
    with _progress(len(data)) as progress:
        summary, result = import_store.import_sheet(
            ledger,
            data,
            campaign=campaign,
            region=region,
            default_region=DEFAULT_REGION,
            phone_column=phone_column,
            progress=progress,
        )
    _print_import_summary(summary, result)


@app.command()
@friendly_errors
def campaigns(db: DbOption = None, output: FormatOption = OutputFormat.TABLE) -> None:
    """List campaigns with their contact counts."""
    ledger = _ledger(db)
    with ledger.session() as session:
        counts = import_store.campaign_counts(session)
    _emit(
        output,
        as_json=lambda: [_jsonable(vars_of(count)) for count in counts],
        as_csv=lambda: (
            ["name", "region", "status", "contacts", "rejections", "by_status"],
            (
                [
                    count.name,
                    count.region,
                    count.status,
                    count.contacts,
                    count.rejections,
                    ";".join(f"{k}={v}" for k, v in sorted(count.by_status.items())),
                ]
                for count in counts
            ),
        ),
        as_table=lambda: _print_campaigns_table(counts),
    )


def _print_campaigns_table(counts: Sequence[import_store.CampaignCounts]) -> None:
    if not counts:
        out.print("No campaigns yet. Create one with: dialer import FILE --campaign NAME")
        return
    table = Table("Campaign", "Region", "Status", "Contacts", "By status", "Rejected", "Created")
    for count in counts:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(count.by_status.items()))
        table.add_row(
            count.name,
            count.region,
            count.status,
            str(count.contacts),
            statuses or "-",
            str(count.rejections),
            count.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@dnc_app.command("add")
@friendly_errors
def dnc_add(
    numbers: Annotated[list[str], typer.Argument(help="Numbers to list.", show_default=False)],
    region: RegionOption = None,
    note: Annotated[str | None, typer.Option("--note", help="Why (kept with the entry).")] = None,
    db: DbOption = None,
) -> None:
    """Put numbers on the do-not-call list."""
    region_code = check_region(region or DEFAULT_REGION)
    parsed = [normalise_number(number, region_code) for number in numbers]
    bad = [item.raw for item in parsed if item.e164 is None or item.reason is Reason.INVALID]
    if bad:
        raise SheetError(f"not a valid phone number: {', '.join(repr(raw) for raw in bad)}")
    ledger = _ledger(db)
    with ledger.session() as session:
        added = import_store.add_dnc(
            session, [item.e164 for item in parsed if item.e164], note=note
        )
    out.print(f"Added {added.added} number(s); {added.already_listed} already listed.")


@dnc_app.command("import")
@friendly_errors
def dnc_import(
    file: FileArgument,
    region: RegionOption = None,
    phone_column: PhoneColumnOption = None,
    sheet: SheetOption = None,
    db: DbOption = None,
) -> None:
    """Put every number of a sheet on the do-not-call list."""
    region_code = check_region(region or DEFAULT_REGION)
    ledger = _ledger(db)
    with _reading(file):
        data = read_sheet(file, sheet=sheet)
    with _progress(len(data)) as progress:
        result = validate_sheet(
            data, region=region_code, phone_column=phone_column, progress=progress
        )
    numbers = result.numbers()
    with ledger.session() as session:
        added = import_store.add_dnc(session, numbers, source="import", note=Path(file).name)
    unreadable = len(result.rows_without_number())
    out.print(
        f"Added {added.added} number(s) from {file}; {added.already_listed} already listed;"
        f" {unreadable} row(s) without a valid number."
    )


@dnc_app.command("remove")
@friendly_errors
def dnc_remove(
    numbers: Annotated[list[str], typer.Argument(help="Numbers to take off.", show_default=False)],
    region: RegionOption = None,
    db: DbOption = None,
) -> None:
    """Take numbers off the do-not-call list."""
    region_code = check_region(region or DEFAULT_REGION)
    e164s = [normalise_number(number, region_code).e164 or number for number in numbers]
    ledger = _ledger(db)
    with ledger.session() as session:
        removed = import_store.remove_dnc(session, e164s)
    out.print(f"Removed {removed} number(s).")


@dnc_app.command("list")
@friendly_errors
def dnc_list(db: DbOption = None, output: FormatOption = OutputFormat.TABLE) -> None:
    """Show the do-not-call list."""
    ledger = _ledger(db)
    with ledger.session() as session:
        entries: list[dict[str, Any]] = [
            {
                "e164": entry.e164,
                "source": entry.source,
                "note": entry.note,
                "added_at": entry.added_at.isoformat(),
            }
            for entry in import_store.dnc_entries(session)
        ]
    fields = ["e164", "source", "note", "added_at"]
    _emit(
        output,
        as_json=lambda: entries,
        as_csv=lambda: (fields, ([entry[name] for name in fields] for entry in entries)),
        as_table=lambda: _print_dnc_table(entries),
    )


def _print_dnc_table(entries: list[dict[str, Any]]) -> None:
    if not entries:
        out.print("The do-not-call list is empty.")
        return
    table = Table("Number", "Source", "Added", "Note")
    for item in entries:
        table.add_row(item["e164"], item["source"], item["added_at"][:16], item["note"] or "")
    out.print(table)
    out.print(f"{len(entries)} number(s).")


# --------------------------------------------------------------------------- dialing

NameArgument = Annotated[str, typer.Argument(help="Campaign name.", show_default=False)]


@app.command()
@friendly_errors
def run(
    campaign_file: Annotated[
        Path, typer.Argument(help="The campaign file (campaigns/NAME.yaml).", show_default=False)
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="Claim nothing from this time: HH:MM or ISO.")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", min=1, help="Stop after N attempts.")
    ] = None,
    max_wait: Annotated[
        str,
        typer.Option(
            "--max-wait",
            help="Wait at most this long for the next due contact, or for a part that is down.",
        ),
    ] = "15m",
    db: DbOption = None,
) -> None:
    """Run a campaign until nothing is due or dialable. Ctrl-C drains; twice hangs up."""
    report = runner.run_file(
        campaign_file, db=db, until=until, max_attempts=max_attempts, max_wait=max_wait
    )
    out.print(status_table(report.summary))
    retry = f"dialer report {report.summary.name}"
    workbook = report.workbook or f"not written (see the error above; retry: {retry})"
    out.print(f"{report.stats.stop_reason}; workbook: {workbook}")


@app.command()
@friendly_errors
def doctor(
    campaign_file: Annotated[
        Path | None,
        typer.Argument(
            help="Also check this campaign file, its sheets and hours.", show_default=False
        ),
    ] = None,
    db: DbOption = None,
    output: Annotated[
        DoctorFormat, typer.Option("--format", help="Output format.")
    ] = DoctorFormat.TEXT,
) -> None:
    """Check everything a campaign needs, one line per check; exit 1 if any fails."""
    report = preflight.doctor(campaign_file, db=db)
    if output is DoctorFormat.JSON:
        _print_json(report.to_json())
    else:
        _print_doctor(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def call(
    number: Annotated[str, typer.Argument(help="The number to call.", show_default=False)],
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="Call as this stored campaign would.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Call as this campaign file would.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The callee's name.")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="A script variable, key=value (repeatable).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Place one test call the campaign's way, live; recorded as a test call."""
    report = call_number(
        number,
        campaign=campaign,
        config_file=config,
        name=name,
        variables=var,
        db=db,
        on_event=lambda at, text: out.print(f"{at:6.1f} s  {text}"),
    )
    out.print(f"[bold]Test call to {report.masked}[/bold]", markup=True)
    for line in report.lines():
        out.print(line)


@app.command()
@friendly_errors
def status(name: NameArgument, db: DbOption = None) -> None:
    """Where a campaign stands, from the ledger (works while it runs elsewhere)."""
    out.print(status_table(runner.status(_ledger(db), name)))


def _control(action: str, name: str, db: str | None) -> None:
    out.print(runner.control(_ledger(db), name, action))


@app.command()
@friendly_errors
def pause(name: NameArgument, db: DbOption = None) -> None:
    """Stop claiming new contacts; calls in flight finish."""
    _control("pause", name, db)


@app.command()
@friendly_errors
def resume(name: NameArgument, db: DbOption = None) -> None:
    """Claim again after a pause; after a cancel, reopen the contacts it closed."""
    _control("resume", name, db)


@app.command()
@friendly_errors
def cancel(name: NameArgument, db: DbOption = None) -> None:
    """Hang up calls in flight and close every contact still waiting."""
    _control("cancel", name, db)


@app.command()
@friendly_errors
def report(
    name: NameArgument,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Workbook path; default: <reports dir>/<campaign>-<YYYYMMDD-HHMM>.xlsx."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the campaign workbook: summary, contacts, attempts, turns, rejected rows, charts."""
    path = write_report(_ledger(db), name, out_path)
    out.print(f"Workbook: {path}")


CampaignsDirOption = Annotated[
    Path, typer.Option("--campaigns-dir", help="Folder of <campaign>.yaml files and inboxes.")
]


@schedule_app.command("add")
@friendly_errors
def schedule_add(
    campaign: Annotated[str, typer.Argument(help="Campaign name (campaigns/<name>.yaml).")],
    cron: Annotated[str, typer.Option("--cron", help='Crontab, e.g. "0 19 * * 1-5".')],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone, e.g. America/New_York.")],
    grace: Annotated[
        int, typer.Option("--grace", min=1, help="Minutes late a run may still start.")
    ] = 60,
    campaigns_dir: CampaignsDirOption = Path("campaigns"),
    db: DbOption = None,
) -> None:
    """Run a campaign on a cron schedule."""
    service = campaign_scheduler(get_settings(), database_url=db, campaigns_dir=campaigns_dir)
    view = service.add(campaign, cron, tz, timedelta(minutes=grace))
    out.print(f"Schedule {view.id} added: {_schedule_line(view)}")


@schedule_app.command("list")
@friendly_errors
def schedule_list(
    campaigns_dir: CampaignsDirOption = Path("campaigns"), db: DbOption = None
) -> None:
    """Show the schedules, their next and last runs."""
    service = campaign_scheduler(get_settings(), database_url=db, campaigns_dir=campaigns_dir)
    views = service.schedules()
    if not views:
        out.print(
            'No schedules. Add one with: dialer schedule add NAME --cron "0 19 * * 1-5" --tz ZONE'
        )
        return
    table = Table("ID", "Campaign", "Cron", "Time zone", "Grace", "Next run", "Last run")
    for view in views:
        last = view.last_run
        table.add_row(
            str(view.id),
            view.campaign,
            view.cron,
            view.timezone,
            f"{view.misfire_grace.total_seconds() / 60:.0f} min",
            f"{view.next_run:%Y-%m-%d %H:%M %Z}" if view.next_run else Text("no job", "red"),
            f"{last.status} {last.started_at.astimezone():%Y-%m-%d %H:%M}" if last else "-",
        )
    out.print(table)


@schedule_app.command("remove")
@friendly_errors
def schedule_remove(
    schedule_id: Annotated[int, typer.Argument(help="ID from `dialer schedule list`.")],
    campaigns_dir: CampaignsDirOption = Path("campaigns"),
    db: DbOption = None,
) -> None:
    """Remove a schedule (a run in progress finishes)."""
    service = campaign_scheduler(get_settings(), database_url=db, campaigns_dir=campaigns_dir)
    service.remove(schedule_id)
    out.print(f"Schedule {schedule_id} removed.")


@schedule_app.command("run-now")
@friendly_errors
def schedule_run_now(
    campaign: Annotated[str, typer.Argument(help="Campaign name (campaigns/<name>.yaml).")],
    campaigns_dir: CampaignsDirOption = Path("campaigns"),
    db: DbOption = None,
) -> None:
    """Do a scheduled run now, in the foreground: import what is new, dial, write the workbook."""
    service = campaign_scheduler(get_settings(), database_url=db, campaigns_dir=campaigns_dir)
    result = service.run_now(campaign)
    _print_run(result)


@app.command("scheduler")
@friendly_errors
def scheduler_(campaigns_dir: CampaignsDirOption = Path("campaigns"), db: DbOption = None) -> None:
    """Fire the schedules (long-running; SIGTERM lets calls in flight finish, then exits 0)."""
    campaign_scheduler(get_settings(), database_url=db, campaigns_dir=campaigns_dir).serve()


# --------------------------------------------------------------------------- the desk
# (imported where used: the desk's modules load FastAPI and argon2, which nothing else needs)

user_app = typer.Typer(help="Users of the desk (`dialer serve`) and the HTTP API.")
app.add_typer(user_app, name="user", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (`Authorization: Bearer ...`), with their user's role.")
app.add_typer(token_app, name="token", no_args_is_help=True)


@app.command()
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Default: DESK_HOST.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default: DESK_PORT.")] = None,
    no_runner: Annotated[
        bool, typer.Option("--no-runner", help="Serve pages and API only; dial nothing.")
    ] = False,
    campaigns_dir: CampaignsDirOption = Path("campaigns"),
    db: DbOption = None,
) -> None:
    """The desk: web pages, the HTTP API, and the runner for scheduled and started campaigns."""
    from campaign.web.server import serve as serve_desk

    serve_desk(
        get_settings(),
        database_url=db,
        campaigns_dir=campaigns_dir,
        host=host,
        port=port,
        runner=not no_runner,
    )


@user_app.command("add")
@friendly_errors
def user_add(
    name: Annotated[str, typer.Argument(help="The sign-in name.", show_default=False)],
    role: Annotated[
        str, typer.Option("--role", help="operator (runs campaigns) or viewer (reads).")
    ] = "viewer",
    password: Annotated[
        str | None, typer.Option("--password", help="Default: asked for, twice, unechoed.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Add a user of the desk; the password is stored as an argon2 hash."""
    from campaign.store import users

    secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    users.add_user(_ledger(db), name, secret, role)
    out.print(f"User {name} added ({role}).")


@user_app.command("list")
@friendly_errors
def user_list(db: DbOption = None) -> None:
    """Show the desk's users and their roles."""
    from campaign.store import users

    found = users.list_users(_ledger(db))
    if not found:
        out.print("No users. Add one with: dialer user add NAME --role operator")
        return
    table = Table("User", "Role", "Added")
    for name, role, created in found:
        table.add_row(name, role.value, f"{created.astimezone():%Y-%m-%d %H:%M}")
    out.print(table)


@token_app.command("create")
@friendly_errors
def token_create(
    user: Annotated[str, typer.Option("--user", help="Whose token (it has their role).")],
    label: Annotated[str, typer.Option("--label", help="What it is for (e.g. crm).")] = "",
    db: DbOption = None,
) -> None:
    """Create an API token; it is printed once and only its hash is kept."""
    from campaign.store import users

    token = users.create_token(_ledger(db), user, label)
    typer.echo(token)
    err.print("Keep it now: it is not shown again. Send it as `Authorization: Bearer <token>`.")


@token_app.command("revoke")
@friendly_errors
def token_revoke(
    user: Annotated[str, typer.Option("--user", help="Whose tokens to delete.")],
    db: DbOption = None,
) -> None:
    """Delete every API token of a user."""
    from campaign.store import users

    removed = users.revoke_tokens(_ledger(db), user)
    out.print(f"Revoked {removed} token(s) of {user}.")


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console-script entry point: environment, logging, then the command."""
    load_dotenv()
    try:
        level = get_settings().log_level
    except SettingsError as exc:
        # Outside typer's own handling: print the line and exit here, or Python prints
        # a traceback for the `Exit` exception.
        err.print(f"[red]error:[/red] {rich_escape(str(exc))}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )
    # Alembic narrates every migration step at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    app()


# --------------------------------------------------------------------------- helpers


def fail(message: str, *, code: int = 1) -> NoReturn:
    """One red line on stderr, then exit."""
    one_line = " ".join(message.split())
    err.print(f"[red]error:[/red] {rich_escape(one_line)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _emit(
    output: OutputFormat,
    *,
    as_json: Callable[[], Any],
    as_csv: Callable[[], tuple[Sequence[str], Iterable[Sequence[Any]]]],
    as_table: Callable[[], None],
) -> None:
    """A listing in the `--format` asked for: every command's table / json / csv branch."""
    if output is OutputFormat.JSON:
        _print_json(as_json())
    elif output is OutputFormat.CSV:
        _print_csv(*as_csv())
    else:
        as_table()


def _print_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """CSV on stdout; every text cell passes the workbook's gate (`report.safe_text`)."""
    writer = csv.writer(sys.stdout)
    writer.writerow(header)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)


def _csv_cell(value: Any) -> Any:
    """Text a spreadsheet would read as a formula gets Excel's own text mark, an apostrophe."""
    if not isinstance(value, str):
        return value
    safe = safe_text(value)
    return "'" + safe.text if safe.quoted else safe.text


def _ledger(db: str | None) -> Ledger:
    return open_ledger(db or get_settings().database_url)


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    with err.status(f"Reading {file} ..."):
        yield


@contextmanager
def _progress(rows: int) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr for big sheets (stdout may carry JSON)."""
    if rows <= PROGRESS_ROWS:
        yield None
        return
    bar = Progress(
        TextColumn("Checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("rows", total=rows)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


def vars_of(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__dataclass_fields__}


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False))


def _check_csv(result: SheetResult) -> tuple[list[str], Iterable[list[Any]]]:
    rows: list[tuple[int, list[Any]]] = []
    for c in result.accepted:
        zones = " ".join(c.timezones)
        rows.append((c.row, [c.row, "accepted", c.e164, c.raw, "", "", c.name, zones, c.extension]))
    for d in result.duplicates:
        rows.append((d.row, [d.row, "duplicate", d.e164, d.raw, "", d.duplicate_of_row]))
    for r in result.rejected:
        rows.append((r.row, [r.row, "rejected", r.e164, r.raw, r.reason.value]))
    return (
        ["row", "status", "e164", "raw", "reason", "duplicate_of_row", "name", "timezones", "ext"],
        (row for _, row in sorted(rows, key=lambda item: item[0])),
    )


def _print_check_table(result: SheetResult) -> None:
    columns = result.columns
    out.print(f"[bold]{rich_escape(result.source)}[/bold]  region {result.region}", markup=True)
    found = ", ".join(f"{k}: {v}" for k, v in columns.items() if v)
    out.print(f"columns  {found}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.reasons().items()))
    out.print(
        f"rows {result.rows}  [green]accepted {len(result.accepted)}[/green]"
        f"  duplicates {len(result.duplicates)}"
        f"  [red]rejected {len(result.rejected)}[/red]" + (f" ({reasons})" if reasons else ""),
        markup=True,
    )
    problems = [(r.row, r.raw, r.reason.value) for r in result.rejected]
    problems += [
        (d.row, d.raw, f"duplicate of row {d.duplicate_of_row}") for d in result.duplicates
    ]
    problems += [(row, "", message) for row, message in result.warnings]
    if not problems:
        return
    problems.sort(key=lambda item: item[0])
    table = Table("Row", "Cell", "Problem")
    for row, raw, problem in problems[:TABLE_LIMIT]:
        table.add_row(str(row), raw, problem)
    out.print(table)
    if len(problems) > TABLE_LIMIT:
        out.print(f"... and {len(problems) - TABLE_LIMIT} more (use --format csv for all)")


def _print_import_summary(summary: import_store.ImportSummary, result: SheetResult) -> None:
    out.print(
        f"[bold]{rich_escape(summary.campaign)}[/bold] <- {rich_escape(summary.source)}",
        markup=True,
    )
    out.print(
        f"rows {summary.rows}  [green]new {summary.new}[/green]"
        f"  already in campaign {summary.already_present}"
        f"  duplicates {summary.duplicates}  [red]rejected {summary.rejected}[/red]"
        f" (do-not-call {summary.dnc})",
        markup=True,
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.reasons().items()))
    if reasons:
        out.print(f"rejected by reason: {reasons}  (see `dialer check` for the rows)")


_DOCTOR_MARKS = {
    preflight.Status.PASS: "[green]PASS[/green]",
    preflight.Status.WARN: "[yellow]WARN[/yellow]",
    preflight.Status.FAIL: "[red]FAIL[/red]",
    preflight.Status.SKIP: "[dim]SKIP[/dim]",
}


def _print_doctor(report: preflight.DoctorReport) -> None:
    for check in report.checks:
        line = f"{_DOCTOR_MARKS[check.status]}  {check.name:<14}{rich_escape(check.detail)}"
        if check.fix:
            line += f" — [bold]fix:[/bold] {rich_escape(check.fix)}"
        out.print(line, markup=True, soft_wrap=True)
    statuses = Counter(check.status for check in report.checks)
    warned = (
        f"; {statuses[preflight.Status.WARN]} warning(s)" if statuses[preflight.Status.WARN] else ""
    )
    failed = statuses[preflight.Status.FAIL]
    out.print(f"{failed} check(s) failed{warned}." if failed else f"All checks passed{warned}.")


def _schedule_line(view: ScheduleView) -> str:
    next_run = f"{view.next_run:%Y-%m-%d %H:%M %Z}" if view.next_run else "none"
    return f"campaign {view.campaign}, {view.cron!r} in {view.timezone}; next run {next_run}"


def _print_run(result: RunResult) -> None:
    if result.status in ("done", "interrupted"):
        out.print(result.line())
        return
    fail(result.line(), code=1)
