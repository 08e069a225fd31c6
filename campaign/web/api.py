"""The HTTP API (`/api/...`), documented by OpenAPI at `/docs` (signed-in users only).

Callers authenticate with `Authorization: Bearer <token>` (`dialer token create`) or,
from the desk's own pages, the session cookie plus the `X-CSRF-Token` header.
Errors are `{"detail": "one line"}` with 400 (bad input), 401, 403 (a viewer),
404, 409 (conflicts), 413 (upload too large) or 429 (too many sign-in failures).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from campaign import runner
from campaign.contacts import SheetResult
from campaign.errors import UserError
from campaign.scheduler import ScheduleView
from campaign.store import desk as desk_store
from campaign.store import imports as import_store
from campaign.store import utcnow
from campaign.store.dialing import CampaignNotFound
from campaign.store.imports import ImportSummary
from campaign.store.users import Principal
from campaign.web import actions, forms, sheets, views
from campaign.web.actions import Desk, DeskError
from campaign.web.security import require_operator, require_user

router = APIRouter(prefix="/api", tags=["api"])
User = Annotated[Principal, Depends(require_user)]
Operator = Annotated[Principal, Depends(require_operator)]
#: most rejections listed in one response (the count is always whole)
REJECTIONS_LISTED = 1000


def desk_of(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


DeskDep = Annotated[Desk, Depends(desk_of)]


def _fail(exc: Exception) -> HTTPException:
    if isinstance(exc, forms.FormErrors):
        return HTTPException(400, {"message": str(exc), "fields": exc.errors})
    status = exc.status if isinstance(exc, DeskError) else 400
    if isinstance(exc, CampaignNotFound):
        status = 404
    return HTTPException(status, str(exc))


_ERRORS = (DeskError, forms.FormErrors, UserError)


# --------------------------------------------------------------------------- campaigns


async def _config_body(request: Request) -> dict[str, Any]:
    """A campaign as JSON, or as a YAML campaign file (`Content-Type: application/yaml`)."""
    body = await request.body()
    kind = request.headers.get("content-type", "")
    if "yaml" in kind:
        return forms.parse_yaml(body.decode("utf-8", errors="replace"))
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise forms.FormErrors(
            {"": "the body is not JSON (or send YAML as application/yaml)"}
        ) from None
    if not isinstance(data, dict):
        raise forms.FormErrors({"": "expected a JSON object of campaign fields"})
    return data


_CONFIG_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "campaign fields"}},
            "application/yaml": {"schema": {"type": "string", "description": "a campaign file"}},
        },
    }
}


@router.get("/campaigns", summary="Every campaign with its progress")
def list_campaigns(desk: DeskDep, _user: User) -> list[dict[str, Any]]:
    return [line.to_json() for line in views.campaign_lines(desk.ledger)]


@router.post("/campaigns", status_code=201, summary="Create a campaign", openapi_extra=_CONFIG_BODY)
async def create_campaign(request: Request, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    try:
        data = await _config_body(request)
        config = await anyio.to_thread.run_sync(
            lambda: actions.save_campaign(desk, data, create=True)
        )
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"name": config.name, "config": forms.stored(config)}


@router.put(
    "/campaigns/{name}", summary="Replace a campaign's settings", openapi_extra=_CONFIG_BODY
)
async def update_campaign(
    name: str, request: Request, desk: DeskDep, _user: Operator
) -> dict[str, Any]:
    try:
        data = await _config_body(request)
        if data.get("name", name) != name:
            raise DeskError("the body names another campaign; campaigns cannot be renamed")
        data["name"] = name
        await anyio.to_thread.run_sync(lambda: actions.require_campaign(desk, name))
        config = await anyio.to_thread.run_sync(
            lambda: actions.save_campaign(desk, data, create=False)
        )
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"name": config.name, "config": forms.stored(config)}


@router.get("/campaigns/{name}", summary="A campaign's settings and status")
def get_campaign(name: str, desk: DeskDep, _user: User) -> dict[str, Any]:
    try:
        actions.require_campaign(desk, name)
        config = desk_store.stored_config(desk.ledger, name) or {}
        summary = runner.status(desk.ledger, name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    line = views.campaign_line(desk.ledger, name)
    return {"name": name, "config": config, "status": views.status_json(summary, line)}


@router.get("/campaigns/{name}/status", summary="Where a campaign stands (as `dialer status`)")
def campaign_status(name: str, desk: DeskDep, _user: User) -> dict[str, Any]:
    try:
        summary = runner.status(desk.ledger, name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    return views.status_json(summary, views.campaign_line(desk.ledger, name))


class Rows(BaseModel):
    """Contacts from a CRM: one object per row, column -> value (as a sheet's columns)."""

    rows: list[dict[str, Any]] = Field(min_length=1)
    phone_column: str | None = None
    source: str = Field(default="api", max_length=100, description="label kept as the source")


def import_json(summary: ImportSummary, result: SheetResult) -> dict[str, Any]:
    rejected = [{"row": r.row, "raw": r.raw, "reason": r.reason.value} for r in result.rejected] + [
        {"row": d.row, "raw": d.raw, "reason": "duplicate", "duplicate_of_row": d.duplicate_of_row}
        for d in result.duplicates
    ]
    rejected.sort(key=lambda item: int(item["row"]))
    return {
        **asdict(summary),
        "columns": result.columns,
        "rejections": rejected[:REJECTIONS_LISTED],
        "rejections_listed": min(len(rejected), REJECTIONS_LISTED),
        "warnings": [{"row": row, "message": message} for row, message in result.warnings],
    }


@router.post(
    "/campaigns/{name}/contacts",
    summary="Add contacts: a multipart sheet (`sheet`) or JSON rows; idempotent",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "sheet": {"type": "string", "format": "binary"},
                            "phone_column": {"type": "string"},
                        },
                    }
                },
                "application/json": {"schema": Rows.model_json_schema()},
            }
        }
    },
)
async def add_contacts(name: str, request: Request, desk: DeskDep, _user: Operator) -> Any:
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("sheet")
            if not isinstance(upload, UploadFile):
                raise DeskError("send the sheet as the multipart field `sheet`")
            label = sheets.safe_label(upload.filename)
            data = await upload.read()
            phone = form.get("phone_column")
            phone_column = phone if isinstance(phone, str) and phone else None
            sheet = await anyio.to_thread.run_sync(lambda: sheets.read_upload(data, label))
        else:
            try:
                rows = Rows.model_validate_json(await request.body())
            except ValueError as exc:
                raise DeskError(
                    f'expected {{"rows": [...]}}: {str(exc).splitlines()[-1]}'
                ) from None
            phone_column = rows.phone_column
            sheet = sheets.rows_sheet(rows.rows, sheets.safe_label(rows.source))
        summary, result = await anyio.to_thread.run_sync(
            lambda: actions.import_into(desk, name, sheet, phone_column=phone_column)
        )
    except _ERRORS as exc:
        raise _fail(exc) from None
    return JSONResponse(import_json(summary, result), status_code=200)


def _action(name: str, action: str, desk: Desk) -> dict[str, Any]:
    try:
        message = actions.control(desk, name, action)
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"message": message, "status": runner.status(desk.ledger, name).status}


@router.post("/campaigns/{name}/start", status_code=202, summary="Dial it now (a runner takes it)")
def start_campaign(name: str, desk: DeskDep, user: Operator) -> dict[str, Any]:
    try:
        request, new = actions.start(desk, name, user.name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"request": request.id, "new": new, "status": request.status}


@router.post("/campaigns/{name}/pause", summary="Stop claiming; calls in flight finish")
def pause_campaign(name: str, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    return _action(name, "pause", desk)


@router.post("/campaigns/{name}/resume", summary="Claim contacts again")
def resume_campaign(name: str, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    return _action(name, "resume", desk)


@router.post("/campaigns/{name}/cancel", summary="Hang up and close every waiting contact")
def cancel_campaign(name: str, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    return _action(name, "cancel", desk)


def attempt_json(line: desk_store.AttemptLine) -> dict[str, Any]:
    return {
        "id": line.id,
        "number": line.number,
        "contact": line.contact_name,
        "phone": line.e164,
        "timezones": line.timezones,
        "status": line.status,
        "outcome": line.outcome,
        "disposition": line.disposition,
        "claimed_at": views.iso(line.claimed_at),
        "answered_at": views.iso(line.answered_at),
        "ended_at": views.iso(line.ended_at),
        "has_transcript": line.has_transcript,
        "is_test": line.is_test,
    }


@router.get("/campaigns/{name}/attempts", summary="The campaign's attempts, newest first, paged")
def list_attempts(
    name: str,
    desk: DeskDep,
    _user: User,
    outcome: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    try:
        campaign_id = actions.require_campaign(desk, name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    lines, total = desk_store.attempts_page(
        desk.ledger, campaign_id, outcome=outcome, offset=(page - 1) * per_page, limit=per_page
    )
    return {
        "total": total,
        "page": page,
        "per_page": per_page,
        "attempts": [attempt_json(line) for line in lines],
    }


@router.get("/campaigns/{name}/attempts/{attempt_id}", summary="One attempt and its transcript")
def get_attempt(name: str, attempt_id: int, desk: DeskDep, _user: User) -> dict[str, Any]:
    try:
        campaign_id = actions.require_campaign(desk, name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    detail = desk_store.attempt_detail(desk.ledger, campaign_id, attempt_id)
    if detail is None:
        raise HTTPException(404, f"campaign {name} has no attempt {attempt_id}")
    return {
        **attempt_json(detail.line),
        "sip_status_code": detail.sip_status_code,
        "sip_status": detail.sip_status,
        "error": detail.error,
        "amd_result": detail.amd_result,
        "end_reason": detail.end_reason,
        "disposition_note": detail.disposition_note,
        "transcript": detail.transcript,
        "turns": [asdict(turn) for turn in detail.turns],
    }


@router.get(
    "/campaigns/{name}/workbook",
    summary="The campaign workbook (.xlsx), written now from the ledger",
    response_class=FileResponse,
)
def download_workbook(name: str, desk: DeskDep, _user: User) -> FileResponse:
    return workbook_response(desk, name)


def workbook_response(desk: Desk, name: str) -> FileResponse:
    try:
        path = actions.write_workbook(desk, name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return FileResponse(
        path,
        filename=f"{name}-{stamp}.xlsx",
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True),
    )


class CallBody(BaseModel):
    number: str = Field(min_length=3, max_length=40)
    name: str | None = Field(default=None, max_length=200)


@router.post(
    "/campaigns/{name}/calls", status_code=202, summary="Place a test call (`dialer call`)"
)
def test_call(name: str, body: CallBody, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    try:
        placed = actions.test_call(desk, name, body.number, body.name)
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"number": placed.masked, "started_at": views.iso(placed.started_at)}


# --------------------------------------------------------------------------- do-not-call


@router.get("/dnc", summary="Search the do-not-call list (by digits)")
def list_dnc(
    desk: DeskDep,
    _user: User,
    q: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    rows, total = desk_store.search_dnc(
        desk.ledger, q, offset=(page - 1) * per_page, limit=per_page
    )
    return {
        "total": total,
        "entries": [
            {"e164": e, "source": src, "note": note, "added_at": views.iso(at)}
            for e, src, note, at in rows
        ],
    }


class DncBody(BaseModel):
    numbers: list[str] = Field(min_length=1, max_length=10_000)
    region: str = "US"
    note: str | None = Field(default=None, max_length=500)


@router.post("/dnc", summary="Put numbers on the do-not-call list")
def add_dnc(body: DncBody, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    try:
        numbers = actions.parse_numbers("\n".join(body.numbers), body.region)
    except _ERRORS as exc:
        raise _fail(exc) from None
    with desk.ledger.session() as session:
        added = import_store.add_dnc(session, numbers, note=body.note)
    return {"added": added.added, "already_listed": added.already_listed}


@router.delete("/dnc/{number}", summary="Take a number off the do-not-call list")
def remove_dnc(number: str, desk: DeskDep, _user: Operator, region: str = "US") -> dict[str, Any]:
    try:
        numbers = actions.parse_numbers(number, region)
    except _ERRORS as exc:
        raise _fail(exc) from None
    with desk.ledger.session() as session:
        removed = import_store.remove_dnc(session, numbers)
    return {"removed": removed}


# --------------------------------------------------------------------------- schedules


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    last = view.last_run
    return {
        "id": view.id,
        "campaign": view.campaign,
        "cron": view.cron,
        "timezone": view.timezone,
        "misfire_grace_minutes": view.misfire_grace.total_seconds() / 60,
        "next_run": views.iso(view.next_run),
        "last_run": None
        if last is None
        else {
            "status": last.status,
            "started_at": views.iso(last.started_at),
            "summary": last.summary,
        },
    }


@router.get("/schedules", summary="Schedules with their next and last runs")
def list_schedules(desk: DeskDep, _user: User) -> list[dict[str, Any]]:
    return [schedule_json(view) for view in desk.scheduler.schedules()]


class ScheduleBody(BaseModel):
    campaign: str
    cron: str = Field(description='crontab: minute hour day month weekday, e.g. "0 19 * * 1-5"')
    timezone: str = Field(description="IANA zone the cron is read in")
    grace_minutes: int = Field(default=60, ge=1)


@router.post("/schedules", status_code=201, summary="Run a campaign on a cron schedule")
def add_schedule(body: ScheduleBody, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    try:
        view = desk.scheduler.add(
            body.campaign, body.cron, body.timezone, timedelta(minutes=body.grace_minutes)
        )
    except _ERRORS as exc:
        raise _fail(exc) from None
    return schedule_json(view)


@router.delete("/schedules/{schedule_id}", summary="Remove a schedule")
def remove_schedule(schedule_id: int, desk: DeskDep, _user: Operator) -> dict[str, Any]:
    try:
        desk.scheduler.remove(schedule_id)
    except _ERRORS as exc:
        raise _fail(exc) from None
    return {"removed": schedule_id}


# --------------------------------------------------------------------------- doctor


@router.get("/doctor", summary="`dialer doctor`'s checks")
def doctor(desk: DeskDep, _user: User) -> dict[str, Any]:
    return actions.doctor(desk).to_json()
