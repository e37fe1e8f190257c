"""Sign events as Stripe does and deliver them from a background thread, with retries and chaos switches."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stripe does not follow redirects from a webhook endpoint: a 3xx counts as a failed delivery."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxies either: the endpoint is a local process, and a proxy from the environment would intercept it.
_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Return the ``Stripe-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass
class DeliverySettings:
    """Where events go and how delivery misbehaves; every random choice derives from ``seed``."""

    url: str | None = None
    secret: str = ""
    duplicate: float = 0.0  # probability that an event is delivered twice
    delay: float = 0.0  # each delivery waits a random 0..delay seconds, so later events can overtake
    reorder: bool = False  # shuffle each batch of deliveries that are due together
    hold: bool = False  # keep deliveries queued until a flush, so a whole scenario becomes one batch
    seed: int = field(default_factory=lambda: secrets.randbits(32))
    max_attempts: int = 5
    retry_backoff: float = 0.5  # seconds before the first retry; doubles each time, at most 30 s
    timeout: float = 5.0

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as plain values (the secret included: this is a local test tool)."""
        return asdict(self)


@dataclass(order=True)
class _Job:
    due: float
    order: int
    event_id: str = field(compare=False)
    event_type: str = field(compare=False)
    seq: int = field(compare=False)
    payload: bytes = field(compare=False)
    attempt: int = field(compare=False, default=1)
    duplicate: bool = field(compare=False, default=False)
    generation: int = field(compare=False, default=0)


class Dispatcher:
    """A queue of signed deliveries worked by one thread; ``flush`` waits until it is empty."""

    def __init__(
        self,
        settings: DeliverySettings,
        *,
        record: Callable[[dict[str, Any]], None],
        finished: Callable[[str, bool], None],
    ) -> None:
        self.settings = settings
        self._record = record
        self._finished = finished
        self._cond = threading.Condition()
        self._heap: list[_Job] = []
        self._order = 0
        self._in_flight = 0
        self._flushing = 0
        self._generation = 0
        self._running = False
        self._thread: threading.Thread | None = None

    def _rng(self, *parts: object) -> random.Random:
        # One generator per decision, keyed by event and attempt: the same seed and scenario give the
        # same duplicates, delays and order however the threads happen to be scheduled.
        return random.Random("/".join(str(p) for p in (self.settings.seed, *parts)))

    def start(self) -> None:
        """Start the delivery thread."""
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._work, name="fakestripe-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the delivery thread; queued deliveries are dropped."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def enqueue(self, event: dict[str, Any], emitted_at: float | None = None) -> None:
        """Queue an event for delivery (and maybe a duplicate), if an endpoint is configured.

        ``emitted_at`` (monotonic) is when the event counts as emitted; random delays start from it.
        """
        if not self.settings.url:
            return
        payload = json.dumps({k: v for k, v in event.items() if not k.startswith("_")}, indent=2).encode()
        seq = event["_seq"]
        now = time.monotonic() if emitted_at is None else emitted_at
        with self._cond:
            first_delay = self._rng(seq, 1, "delay").uniform(0, self.settings.delay) if self.settings.delay else 0.0
            self._push(_Job(now + first_delay, 0, event["id"], event["type"], seq, payload))
            if self.settings.duplicate and self._rng(seq, "duplicate").random() < self.settings.duplicate:
                # Stripe's at-least-once delivery: the copy comes a little after the original.
                extra = self._rng(seq, "duplicate-delay").uniform(0, max(self.settings.delay, 0.05))
                self._push(_Job(now + first_delay + extra, 0, event["id"], event["type"], seq, payload,
                                duplicate=True))
            self._cond.notify_all()

    def _push(self, job: _Job) -> None:
        self._order += 1
        job.order = self._order
        job.generation = self._generation
        heapq.heappush(self._heap, job)

    def flush(self, timeout: float = 30.0) -> bool:
        """Release held deliveries and wait until none are queued or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._heap or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def wake(self) -> None:
        """Make the delivery thread look at its queue again (after a switch changed)."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        """Return how many deliveries are queued or in flight."""
        with self._cond:
            return len(self._heap) + self._in_flight

    def clear(self) -> None:
        """Drop every queued delivery (used by reset); deliveries in flight are not recorded."""
        with self._cond:
            self._heap.clear()
            self._generation += 1
            self._cond.notify_all()

    def _take_batch(self) -> list[_Job] | None:
        """Wait for the deliveries that are due, or return None when stopping."""
        with self._cond:
            while True:
                if not self._running:
                    return None
                held = self.settings.hold and not self._flushing
                now = time.monotonic()
                if self._heap and not held and self._heap[0].due <= now:
                    break
                wait = None if held or not self._heap else self._heap[0].due - now
                self._cond.wait(wait)
            batch = []
            while self._heap and self._heap[0].due <= now:
                batch.append(heapq.heappop(self._heap))
            if self.settings.reorder:
                batch.sort(key=lambda j: self._rng(j.seq, j.attempt, j.duplicate, "order").random())
            self._in_flight = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            for job in batch:
                self._deliver(job)
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _deliver(self, job: _Job) -> None:
        url, secret = self.settings.url, self.settings.secret
        status: int | None = None
        error: str | None = None
        started = time.time()
        if url and not url.startswith(("http://", "https://")):
            error = f"webhook URL must be http(s): {url}"
        elif url:
            timestamp = int(time.time())
            request = urllib.request.Request(  # noqa: S310 (scheme checked above)
                url,
                data=job.payload,
                method="POST",
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": USER_AGENT,
                    "Stripe-Signature": sign(job.payload, secret, timestamp),
                },
            )
            try:
                with _OPENER.open(request, timeout=self.settings.timeout) as response:
                    status = response.status
                    response.read(2048)
            except urllib.error.HTTPError as exc:
                status = exc.code
                error = f"HTTP {exc.code}"
                exc.close()
            except (urllib.error.URLError, OSError) as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        else:
            error = "no webhook endpoint configured"
        ok = status is not None and 200 <= status < 300
        with self._cond:
            current = job.generation == self._generation
        if not current:
            return
        self._record({
            "event": job.event_id, "type": job.event_type, "attempt": job.attempt, "duplicate": job.duplicate,
            "url": url, "status": status, "error": error, "ok": ok, "at": started,
            "duration": round(time.time() - started, 4),
        })
        if ok:
            self._finished(job.event_id, True)
            return
        if job.attempt >= self.settings.max_attempts:
            self._finished(job.event_id, False)
            return
        backoff = min(30.0, self.settings.retry_backoff * 2 ** (job.attempt - 1))
        with self._cond:
            if job.generation == self._generation:
                retry = _Job(time.monotonic() + backoff, 0, job.event_id, job.event_type, job.seq, job.payload,
                             attempt=job.attempt + 1, duplicate=job.duplicate)
                self._push(retry)
                self._cond.notify_all()
