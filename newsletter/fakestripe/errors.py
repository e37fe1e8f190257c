"""Stripe-style API errors: the HTTP status and the ``{"error": {...}}`` body stripe-python maps to exceptions."""

from __future__ import annotations

from typing import Any


class StripeAPIError(Exception):
    """An error answered to the client exactly as Stripe would shape it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """Return the JSON body Stripe sends for this error."""
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def missing(param: str) -> StripeAPIError:
    """Return the error for a required parameter that was not sent."""
    return StripeAPIError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown(param: str) -> StripeAPIError:
    """Return the error for a parameter the endpoint does not take."""
    return StripeAPIError(
        400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param
    )


def invalid(param: str, message: str, code: str | None = None) -> StripeAPIError:
    """Return the error for a parameter whose value is not acceptable."""
    return StripeAPIError(400, message, code=code, param=param)


def no_such(label: str, object_id: str, *, param: str | None = None) -> StripeAPIError:
    """Return "No such ..." : 404 for an id in the path, 400 for an id given as a parameter."""
    status = 400 if param else 404
    return StripeAPIError(
        status, f"No such {label}: '{object_id}'", code="resource_missing", param=param or "id"
    )


def card_declined(
    message: str,
    *,
    code: str = "card_declined",
    decline_code: str | None = "generic_decline",
    charge: str | None = None,
    payment_intent: dict[str, Any] | None = None,
) -> StripeAPIError:
    """Return the 402 card error Stripe answers when a charge it was asked to make is declined."""
    extra: dict[str, Any] = {}
    if decline_code:
        extra["decline_code"] = decline_code
    if charge:
        extra["charge"] = charge
    if payment_intent is not None:
        extra["payment_intent"] = payment_intent
    return StripeAPIError(402, message, type="card_error", code=code, **extra)
