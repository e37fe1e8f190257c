"""The ``/v1`` HTTP API: Stripe's routes, form decoding, auth, idempotency keys, ``expand[]`` and JSON errors."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request

from newsletter.fakestripe import objects
from newsletter.fakestripe.engine import Engine
from newsletter.fakestripe.errors import StripeAPIError, invalid
from newsletter.fakestripe.forms import FormDecodeError, decode
from newsletter.fakestripe.params import (
    Bool,
    Enum,
    Int,
    List,
    Metadata,
    Obj,
    Spec,
    Str,
    validate,
)

bp = Blueprint("fakestripe_api", __name__, url_prefix="/v1")

INTERVAL = Enum("day", "week", "month", "year", required=True)
PRODUCT_DATA = Obj({"name": Str(required=True), "description": Str(), "metadata": Metadata(), "active": Bool()})
PRICE_CORE: dict[str, Spec] = {
    "currency": Str(required=True),
    "unit_amount": Int(minimum=0),
    "product": Str(),
    "product_data": PRODUCT_DATA,
    "recurring": Obj({"interval": INTERVAL, "interval_count": Int(minimum=1)}),
    "tax_behavior": Enum("exclusive", "inclusive", "unspecified"),
}
CANCELLATION_DETAILS = Obj({
    "comment": Str(),
    "feedback": Enum("customer_service", "low_quality", "missing_features", "other", "switched_service",
                     "too_complex", "too_expensive", "unused"),
})

SCHEMAS: dict[str, dict[str, Spec]] = {
    "product_create": {"name": Str(required=True), "id": Str(), "description": Str(), "active": Bool(),
                       "metadata": Metadata()},
    "product_update": {"name": Str(), "description": Str(), "active": Bool(), "metadata": Metadata(),
                       "default_price": Str()},
    "product_list": {"active": Bool(), "ids": List(Str())},
    "price_create": {
        **PRICE_CORE,
        "custom_unit_amount": Obj({"enabled": Bool(required=True), "minimum": Int(minimum=0),
                                   "maximum": Int(minimum=0), "preset": Int(minimum=0)}),
        "lookup_key": Str(max_length=200), "transfer_lookup_key": Bool(), "nickname": Str(),
        "metadata": Metadata(), "active": Bool(),
    },
    "price_update": {"active": Bool(), "metadata": Metadata(), "nickname": Str(), "lookup_key": Str(max_length=200),
                     "transfer_lookup_key": Bool()},
    "price_list": {"active": Bool(), "product": Str(), "currency": Str(), "type": Enum("one_time", "recurring"),
                   "lookup_keys": List(Str(), max_items=10),
                   "recurring": Obj({"interval": Enum("day", "week", "month", "year"),
                                     "usage_type": Enum("licensed", "metered")})},
    "customer_create": {"email": Str(max_length=512), "name": Str(max_length=256), "description": Str(),
                        "phone": Str(max_length=20), "metadata": Metadata()},
    "customer_update": {"email": Str(max_length=512), "name": Str(max_length=256), "description": Str(),
                        "phone": Str(max_length=20), "metadata": Metadata(),
                        "invoice_settings": Obj({"default_payment_method": Str()})},
    "customer_list": {"email": Str(max_length=512)},
    "customer_search": {"query": Str(required=True), "limit": Int(minimum=1, maximum=100), "page": Str()},
    "payment_method_list": {"customer": Str(), "type": Enum("card")},
    "checkout_create": {
        "mode": Enum("payment", "setup", "subscription", required=True),
        "line_items": List(Obj({
            "price": Str(), "quantity": Int(minimum=1),
            "price_data": Obj({**PRICE_CORE, "currency": Str(required=True)}),
        })),
        "success_url": Str(max_length=5000), "cancel_url": Str(max_length=5000),
        "customer": Str(), "customer_email": Str(), "client_reference_id": Str(max_length=200),
        "metadata": Metadata(),
        "subscription_data": Obj({"metadata": Metadata(), "description": Str(max_length=500)}),
        "payment_intent_data": Obj({"metadata": Metadata(), "description": Str(max_length=1000),
                                    "receipt_email": Str()}),
        "submit_type": Enum("auto", "book", "donate", "pay", "subscribe"),
        "customer_creation": Enum("always", "if_required"),
        "expires_at": Int(), "locale": Str(), "allow_promotion_codes": Bool(),
        "billing_address_collection": Enum("auto", "required"),
        "payment_method_types": List(Enum("card")),
        "ui_mode": Enum("hosted"),
    },
    "checkout_list": {"customer": Str(), "subscription": Str(), "payment_intent": Str(),
                      "status": Enum("complete", "expired", "open")},
    "portal_create": {
        "customer": Str(required=True), "return_url": Str(max_length=5000), "configuration": Str(),
        "locale": Str(),
        "flow_data": Obj({
            "type": Enum("payment_method_update", "subscription_cancel", "subscription_update",
                         "subscription_update_confirm", required=True),
            "subscription_cancel": Obj({"subscription": Str(required=True)}),
            "after_completion": Obj({
                "type": Enum("hosted_confirmation", "portal_homepage", "redirect", required=True),
                "redirect": Obj({"return_url": Str(required=True)}),
                "hosted_confirmation": Obj({"custom_message": Str()}),
            }),
        }),
    },
    "subscription_update": {
        "cancel_at_period_end": Bool(), "cancel_at": Int(), "metadata": Metadata(), "description": Str(),
        "default_payment_method": Str(),
        "items": List(Obj({"id": Str(), "price": Str(), "quantity": Int(minimum=0), "deleted": Bool()})),
        "proration_behavior": Enum("always_invoice", "create_prorations", "none"),
        "payment_behavior": Enum("allow_incomplete", "default_incomplete", "error_if_incomplete",
                                 "pending_if_incomplete"),
        "cancellation_details": CANCELLATION_DETAILS,
    },
    "subscription_cancel": {"invoice_now": Bool(), "prorate": Bool(), "cancellation_details": CANCELLATION_DETAILS},
    "subscription_list": {
        "customer": Str(), "price": Str(),
        "status": Enum("active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due",
                       "paused", "trialing", "unpaid"),
    },
    "invoice_list": {"customer": Str(), "subscription": Str(),
                     "status": Enum("draft", "open", "paid", "uncollectible", "void")},
    "invoice_pay": {"payment_method": Str(), "off_session": Bool()},
    "invoice_payment_list": {"invoice": Str(),
                             "payment": Obj({"type": Enum("payment_intent", required=True),
                                             "payment_intent": Str()})},
    "charge_list": {"customer": Str(), "payment_intent": Str()},
    "refund_create": {"charge": Str(), "payment_intent": Str(), "amount": Int(minimum=1),
                      "reason": Enum("duplicate", "fraudulent", "requested_by_customer"), "metadata": Metadata()},
    "refund_list": {"charge": Str(), "payment_intent": Str()},
    "event_list": {"type": Str(), "types": List(Str(), max_items=20), "delivery_success": Bool()},
}

LABELS = {
    "product": "product", "price": "price", "customer": "customer", "payment_method": "PaymentMethod",
    "checkout.session": "checkout.session", "subscription": "subscription", "invoice": "invoice",
    "invoice_payment": "invoice_payment", "payment_intent": "payment_intent", "charge": "charge",
    "refund": "refund", "dispute": "dispute", "event": "event",
}


def _engine() -> Engine:
    return current_app.extensions["fakestripe"].engine


def _params() -> dict[str, Any]:
    raw = request.get_data(as_text=True) if request.method == "POST" else request.query_string.decode()
    try:
        return decode(parse_qsl(raw, keep_blank_values=True))
    except FormDecodeError as exc:
        raise invalid(exc.param, str(exc)) from None


def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    key = ""
    if header.startswith("Bearer "):
        key = header[len("Bearer "):].strip()
    elif header.startswith("Basic "):
        try:
            key = base64.b64decode(header[len("Basic "):]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    if not key:
        raise StripeAPIError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
            "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        )
    if not (key.startswith("sk_test_") or key.startswith("rk_test_")) or len(key) < 12:
        shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
        raise StripeAPIError(401, f"Invalid API Key provided: {shown}", code="api_key_invalid")


def _json(status: int, body: Any, request_id: str, extra: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body, indent=2)
    response = Response(text, status=status, mimetype="application/json")
    response.headers["Request-Id"] = request_id
    response.headers["Stripe-Version"] = objects.API_VERSION
    for name, value in (extra or {}).items():
        response.headers[name] = value
    return response


def _expand(engine: Engine, node: Any, parts: list[str], path: str) -> None:
    if not parts or not isinstance(node, dict):
        return
    key, rest = parts[0], parts[1:]
    if node.get("object") in ("list", "search_result") and key == "data":
        for item in node["data"]:
            _expand(engine, item, rest, path)
        return
    if node.get("object") == "checkout.session" and key == "line_items":
        node[key] = engine.checkout_line_items(node["id"], {"limit": 100})
    elif node.get("object") == "invoice" and key == "payments":
        node[key] = engine.list_invoice_payments({"invoice": node["id"], "limit": 100})
    elif key not in node:
        raise invalid("expand", f"This property cannot be expanded ({path}).")
    value = node[key]
    if value is not None and not isinstance(value, str | dict):
        raise invalid("expand", f"This property cannot be expanded ({path}).")
    if isinstance(value, str):
        target = engine.store.get(value)
        if target is None:
            raise invalid("expand", f"This property cannot be expanded ({path}).")
        node[key] = value = engine.render(target)
    _expand(engine, value, rest, path)


def api(rule: str, methods: tuple[str, ...], schema: str | None = None, *,
        listing: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Register a Stripe route: validate params, run under the store lock, honour Idempotency-Key."""

    def decorator(handler: Callable[..., Any]) -> Callable[..., Response]:
        fields = SCHEMAS[schema] if schema else {}

        def view(**kwargs: Any) -> Response:
            engine = _engine()
            request_id = engine.new_id("req_", 14)
            _authenticate()
            raw = _params()
            key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            if key is not None and len(key) > 255:
                raise invalid("Idempotency-Key", "Idempotency keys may be at most 255 characters long.")
            fingerprint = hashlib.sha256(
                json.dumps([request.method, request.path, raw], sort_keys=True).encode()
            ).hexdigest()
            with engine.store.lock:
                if key is not None:
                    stored = engine.store.idempotent_response(key)
                    if stored is not None:
                        old_fingerprint, status, body, original = stored
                        if old_fingerprint != fingerprint:
                            raise StripeAPIError(
                                400,
                                "Keys for idempotent requests can only be used with the same parameters they "
                                f"were first used with. Try using a key other than '{key}' if you meant to "
                                "execute a different request.",
                                type="idempotency_error",
                            )
                        return _json(status, body, request_id,
                                     {"Idempotent-Replayed": "true", "Original-Request": original,
                                      "Idempotency-Key": key})
                engine.context.request_id = request_id
                engine.context.idempotency_key = key
                try:
                    params = validate(fields, raw, listing=listing)
                    result = handler(engine, params, **kwargs)
                    for path in params.get("expand") or []:
                        _expand(engine, result, path.split("."), path)
                    status, body = 200, json.dumps(result, indent=2)
                except StripeAPIError as exc:
                    # Validation failures are not stored (Stripe only keeps requests that started
                    # executing); declines and server errors are, so a retry sees the same answer.
                    if key is None or (exc.status != 402 and exc.status < 500):
                        raise
                    status, body = exc.status, json.dumps(exc.body(), indent=2)
                finally:
                    engine.context.request_id = None
                    engine.context.idempotency_key = None
                if key is not None:
                    engine.store.save_idempotent_response(key, fingerprint, status, body, request_id)
                extra = {"Idempotency-Key": key} if key else {}
                return _json(status, body, request_id, extra)

        view.__name__ = handler.__name__
        bp.add_url_rule(rule, endpoint=handler.__name__, view_func=view, methods=list(methods))
        return view

    return decorator


def _retrieve(kind: str) -> Callable[[Engine, dict[str, Any], str], dict[str, Any]]:
    def handler(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
        return engine.render(engine.get(kind, object_id, LABELS[kind]))

    return handler


for _kind, _path in [
    ("product", "/products/<object_id>"), ("price", "/prices/<object_id>"),
    ("payment_method", "/payment_methods/<object_id>"), ("checkout.session", "/checkout/sessions/<object_id>"),
    ("subscription", "/subscriptions/<object_id>"), ("invoice", "/invoices/<object_id>"),
    ("invoice_payment", "/invoice_payments/<object_id>"), ("payment_intent", "/payment_intents/<object_id>"),
    ("charge", "/charges/<object_id>"), ("refund", "/refunds/<object_id>"), ("dispute", "/disputes/<object_id>"),
    ("event", "/events/<object_id>"),
]:
    _handler = _retrieve(_kind)
    _handler.__name__ = f"retrieve_{_kind.replace('.', '_')}"
    api(_path, ("GET",))(_handler)


@api("/customers/<object_id>", ("GET",))
def retrieve_customer(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Retrieve a customer; a deleted one answers ``{"deleted": true}`` as in Stripe."""
    return engine.render(engine.get("customer", object_id, "customer"))


@api("/products", ("POST",), "product_create")
def create_product(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Create a product."""
    return engine.create_product(params)


@api("/products/<object_id>", ("POST",), "product_update")
def update_product(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Update a product."""
    return engine.update_product(object_id, params)


@api("/products", ("GET",), "product_list", listing=True)
def list_products(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List products."""
    return engine.list_products(params)


@api("/prices", ("POST",), "price_create")
def create_price(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Create a price."""
    return engine.create_price(params)


@api("/prices/<object_id>", ("POST",), "price_update")
def update_price(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Update a price."""
    return engine.update_price(object_id, params)


@api("/prices", ("GET",), "price_list", listing=True)
def list_prices(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List prices, e.g. by ``lookup_keys[]``."""
    return engine.list_prices(params)


@api("/customers", ("POST",), "customer_create")
def create_customer(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Create a customer."""
    return engine.create_customer(params)


@api("/customers/search", ("GET",), "customer_search")
def search_customers(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Search customers by email, name, phone or metadata."""
    return engine.search_customers(params)


@api("/customers/<object_id>", ("POST",), "customer_update")
def update_customer(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Update a customer."""
    return engine.update_customer(object_id, params)


@api("/customers/<object_id>", ("DELETE",))
def delete_customer(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Delete a customer."""
    return engine.delete_customer(object_id)


@api("/customers", ("GET",), "customer_list", listing=True)
def list_customers(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List customers."""
    return engine.list_customers(params)


@api("/payment_methods", ("GET",), "payment_method_list", listing=True)
def list_payment_methods(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List a customer's card payment methods."""
    items = [pm for pm in engine.store.all("payment_method") if pm["customer"]]
    if params.get("customer"):
        items = [pm for pm in items if pm["customer"] == params["customer"]]
    return engine.paginate(items, params, "/v1/payment_methods")


@api("/checkout/sessions", ("POST",), "checkout_create")
def create_checkout_session(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Create a Checkout Session."""
    return engine.create_checkout_session(params)


@api("/checkout/sessions", ("GET",), "checkout_list", listing=True)
def list_checkout_sessions(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List Checkout Sessions."""
    return engine.list_checkout_sessions(params)


@api("/checkout/sessions/<object_id>/line_items", ("GET",), listing=True)
def list_checkout_line_items(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """List a Checkout Session's line items."""
    return engine.checkout_line_items(object_id, params)


@api("/checkout/sessions/<object_id>/expire", ("POST",))
def expire_checkout_session(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Expire an open Checkout Session."""
    return engine.expire_checkout_session(object_id)


@api("/billing_portal/sessions", ("POST",), "portal_create")
def create_portal_session(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Create a customer portal session."""
    return engine.create_portal_session(params)


@api("/subscriptions/<object_id>", ("POST",), "subscription_update")
def update_subscription(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Update a subscription."""
    return engine.update_subscription(object_id, params)


@api("/subscriptions/<object_id>", ("DELETE",), "subscription_cancel")
def cancel_subscription(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Cancel a subscription at once."""
    return engine.cancel_subscription(object_id, params)


@api("/subscriptions", ("GET",), "subscription_list", listing=True)
def list_subscriptions(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List subscriptions."""
    return engine.list_subscriptions(params)


@api("/invoices", ("GET",), "invoice_list", listing=True)
def list_invoices(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List invoices."""
    return engine.list_invoices(params)


@api("/invoices/<object_id>/pay", ("POST",), "invoice_pay")
def pay_invoice(engine: Engine, params: dict[str, Any], object_id: str) -> dict[str, Any]:
    """Attempt payment of an open invoice now."""
    invoice, failure = engine.pay_invoice(object_id, params)
    if failure is not None:
        # Raised outside the engine's transaction, so the failed attempt stays recorded.
        raise failure
    return invoice


@api("/invoice_payments", ("GET",), "invoice_payment_list", listing=True)
def list_invoice_payments(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List invoice payments."""
    return engine.list_invoice_payments(params)


@api("/charges", ("GET",), "charge_list", listing=True)
def list_charges(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List charges."""
    items = engine.store.all("charge")
    for key in ("customer", "payment_intent"):
        if params.get(key):
            items = [c for c in items if c[key] == params[key]]
    return engine.paginate(items, params, "/v1/charges")


@api("/refunds", ("POST",), "refund_create")
def create_refund(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Refund a charge or a payment intent's charge."""
    return engine.create_refund(params)


@api("/refunds", ("GET",), "refund_list", listing=True)
def list_refunds(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List refunds."""
    return engine.list_refunds(params)


@api("/events", ("GET",), "event_list", listing=True)
def list_events(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """List events, newest first."""
    return engine.list_events(params)
