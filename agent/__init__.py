"""The LiveKit Agents worker that talks to whoever answers a campaign call."""

from __future__ import annotations
