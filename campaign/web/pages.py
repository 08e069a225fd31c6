"""The desk's pages: server-rendered Jinja2 (autoescaped), one small vendored script.

Every form posts back with the session's CSRF token (`csrf_token` field); every
change needs an operator. Times are written as UTC `<time>` elements that
`desk.js` shows in the viewer's zone; a contact's own local time sits beside.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import UploadFile

from campaign import runner
from campaign.contacts import SheetError
from campaign.contract import Script
from campaign.errors import UserError
from campaign.store import desk as desk_store
from campaign.store import imports as import_store
from campaign.store import users as user_store
from campaign.store.users import Principal
from campaign.web import actions, api, charts, forms, sheets, views
from campaign.web.actions import Desk, DeskError
from campaign.web.security import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    login_token_matches,
    new_login_token,
    require_operator,
    require_user,
)

router = APIRouter(include_in_schema=False)
User = Annotated[Principal, Depends(require_user)]
Operator = Annotated[Principal, Depends(require_operator)]
DeskDep = Annotated[Desk, Depends(api.desk_of)]
FLASH_COOKIE = "desk_flash"
PER_PAGE = 25
LOGIN_WINDOW = timedelta(minutes=15)
#: failed sign-ins from one address, across names, allowed per window: this many times
#: DESK_LOGIN_ATTEMPTS (an office behind one NAT shares an address)
ADDRESS_FACTOR = 4
_ERRORS = (DeskError, forms.FormErrors, UserError)

_env = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _utc(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


_env.filters["utc"] = _utc
_env.filters["iso"] = views.iso
_env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.0f}%"
_env.globals["local_time"] = views.local_time
_env.globals["quote"] = lambda v: quote(str(v), safe="")
_env.filters["unquote"] = lambda v: unquote(v or "")  # the flash cookie is percent-encoded


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    flash = request.cookies.get(FLASH_COOKIE)
    body = _env.get_template(template).render(
        user=principal,
        csrf=principal.csrf_token if principal else "",
        csrf_field=CSRF_FIELD,
        flash=flash,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(body, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def back(url: str, message: str | None = None) -> RedirectResponse:
    """303 to a page, with a one-time message shown there."""
    response = RedirectResponse(url, status_code=303)
    if message:
        response.set_cookie(
            FLASH_COOKIE, quote(message[:300]), httponly=True, samesite="lax", path="/"
        )
    return response


def error_page(request: Request, status: int, detail: Any) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, detail=str(detail))


# --------------------------------------------------------------------------- sign-in


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login")
def login_page(request: Request, error: str | None = None) -> HTMLResponse:
    # Reused while it lasts: a second sign-in page (another tab, a favicon redirect) must not
    # make the first one's form stale.
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_token()
    response = render(request, "login.html", login_csrf=token, error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )
    return response


@router.post("/login")
def login(
    request: Request,
    desk: DeskDep,
    name: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    login_csrf: Annotated[str, Form()] = "",
) -> Response:
    if not login_token_matches(request, login_csrf):
        raise HTTPException(403, "the sign-in form is stale; reload the page")
    limit = desk.settings.desk_login_attempts
    address = f"ip:{request.client.host}" if request.client else None
    too_many = user_store.recent_failures(desk.ledger, name, LOGIN_WINDOW) >= limit or (
        address is not None
        and user_store.recent_failures(desk.ledger, address, LOGIN_WINDOW) >= limit * ADDRESS_FACTOR
    )
    if too_many:
        return render(
            request,
            "login.html",
            status=429,
            login_csrf=login_csrf,
            error="Too many failed sign-ins; wait 15 minutes.",
        )
    principal = user_store.check_password(desk.ledger, name, password, also_count=address)
    if principal is None:
        return render(
            request,
            "login.html",
            status=401,
            login_csrf=login_csrf,
            error="Wrong name or password.",
        )
    ttl = timedelta(hours=desk.settings.desk_session_hours)
    session = user_store.open_session(desk.ledger, principal, ttl)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, desk: DeskDep, _user: User) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user_store.close_session(desk.ledger, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --------------------------------------------------------------------------- campaigns


@router.get("/")
def campaigns_page(request: Request, desk: DeskDep, _user: User) -> HTMLResponse:
    return render(request, "campaigns.html", campaigns=views.campaign_lines(desk.ledger))


def _preview_context(
    desk: Desk, upload: str | None, region: str, phone_column: str | None, script: list[str | None]
) -> dict[str, Any]:
    if not upload:
        return {"preview": None}
    held = desk_store.load_upload(desk.ledger, upload)
    if held is None:
        return {"preview": None, "sheet_error": "That upload has expired; upload the sheet again."}
    label, data = held
    try:
        with desk.ledger.session() as session:
            dnc = import_store.dnc_set(session)
        preview = sheets.preview(data, label, region=region, phone_column=phone_column, dnc=dnc)
    except SheetError as exc:
        return {"preview": None, "sheet_error": str(exc), "upload": upload}
    problems = sorted(
        [(r.row, r.raw, r.reason.value.replace("_", " ")) for r in preview.result.rejected]
        + [
            (d.row, d.raw, f"duplicate of row {d.duplicate_of_row}")
            for d in preview.result.duplicates
        ],
        key=lambda item: item[0],
    )
    return {
        "preview": preview,
        "problems": problems[:200],
        "problem_count": len(problems),
        "placeholders": sheets.placeholders(script, preview.headers),
        "upload": upload,
    }


def _script_texts(values: dict[str, str]) -> list[str | None]:
    """The texts the agent will say, as the form stands (the defaults where it is empty)."""
    defaults = Script()
    return [
        values.get("script.greeting") or defaults.greeting,
        values.get("script.question") or defaults.question,
        values.get("script.goodbye") or defaults.goodbye,
        values.get("voicemail_message") or defaults.voicemail_message,
    ]


@router.get("/campaigns/new")
def new_campaign_page(
    request: Request,
    desk: DeskDep,
    _user: Operator,
    upload: str | None = None,
    region: str = "US",
    phone_column: str | None = None,
) -> HTMLResponse:
    values = {**forms.default_form(), "region": region}
    context = _preview_context(desk, upload, region, phone_column, _script_texts(values))
    return render(
        request,
        "new.html",
        groups=forms.GROUPS,
        values=values,
        errors={},
        region=region,
        phone_column=phone_column or "",
        yaml_text="",
        **context,
    )


async def _store_upload(request: Request, desk: Desk, user: Principal) -> str:
    form = await request.form()
    upload = form.get("sheet")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise DeskError("choose a CSV or Excel file to upload")
    data = await upload.read()
    if not data:
        raise DeskError("the file is empty")
    label = sheets.safe_label(upload.filename)
    return await anyio.to_thread.run_sync(
        lambda: desk_store.save_upload(desk.ledger, user.user_id, label, data)
    )


@router.post("/campaigns/new/upload")
async def new_campaign_upload(request: Request, desk: DeskDep, user: Operator) -> Response:
    form = await request.form()
    region = str(form.get("region") or "US")
    try:
        upload = await _store_upload(request, desk, user)
    except DeskError as exc:
        return back("/campaigns/new", str(exc))
    return back("/campaigns/new?" + urlencode({"upload": upload, "region": region}))


@router.post("/campaigns/new")
async def create_campaign(request: Request, desk: DeskDep, _user: Operator) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    upload = form.get("upload") or None
    phone_column = form.get("phone_column") or None
    yaml_text = form.get("yaml", "").strip()
    errors: dict[str, str] = {}
    try:
        data = forms.parse_yaml(yaml_text) if yaml_text else forms.form_to_mapping(form)
        data.pop("contacts", None)  # sheets are uploaded, never read from a path
        config = forms.validate(data)
        if not upload:
            raise forms.FormErrors({"": "upload a contact sheet first"})
        held = await anyio.to_thread.run_sync(lambda: desk_store.load_upload(desk.ledger, upload))
        if held is None:
            raise forms.FormErrors({"": "the uploaded sheet has expired; upload it again"})
        sheet = sheets.read_upload(held[1], held[0])
        await anyio.to_thread.run_sync(lambda: actions.save_campaign(desk, data, create=True))
        summary, _result = await anyio.to_thread.run_sync(
            lambda: actions.import_into(desk, config.name, sheet, phone_column=phone_column)
        )
        desk_store.drop_upload(desk.ledger, upload)
    except forms.FormErrors as exc:
        errors = exc.errors
    except _ERRORS as exc:
        errors = {"": str(exc)}
    if errors:
        region = form.get("region") or "US"
        context = _preview_context(desk, upload, region, phone_column, _script_texts(form))
        return render(
            request,
            "new.html",
            status=400,
            groups=forms.GROUPS,
            values=form,
            errors=errors,
            region=region,
            phone_column=phone_column or "",
            yaml_text=yaml_text,
            **context,
        )
    return back(
        f"/campaigns/{quote(config.name)}",
        f"Campaign {config.name} created: {summary.new} contact(s) imported,"
        f" {summary.rejected} rejected, {summary.duplicates} duplicate(s).",
    )


def _campaign_or_404(desk: Desk, name: str) -> int:
    try:
        return actions.require_campaign(desk, name)
    except DeskError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/campaigns/{name}")
def campaign_page(
    request: Request,
    name: str,
    desk: DeskDep,
    _user: User,
    outcome: str | None = None,
    page: int = 1,
) -> HTMLResponse:
    campaign_id = _campaign_or_404(desk, name)
    page = max(1, page)
    summary = runner.status(desk.ledger, name)
    line = views.campaign_line(desk.ledger, name)
    attempts, total = desk_store.attempts_page(
        desk.ledger,
        campaign_id,
        outcome=outcome or None,
        offset=(page - 1) * PER_PAGE,
        limit=PER_PAGE,
    )
    config = desk_store.stored_config(desk.ledger, name) or {}
    return render(
        request,
        "campaign.html",
        name=name,
        summary=summary,
        line=line,
        attempts=attempts,
        total=total,
        page=page,
        pages=max(1, -(-total // PER_PAGE)),
        outcome=outcome or "",
        outcomes=sorted(summary.outcomes),
        fallback_zone=str(config.get("time_zone") or "UTC"),
        requests=desk_store.requests_of(desk.ledger, name, limit=5),
        stamp=secrets.token_hex(4),
    )


@router.get("/campaigns/{name}/charts/{kind}.svg")
def chart(name: str, kind: str, desk: DeskDep, _user: User) -> Response:
    campaign_id = _campaign_or_404(desk, name)
    if kind == "outcomes":
        svg = charts.outcomes_chart(desk_store.outcome_counts(desk.ledger, campaign_id))
    elif kind == "hours":
        config = desk_store.stored_config(desk.ledger, name) or {}
        dials = desk_store.dial_times(desk.ledger, campaign_id)
        svg = charts.hours_chart(dials, str(config.get("time_zone") or "UTC"))
    elif kind == "latency":
        svg = charts.latency_chart(desk_store.turn_latencies(desk.ledger, campaign_id))
    else:
        raise HTTPException(404, f"no chart {kind!r}")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/campaigns/{name}/attempts/{attempt_id}")
def attempt_page(
    request: Request, name: str, attempt_id: int, desk: DeskDep, _user: User
) -> HTMLResponse:
    campaign_id = _campaign_or_404(desk, name)
    detail = desk_store.attempt_detail(desk.ledger, campaign_id, attempt_id)
    if detail is None:
        raise HTTPException(404, f"campaign {name} has no attempt {attempt_id}")
    config = desk_store.stored_config(desk.ledger, name) or {}
    return render(
        request,
        "attempt.html",
        name=name,
        detail=detail,
        fallback_zone=str(config.get("time_zone") or "UTC"),
    )


@router.get("/campaigns/{name}/workbook")
def workbook(name: str, desk: DeskDep, _user: User) -> Response:
    return api.workbook_response(desk, name)


@router.get("/campaigns/{name}/cancel")
def cancel_confirm(request: Request, name: str, desk: DeskDep, _user: Operator) -> HTMLResponse:
    _campaign_or_404(desk, name)
    return render(
        request, "confirm_cancel.html", name=name, line=views.campaign_line(desk.ledger, name)
    )


@router.post("/campaigns/{name}/call/test")
def test_call(
    name: str,
    desk: DeskDep,
    _user: Operator,
    number: Annotated[str, Form(max_length=40)],
    callee: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        placed = actions.test_call(desk, name, number, callee or None)
        message = f"Test call to {placed.masked} placed; it shows in the attempts below."
    except _ERRORS as exc:
        message = f"Error: {exc}"
    return back(f"/campaigns/{quote(name)}", message)


@router.get("/campaigns/{name}/edit")
def edit_page(request: Request, name: str, desk: DeskDep, _user: Operator) -> HTMLResponse:
    _campaign_or_404(desk, name)
    values = forms.mapping_to_form(desk_store.stored_config(desk.ledger, name) or {"name": name})
    return render(request, "edit.html", name=name, groups=forms.GROUPS, values=values, errors={})


@router.post("/campaigns/{name}/edit")
async def edit(request: Request, name: str, desk: DeskDep, _user: Operator) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    form["name"] = name
    try:
        data = forms.form_to_mapping(form)
        await anyio.to_thread.run_sync(lambda: actions.save_campaign(desk, data, create=False))
    except forms.FormErrors as exc:
        return render(
            request,
            "edit.html",
            status=400,
            name=name,
            groups=forms.GROUPS,
            values=form,
            errors=exc.errors,
        )
    return back(f"/campaigns/{quote(name)}", f"Campaign {name} saved.")


@router.get("/campaigns/{name}/contacts")
def contacts_page(
    request: Request,
    name: str,
    desk: DeskDep,
    _user: Operator,
    upload: str | None = None,
    phone_column: str | None = None,
) -> HTMLResponse:
    _campaign_or_404(desk, name)
    config = actions.campaign_config(desk, name)
    script = [
        config.agent_script.greeting,
        config.agent_script.question,
        config.agent_script.goodbye,
        config.agent_script.voicemail_message,
    ]
    context = _preview_context(desk, upload, config.region, phone_column, script)
    return render(request, "contacts.html", name=name, phone_column=phone_column or "", **context)


@router.post("/campaigns/{name}/contacts/upload")
async def contacts_upload(request: Request, name: str, desk: DeskDep, user: Operator) -> Response:
    try:
        upload = await _store_upload(request, desk, user)
    except DeskError as exc:
        return back(f"/campaigns/{quote(name)}/contacts", str(exc))
    return back(f"/campaigns/{quote(name)}/contacts?" + urlencode({"upload": upload}))


@router.post("/campaigns/{name}/contacts")
def contacts_import(
    name: str,
    desk: DeskDep,
    _user: Operator,
    upload: Annotated[str, Form()],
    phone_column: Annotated[str, Form()] = "",
) -> Response:
    held = desk_store.load_upload(desk.ledger, upload)
    if held is None:
        return back(f"/campaigns/{quote(name)}/contacts", "The upload has expired; upload again.")
    try:
        sheet = sheets.read_upload(held[1], held[0])
        summary, _ = actions.import_into(desk, name, sheet, phone_column=phone_column or None)
    except _ERRORS as exc:
        return back(f"/campaigns/{quote(name)}/contacts", f"Error: {exc}")
    desk_store.drop_upload(desk.ledger, upload)
    return back(
        f"/campaigns/{quote(name)}",
        f"{summary.source}: {summary.new} new contact(s), {summary.already_present} already in"
        f" the campaign, {summary.rejected} rejected, {summary.duplicates} duplicate(s).",
    )


# --------------------------------------------------------------------------- schedules


@router.get("/schedules")
def schedules_page(request: Request, desk: DeskDep, _user: User) -> HTMLResponse:
    names = list(desk_store.campaign_ids(desk.ledger))
    return render(request, "schedules.html", schedules=desk.scheduler.schedules(), names=names)


@router.post("/schedules")
def add_schedule(
    desk: DeskDep,
    _user: Operator,
    campaign: Annotated[str, Form()],
    cron: Annotated[str, Form()],
    timezone: Annotated[str, Form()],
) -> Response:
    try:
        view = desk.scheduler.add(campaign, cron, timezone)
        message = f"Schedule {view.id} added for {campaign}."
    except _ERRORS as exc:
        message = f"Error: {exc}"
    return back("/schedules", message)


@router.post("/schedules/{schedule_id}/remove")
def remove_schedule(schedule_id: int, desk: DeskDep, _user: Operator) -> Response:
    try:
        desk.scheduler.remove(schedule_id)
        message = f"Schedule {schedule_id} removed."
    except _ERRORS as exc:
        message = f"Error: {exc}"
    return back("/schedules", message)


# --------------------------------------------------------------------------- do-not-call


@router.get("/dnc")
def dnc_page(
    request: Request, desk: DeskDep, _user: User, q: str = "", page: int = 1
) -> HTMLResponse:
    page = max(1, page)
    rows, total = desk_store.search_dnc(
        desk.ledger, q, offset=(page - 1) * PER_PAGE, limit=PER_PAGE
    )
    return render(
        request,
        "dnc.html",
        rows=rows,
        total=total,
        q=q,
        page=page,
        pages=max(1, -(-total // PER_PAGE)),
    )


@router.post("/dnc/add")
def dnc_add(
    desk: DeskDep,
    _user: Operator,
    numbers: Annotated[str, Form(max_length=200_000)],
    region: Annotated[str, Form()] = "US",
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        parsed = actions.parse_numbers(numbers, region)
    except _ERRORS as exc:
        return back("/dnc", f"Error: {exc}")
    with desk.ledger.session() as session:
        added = import_store.add_dnc(session, parsed, note=note or None)
    return back("/dnc", f"Added {added.added} number(s); {added.already_listed} already listed.")


@router.post("/dnc/upload")
async def dnc_upload(request: Request, desk: DeskDep, _user: Operator) -> Response:
    form = await request.form()
    upload = form.get("sheet")
    region = str(form.get("region") or "US")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return back("/dnc", "Error: choose a CSV or Excel file to upload")
    label = sheets.safe_label(upload.filename)
    data = await upload.read()
    try:
        sheet = sheets.read_upload(data, label)
        result = actions.check_sheet(desk, sheet, region=region, phone_column=None)
    except _ERRORS as exc:
        return back("/dnc", f"Error: {exc}")
    with desk.ledger.session() as session:
        added = import_store.add_dnc(session, result.numbers(), source="import", note=label)
    return back(
        "/dnc",
        f"Added {added.added} number(s) from {label}; {added.already_listed}"
        f" already listed; {len(result.rows_without_number())} row(s) without a valid number.",
    )


@router.post("/dnc/remove")
def dnc_remove(
    desk: DeskDep,
    _user: Operator,
    number: Annotated[str, Form(max_length=40)],
) -> Response:
    with desk.ledger.session() as session:
        removed = import_store.remove_dnc(session, [number])
    return back("/dnc", f"Removed {removed} number(s).")


# --------------------------------------------------------------------------- doctor


@router.get("/doctor")
def doctor_page(request: Request, desk: DeskDep, _user: User) -> HTMLResponse:
    return render(request, "doctor.html", report=actions.doctor(desk))


# Last: its path would otherwise catch /campaigns/NAME/edit, /contacts and the rest.
@router.post("/campaigns/{name}/{action}")
def campaign_action(
    request: Request, name: str, action: str, desk: DeskDep, user: Operator
) -> Response:
    target = f"/campaigns/{quote(name)}"
    try:
        if action == "start":
            run, new = actions.start(desk, name, user.name)
            message = (
                f"Start requested (request {run.id}); a runner picks it up within seconds."
                if new
                else f"A start is already waiting (request {run.id})."
            )
        elif action in ("pause", "resume", "cancel"):
            message = actions.control(desk, name, action)
        else:
            raise HTTPException(404, f"no action {action!r}")
    except _ERRORS as exc:
        message = f"Error: {exc}"
    return back(target, message)
