"""A per-key limit on expensive calls (recognize): a fixed one-minute window counted in Redis, so every console
process behind one Redis shares it."""

from __future__ import annotations

import time

from pipeline.api.errors import ApiError

RATE_PREFIX = "fs:{access}:rate:"


class RateLimiter:
    def __init__(self, client, per_minute: int, what: str = "recognize"):
        self.client, self.per_minute, self.what = client, int(per_minute), what

    def check(self, who: str) -> None:
        """Count one call by `who` (a key id or a client address); ApiError 429 once over the limit."""
        window = int(time.time() // 60)
        key = f"{RATE_PREFIX}{self.what}:{who}:{window}"
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key).expire(key, 120)
        count = pipe.execute()[0]
        if count > self.per_minute:
            retry = max(1, int(60 - time.time() % 60))
            raise ApiError(429, f"rate limit: at most {self.per_minute} {self.what} calls per minute per key; "
                                f"retry in {retry} s", {"Retry-After": str(retry)})
