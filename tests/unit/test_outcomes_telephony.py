"""Which LiveKit API faults are transient (retried) and which are answers (never retried)."""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api

from campaign.telephony import is_transient, mask_number

pytestmark = pytest.mark.unit


def server_error(status: int, meta: dict[str, str] | None = None) -> api.TwirpError:
    return api.TwirpError(
        "internal" if status >= 500 else "not_found", "x", status=status, metadata=meta
    )


def test_sip_final_responses_are_never_retried() -> None:
    busy = api.SipCallError.from_server_error(
        server_error(500, {"sip_status_code": "486", "sip_status": "Busy Here"})
    )
    assert busy.sip_status_code == 486
    assert not is_transient(busy)
    assert not is_transient(server_error(503, {"sip_status_code": "503"}))


def test_transport_faults_and_bare_5xx_are_retried() -> None:
    assert is_transient(server_error(503))
    assert is_transient(server_error(500))
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())


def test_client_errors_are_final() -> None:
    assert not is_transient(server_error(404))
    assert not is_transient(server_error(401))
    assert not is_transient(ValueError("bug"))


def test_numbers_are_masked_for_logs() -> None:
    assert mask_number("+14155552671") == "+141***71"
    assert "5555" not in mask_number("+14155552671")


@pytest.mark.parametrize(
    "number",
    [
        *("+1", "+12", "+123", "+1234", "+12345", "+1234567", "+14155552671", "+4930123"),
        *("+491511234567890", "+8613812345678", "2671", ""),
    ],
)
def test_masking_hides_at_least_half_of_any_numbers_digits(number: str) -> None:
    masked = mask_number(number)
    digits = sum(char.isdigit() for char in number)
    shown = sum(char.isdigit() for char in masked)
    assert shown * 2 <= digits
    assert "***" in masked
