"""Wire the fake together (store, engine, webhook dispatcher, Flask app) and serve it on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from newsletter.fakestripe import api, control, pages
from newsletter.fakestripe.engine import Engine, Settings
from newsletter.fakestripe.errors import StripeAPIError
from newsletter.fakestripe.store import Store
from newsletter.fakestripe.webhooks import DeliverySettings, Dispatcher

HOST = "127.0.0.1"
_DELIVERY_KEYS = {"duplicate", "delay", "reorder", "hold", "seed", "max_attempts", "retry_backoff", "timeout"}
_SETTINGS_KEYS = {"dunning_retries", "dunning_final_action", "retry_every_days"}


class FakeStripe:
    """One fake Stripe account: its state, its rules, its webhook endpoint and its WSGI app."""

    def __init__(
        self,
        db: str = ":memory:",
        *,
        webhook_url: str | None = None,
        webhook_secret: str = "",
        seed: int | None = None,
        public_url: str = f"http://{HOST}",
        **options: Any,
    ) -> None:
        unknown = set(options) - _DELIVERY_KEYS - _SETTINGS_KEYS
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.store = Store(db)
        delivery = {k: v for k, v in options.items() if k in _DELIVERY_KEYS and k != "seed"}
        self.delivery = DeliverySettings(url=webhook_url, secret=webhook_secret, **delivery)
        if seed is not None:
            self.delivery.seed = seed
        self.settings = Settings(**{k: v for k, v in options.items() if k in _SETTINGS_KEYS})
        self.dispatcher = Dispatcher(self.delivery, record=self.store.record_delivery, finished=self._finished)
        self.engine = Engine(
            self.store, public_url=public_url, seed=seed, settings=self.settings,
            on_event=self.dispatcher.enqueue, webhooks_enabled=lambda: bool(self.delivery.url),
        )
        self.app = create_app(self)

    def _finished(self, event_id: str, succeeded: bool) -> None:
        self.engine.event_delivered(event_id, succeeded)

    def configure(self, **changes: Any) -> None:
        """Change delivery switches, the endpoint, or billing settings while running."""
        for key, value in changes.items():
            if key == "webhook_url":
                self.delivery.url = value
            elif key == "webhook_secret":
                self.delivery.secret = value
            elif key in _DELIVERY_KEYS:
                setattr(self.delivery, key, value)
            elif key in _SETTINGS_KEYS:
                setattr(self.settings, key, value)
            else:
                raise TypeError(f"unknown setting {key!r}")
        if "hold" in changes or "delay" in changes:
            # Wake the delivery thread so a released hold or a shorter delay takes effect now.
            self.dispatcher.wake()

    def config(self) -> dict[str, Any]:
        """Return the current switches and settings."""
        delivery = self.delivery.as_dict()
        return {
            "webhook_url": delivery.pop("url"), "webhook_secret": delivery.pop("secret"), **delivery,
            **self.settings.as_dict(), "public_url": self.engine.public_url,
        }

    def reset(self) -> None:
        """Forget everything, including queued deliveries."""
        self.dispatcher.clear()
        self.engine.reset()

    def requeue_undelivered(self) -> int:
        """Queue again the events a previous run never delivered (state kept in a database file)."""
        events = [e for e in self.store.all("event") if e["pending_webhooks"] and not e.get("_delivery_failed")]
        now = time.monotonic()
        for event in sorted(events, key=lambda e: e["_seq"]):
            self.dispatcher.enqueue(event, now)
        return len(events)


def create_app(fake: FakeStripe) -> Flask:
    """Build the fake's Flask app: ``/v1`` API, hosted pages, ``/_fake`` controls."""
    app = Flask(__name__, template_folder="templates")
    app.extensions["fakestripe"] = fake
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(control.bp)

    @app.before_request
    def no_request_context() -> None:
        # Events caused by pages and controls carry no API request id; /v1 views set their own.
        fake.engine.context.request_id = None
        fake.engine.context.idempotency_key = None

    @app.errorhandler(StripeAPIError)
    def stripe_error(exc: StripeAPIError) -> ResponseReturnValue:
        return jsonify(exc.body()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        if request.path.startswith("/v1/") and exc.code in (404, 405):
            # Stripe answers unknown routes and wrong methods alike, in its JSON error shape.
            message = (
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/."
            )
            return jsonify(StripeAPIError(404, message).body()), 404
        return exc

    @app.get("/")
    def index() -> ResponseReturnValue:
        return jsonify({"fakestripe": True, "api": "/v1", "controls": "/_fake", **fake.config()})

    return app


class _QuietHandler(WSGIRequestHandler):
    """A request handler that does not log every request (tests run many)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class FakeStripeServer:
    """The fake served over HTTP on 127.0.0.1 from a background thread; ``port=0`` picks a free port."""

    def __init__(
        self,
        db: str = ":memory:",
        *,
        webhook_url: str | None = None,
        webhook_secret: str = "",
        seed: int | None = None,
        port: int = 0,
        quiet: bool = True,
        **options: Any,
    ) -> None:
        self.fake = FakeStripe(db, webhook_url=webhook_url, webhook_secret=webhook_secret, seed=seed, **options)
        self._port = port
        self._quiet = quiet
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:12111``."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://{HOST}:{self._server.server_port}"

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> FakeStripeServer:
        """Bind 127.0.0.1, start serving and delivering webhooks; return self."""
        handler = _QuietHandler if self._quiet else WSGIRequestHandler
        self._server = make_server(HOST, self._port, self.fake.app, threaded=True, request_handler=handler)
        self.fake.engine.public_url = self.url
        # A short poll interval lets stop() return at once instead of after the default half second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="fakestripe-http", daemon=True
        )
        self._thread.start()
        self.fake.dispatcher.start()
        self.fake.requeue_undelivered()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the command line's mode); starts if not started."""
        if self._server is None:
            self.start()
        assert self._thread is not None
        try:
            self._thread.join()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, stop deliveries and close the database."""
        self.fake.dispatcher.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.fake.store.close()
        self._server = None

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Shortcuts for tests that drive the fake in-process rather than through /_fake.

    def advance(self, subscription: str) -> dict[str, Any]:
        """Advance a subscription to its next billing moment."""
        return self.fake.engine.advance(subscription)

    def dispute(self, charge: str, reason: str = "fraudulent") -> dict[str, Any]:
        """Open a dispute on a charge."""
        return self.fake.engine.create_dispute(charge, reason)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued webhook delivery is done."""
        return self.fake.dispatcher.flush(timeout)

    def deliveries(self) -> list[dict[str, Any]]:
        """Return the webhook delivery log."""
        return self.fake.store.deliveries()

    def configure(self, **changes: Any) -> None:
        """Change delivery switches or billing settings."""
        self.fake.configure(**changes)

    def reset(self) -> None:
        """Forget everything."""
        self.fake.reset()
