"""Test controls under ``/_fake``: the clock, disputes, delivery switches, flushing and reset (no auth, local only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from newsletter.fakestripe.errors import StripeAPIError, invalid, missing

if TYPE_CHECKING:
    from newsletter.fakestripe.server import FakeStripe

bp = Blueprint("fakestripe_control", __name__, url_prefix="/_fake")


def _fake() -> FakeStripe:
    return current_app.extensions["fakestripe"]


def _input() -> dict[str, Any]:
    """Read a form or a JSON body, whichever was sent."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise invalid("body", "Send a JSON object.")
        return data
    return request.form.to_dict()


def _float(data: dict[str, Any], key: str, low: float, high: float) -> float:
    try:
        value = float(data[key])
    except (TypeError, ValueError):
        raise invalid(key, f"{key} must be a number.") from None
    if not low <= value <= high:
        raise invalid(key, f"{key} must be between {low} and {high}.")
    return value


def _int(data: dict[str, Any], key: str, low: int) -> int:
    try:
        value = int(data[key])
    except (TypeError, ValueError):
        raise invalid(key, f"{key} must be an integer.") from None
    if value < low:
        raise invalid(key, f"{key} must be at least {low}.")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off", ""):
        return False
    raise invalid(key, f"{key} must be true or false.")


@bp.post("/advance")
def advance() -> ResponseReturnValue:
    """Advance a subscription to its next renewal, retry or end."""
    data = _input()
    if not data.get("subscription"):
        raise missing("subscription")
    return jsonify(_fake().engine.advance(str(data["subscription"])))


@bp.post("/dispute")
def dispute() -> ResponseReturnValue:
    """Open a dispute on a charge."""
    data = _input()
    if not data.get("charge"):
        raise missing("charge")
    reason = str(data.get("reason") or "fraudulent")
    return jsonify(_fake().engine.create_dispute(str(data["charge"]), reason))


@bp.route("/config", methods=["GET", "POST"])
def config() -> ResponseReturnValue:
    """Show or change webhook delivery switches and billing settings."""
    fake = _fake()
    if request.method == "POST":
        fake.configure(**_parse_config(_input()))
    return jsonify(fake.config())


def _parse_config(data: dict[str, Any]) -> dict[str, Any]:
    parsers = {
        "duplicate": lambda: _float(data, "duplicate", 0.0, 1.0),
        "delay": lambda: _float(data, "delay", 0.0, 60.0),
        "reorder": lambda: _bool(data, "reorder"),
        "hold": lambda: _bool(data, "hold"),
        "seed": lambda: _int(data, "seed", 0),
        "webhook_url": lambda: str(data["webhook_url"]) or None,
        "webhook_secret": lambda: str(data["webhook_secret"]),
        "max_attempts": lambda: _int(data, "max_attempts", 1),
        "retry_backoff": lambda: _float(data, "retry_backoff", 0.0, 60.0),
        "dunning_retries": lambda: _int(data, "dunning_retries", 0),
        "dunning_final_action": lambda: _choice(data, "dunning_final_action", ("canceled", "unpaid")),
        "retry_every_days": lambda: _int(data, "retry_every_days", 1),
    }
    unknown = sorted(set(data) - set(parsers))
    if unknown:
        raise invalid(unknown[0], f"Unknown setting: {unknown[0]}", "parameter_unknown")
    return {key: parse() for key, parse in parsers.items() if key in data}


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = str(data[key])
    if value not in choices:
        raise invalid(key, f"{key} must be one of {', '.join(choices)}.")
    return value


@bp.post("/deliveries/flush")
def flush() -> ResponseReturnValue:
    """Block until every queued webhook delivery is done (504 if ``timeout`` seconds pass first)."""
    data = _input()
    timeout = _float(data, "timeout", 0.0, 300.0) if "timeout" in data else 30.0
    fake = _fake()
    done = fake.dispatcher.flush(timeout)
    return jsonify({"flushed": done, "pending": fake.dispatcher.pending()}), 200 if done else 504


@bp.get("/deliveries")
def deliveries() -> ResponseReturnValue:
    """List webhook delivery attempts, oldest first, with their HTTP status."""
    return jsonify({"object": "list", "data": _fake().store.deliveries()})


@bp.post("/reset")
def reset() -> ResponseReturnValue:
    """Forget all objects, events, deliveries and idempotency keys."""
    _fake().reset()
    return jsonify({"reset": True})


@bp.errorhandler(StripeAPIError)
def stripe_error(exc: StripeAPIError) -> ResponseReturnValue:
    """Answer control errors in Stripe's error shape too."""
    return jsonify(exc.body()), exc.status
