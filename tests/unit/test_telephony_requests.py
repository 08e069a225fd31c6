"""What keeps LiveKit requests cheap: tokens signed once per grant, join times learned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from livekit import api

from campaign.telephony import TOKENS_KEPT, _JoinTimes, _Tokens

pytestmark = pytest.mark.unit

KEY, SECRET = "devkey", "a-secret-long-enough-for-hmac-sha256-0123456789"


def claims(header: dict[str, str]) -> api.Claims:
    return api.TokenVerifier(KEY, SECRET).verify(header["authorization"].removeprefix("Bearer "))


def test_a_token_is_signed_once_per_grant_and_carries_it() -> None:
    tokens = _Tokens(KEY, SECRET)
    create = tokens.header(api.VideoGrants(room_create=True))
    assert tokens.header(api.VideoGrants(room_create=True)) is create
    admin = tokens.header(api.VideoGrants(room_admin=True, room="r1"))
    assert admin != create
    assert claims(admin).video is not None and claims(admin).video.room == "r1"
    dial = tokens.header(api.VideoGrants(), sip=api.SIPGrants(call=True))
    assert claims(dial).sip is not None and claims(dial).sip.call
    assert claims(create).video is not None and claims(create).video.room_create


def test_a_token_is_signed_again_after_half_its_life() -> None:
    tokens = _Tokens(KEY, SECRET, ttl=timedelta(0))
    first = tokens.header(api.VideoGrants(room_list=True))
    assert tokens.header(api.VideoGrants(room_list=True)) is not first


def test_room_tokens_are_bounded() -> None:
    tokens = _Tokens(KEY, SECRET)
    for i in range(TOKENS_KEPT + 10):
        tokens.header(api.VideoGrants(room_admin=True, room=f"r{i}"))
    assert len(tokens._signed) == TOKENS_KEPT


def test_join_times_follow_the_server_clock() -> None:
    joins = _JoinTimes()
    joins.created("a", 10_000)
    joins.joined("a", 10_800)
    assert joins.typical == pytest.approx(0.8)
    joins.created("b", 20_000)
    joins.joined("b", 22_000)
    assert joins.typical == pytest.approx(0.8 + 0.25 * 1.2)
    joins.joined("never-created", 5)  # a room it did not create tells nothing
    joins.created("c", 30_000)
    joins.joined("c", 0)  # a server that does not say when
    assert joins.typical == pytest.approx(1.1)
    assert not joins.created_ms
