"""Pacing: a token bucket at `calls_per_second`.

The bucket is kept as one number, the theoretical arrival time (TAT) of the next
token (the GCRA form of a token bucket). One number is easy to persist, so the
ledger stores it on the campaign row and every dialer process sharing the ledger
draws from the same bucket under the campaign lock; the rate then holds across
processes, not per process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class PacingError(ValueError):
    """A rate or burst that cannot pace anything."""


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Times are seconds (any epoch).

    `tat` is the time at which the bucket will next be empty of debt; a token may be
    taken at `now` when `tat - now <= (burst - 1) / rate`.
    """

    rate: float
    burst: float = 1.0
    tat: float = -math.inf

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise PacingError(
                f"rate must be a positive number of calls per second, not {self.rate}"
            )
        if self.burst < 1:
            raise PacingError(f"burst must be at least 1, not {self.burst}")

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        allowance = (self.burst - 1.0) * self.interval
        return max(0.0, self.tat - allowance - now)

    def try_take(self, now: float) -> bool:
        """Take a token if one is available at `now`."""
        if self.wait_time(now) > 0:
            return False
        self.tat = max(self.tat, now) + self.interval
        return True
