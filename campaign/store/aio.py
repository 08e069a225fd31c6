"""The engine's async door to the ledger: the sync store, run in worker threads.

Every store function is synchronous (SQLAlchemy sessions); the engine awaits it
through `AsyncLedger`, so a write that waits for SQLite's lock or a slow PostgreSQL
never stalls the event loop (watchers, Ctrl-C, the live view keep running). Each
call goes through one tenacity policy for transient ledger faults ("database is
locked", a dropped connection), as apscheduler's SQLAlchemy data store does; any
other error is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from campaign.store.db import Ledger

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def is_transient_ledger_fault(exc: BaseException) -> bool:
    """Worth another try: the database was busy or the connection went away."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass(frozen=True)
class LedgerRetry:
    """The one retry policy for ledger calls made by the engine."""

    attempts: int = 6
    initial_wait: float = 0.1
    max_wait: float = 2.0


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    # the first line only: SQLAlchemy appends the statement and its parameters
    first = str(exc).splitlines()[0] if exc is not None else ""
    # The first retry is worth a warning; the next ones of the same call say nothing new
    # (an outage would write a screenful a second), and a call that gives up says so.
    level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
    logger.log(
        level,
        "ledger call failed (%s: %s); retry %d",
        type(exc).__name__,
        first,
        state.attempt_number,
    )


class AsyncLedger:
    """`await db(store_function, *args)`: the store function, off the loop, with retries."""

    def __init__(self, ledger: Ledger, *, retry: LedgerRetry | None = None) -> None:
        self.ledger = ledger
        self._retry = retry or LedgerRetry()
        #: calls made, by store function, retries included (benchmarks/dialer.py prints them)
        self.calls: Counter[str] = Counter()
        #: CPU seconds those calls took in their worker threads, by store function
        self.cpu: defaultdict[str, float] = defaultdict(float)

    async def __call__(
        self, fn: Callable[Concatenate[Ledger, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        call = partial(fn, self.ledger, *args, **kwargs)
        name = fn.__name__

        def timed() -> T:
            started = time.thread_time()
            try:
                return call()
            finally:
                self.cpu[name] += time.thread_time() - started

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient_ledger_fault),
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential(multiplier=self._retry.initial_wait, max=self._retry.max_wait),
            before_sleep=_log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self.calls[name] += 1
                return await asyncio.to_thread(timed)
        raise AssertionError("unreachable: tenacity either returns or raises")
