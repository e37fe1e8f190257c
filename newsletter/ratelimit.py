"""One send rate for all workers together: a token bucket in Redis, or in the database when there is no Redis.

Celery's own `rate_limit` counts per worker process, so two workers would send at twice the rate.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Protocol

import redis
from sqlalchemy import case, func, update
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.extensions import db

SEND_BUCKET = "herald:send-rate"

# Refill by elapsed time (Redis's clock, so every worker agrees), take up to `wanted` whole tokens,
# and say how long until one more exists when none are left.
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local granted = math.max(0, math.min(wanted, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
local wait = 0
if granted == 0 then
  wait = (1 - tokens) / rate
end
return {granted, tostring(wait)}
"""


@dataclass(frozen=True)
class Grant:
    """How many messages may go now, and when to ask again if that was none."""

    granted: int
    wait: float


class Bucket(Protocol):
    def take(self, wanted: int) -> Grant: ...


def burst_for(rate: float) -> int:
    """Return the bucket's capacity: a tenth of a second's worth, so a pause never becomes a flood."""
    return max(1, math.ceil(rate / 10))


class Unlimited:
    """No rate configured: every request is granted in full."""

    def take(self, wanted: int) -> Grant:
        return Grant(wanted, 0.0)


class RedisBucket:
    """The bucket as one Redis hash, changed only by an atomic Lua script."""

    def __init__(self, client: redis.Redis, rate: float, key: str = SEND_BUCKET):
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.rate, self.burst, self.key = rate, burst_for(rate), key
        self._script = client.register_script(_LUA)

    def take(self, wanted: int) -> Grant:
        granted, wait = self._script(keys=[self.key], args=[self.rate, self.burst, max(0, wanted)])
        return Grant(int(granted), float(wait))


def _least(a, b):
    return case((a < b, a), else_=b)


class DatabaseBucket:
    """The bucket as one row, changed by a single UPDATE ... RETURNING: atomic on PostgreSQL and SQLite.

    Uses the workers' clocks, which NTP keeps close enough for a rate measured in seconds.
    """

    def __init__(self, rate: float, name: str = SEND_BUCKET):
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.rate, self.burst, self.name = rate, burst_for(rate), name

    def take(self, wanted: int) -> Grant:
        from newsletter.models.sending import RateBucket

        now = time.time()
        elapsed = case((RateBucket.at < now, now - RateBucket.at), else_=0.0)
        available = _least(float(self.burst), RateBucket.tokens + elapsed * self.rate)
        granted = _least(float(max(0, wanted)), func.floor(available))
        statement = (
            update(RateBucket)
            .where(RateBucket.name == self.name)
            .values(granted=granted, tokens=available - granted,
                    at=case((RateBucket.at < now, now), else_=RateBucket.at))
            .returning(RateBucket.granted, RateBucket.tokens)
        )
        # Its own short transaction, so a batch's open work never holds the bucket's row.
        with db.engine.begin() as conn:
            row = conn.execute(statement).first()
            if row is None:
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                conn.execute(insert(RateBucket).values(name=self.name, tokens=float(self.burst), at=now, granted=0)
                             .on_conflict_do_nothing())
                row = conn.execute(statement).one()
        got = int(row[0])
        return Grant(got, 0.0 if got else (1.0 - row[1]) / self.rate)


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def send_bucket(rate: float, redis_url: str) -> Bucket:
    """Return the bucket for the global send rate (messages per second; 0 or less is unlimited)."""
    if rate <= 0:
        return Unlimited()
    if redis_url:
        return RedisBucket(_redis(redis_url), rate)
    return DatabaseBucket(rate)
