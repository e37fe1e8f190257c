"""Herald's only door to Stripe: a thin ``StripeClient`` wrapper whose methods take and return plain values."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import stripe

# stripe-python logs every request and response at INFO; Herald logs the failures that matter itself.
logging.getLogger("stripe").setLevel(logging.WARNING)

# Callers catch these through the gateway, since no other Herald module may import stripe.
StripeError = stripe.StripeError
CardError = stripe.CardError
InvalidRequestError = stripe.InvalidRequestError
IdempotencyError = stripe.IdempotencyError
AuthenticationError = stripe.AuthenticationError
APIConnectionError = stripe.APIConnectionError
RateLimitError = stripe.RateLimitError

# Stripe accepts at most ten lookup keys per price listing.
_LOOKUP_KEYS_PER_REQUEST = 10


class WebhookSignatureError(ValueError):
    """A webhook whose signature, timestamp or body cannot be trusted; answer it with 400."""


@dataclass(frozen=True)
class Tier:
    """A price Herald sells, found by its lookup key; ``unit_amount=None`` means pay what you want."""

    lookup_key: str
    product_name: str
    currency: str
    unit_amount: int | None
    interval: str | None = None  # "month" or "year"; None for one-time payments such as donations
    minimum: int | None = None
    maximum: int | None = None


def _options(idempotency_key: str | None) -> dict[str, Any]:
    # Without a key of ours, stripe-python adds a random one, which only covers its own retries.
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


class StripeGateway:
    """Stripe's API as Herald uses it; point ``api_base`` at the local fake in development and tests."""

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        webhook_secret: str = "",
        max_network_retries: int = 2,
        webhook_tolerance: int = stripe.Webhook.DEFAULT_TOLERANCE,
    ) -> None:
        base_addresses: Any = {"api": api_base, "connect": api_base, "files": api_base} if api_base else None
        self.client = stripe.StripeClient(
            api_key, base_addresses=base_addresses, max_network_retries=max_network_retries
        )
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance

    # -- catalogue -----------------------------------------------------------------------------

    def find_prices_by_lookup_keys(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the active prices carrying these lookup keys, by lookup key (missing keys are absent)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _LOOKUP_KEYS_PER_REQUEST):
            chunk = wanted[start : start + _LOOKUP_KEYS_PER_REQUEST]
            page = self.client.v1.prices.list(params={"lookup_keys": chunk, "active": True, "limit": 100})
            for price in page.auto_paging_iter():
                found[price.lookup_key] = price.to_dict()
        return found

    def ensure_catalog(self, tiers: Iterable[Tier]) -> dict[str, dict[str, Any]]:
        """Create whatever prices (and products) are missing or changed, so every tier's lookup key resolves."""
        tiers = list(tiers)
        existing = self.find_prices_by_lookup_keys(t.lookup_key for t in tiers)
        products: dict[str, str] = {}
        for price in existing.values():
            product = self.client.v1.products.retrieve(price["product"])
            products.setdefault(product.name, product.id)
        result: dict[str, dict[str, Any]] = {}
        for tier in tiers:
            price = existing.get(tier.lookup_key)
            if price is not None and _matches(price, tier):
                result[tier.lookup_key] = price
                continue
            if tier.product_name not in products:
                product = self.client.v1.products.create(
                    params={"name": tier.product_name},
                    options=_options(f"herald-product:{tier.product_name}"),
                )
                products[tier.product_name] = product.id
            params: dict[str, Any] = {
                "product": products[tier.product_name],
                "currency": tier.currency,
                "lookup_key": tier.lookup_key,
                # Prices cannot change amount; a changed tier gets a new price that takes the key over.
                "transfer_lookup_key": True,
            }
            if tier.unit_amount is None:
                params["custom_unit_amount"] = {"enabled": True, "minimum": tier.minimum, "maximum": tier.maximum}
            else:
                params["unit_amount"] = tier.unit_amount
            if tier.interval:
                params["recurring"] = {"interval": tier.interval}
            key = f"herald-price:{tier.lookup_key}:{tier.currency}:{tier.unit_amount}:{tier.interval}"
            created = self.client.v1.prices.create(params=params, options=_options(key))
            result[tier.lookup_key] = created.to_dict()
        return result

    # -- checkout and portal ---------------------------------------------------------------------

    def create_checkout_session(self, *, idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """Create a Checkout Session (``mode``, ``line_items``, ``success_url`` ... as Stripe names them)."""
        session = self.client.v1.checkout.sessions.create(params=params, options=_options(idempotency_key))
        return session.to_dict()

    def retrieve_checkout_session(self, session_id: str, expand: list[str] | None = None) -> dict[str, Any]:
        """Return a Checkout Session, optionally expanding e.g. ``subscription`` or ``line_items``."""
        params: dict[str, Any] = {"expand": expand} if expand else {}
        return self.client.v1.checkout.sessions.retrieve(session_id, params=params).to_dict()

    def create_portal_session(
        self, customer: str, return_url: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a short-lived customer portal session; redirect the member to its ``url`` at once."""
        session = self.client.v1.billing_portal.sessions.create(
            params={"customer": customer, "return_url": return_url}, options=_options(idempotency_key)
        )
        return session.to_dict()

    # -- subscriptions and invoices ----------------------------------------------------------------

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Return a subscription as Stripe holds it now (the source of truth for a membership)."""
        return self.client.v1.subscriptions.retrieve(subscription_id).to_dict()

    def list_subscriptions(self, status: str = "all", customer: str | None = None) -> list[dict[str, Any]]:
        """Return every subscription with this status (``all`` includes canceled ones), across all pages."""
        params: dict[str, Any] = {"status": status, "limit": 100}
        if customer:
            params["customer"] = customer
        return [s.to_dict() for s in self.client.v1.subscriptions.list(params=params).auto_paging_iter()]

    def update_subscription(
        self, subscription_id: str, *, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Update a subscription, e.g. ``cancel_at_period_end=True`` or ``metadata={...}``."""
        sub = self.client.v1.subscriptions.update(subscription_id, params=params, options=_options(idempotency_key))
        return sub.to_dict()

    def cancel_subscription(
        self, subscription_id: str, *, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """Cancel a subscription at once."""
        options = _options(idempotency_key)
        return self.client.v1.subscriptions.cancel(subscription_id, params=params, options=options).to_dict()

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Return an invoice; its subscription is under ``parent.subscription_details``."""
        return self.client.v1.invoices.retrieve(invoice_id).to_dict()

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        """Return the payment intent that paid (or is paying) an invoice, through its invoice payments."""
        page = self.client.v1.invoice_payments.list(params={"invoice": invoice_id, "limit": 10})
        for payment in page.data:
            intent = payment.payment.payment_intent
            if intent:
                return intent if isinstance(intent, str) else intent.id
        return None

    def invoice_for_payment_intent(self, payment_intent: str) -> str | None:
        """Return the invoice a payment intent belongs to, or None (e.g. a one-time donation)."""
        params: Any = {"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1}
        page = self.client.v1.invoice_payments.list(params=params)
        for payment in page.data:
            invoice = payment.invoice
            return invoice if isinstance(invoice, str) else invoice.id
        return None

    # -- customers and charges ---------------------------------------------------------------------

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        """Return a customer (``{"deleted": true, ...}`` once deleted)."""
        return self.client.v1.customers.retrieve(customer_id).to_dict()

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        """Return a charge as it is now: ``amount_refunded``, ``refunded``, ``disputed``, ``payment_intent``."""
        return self.client.v1.charges.retrieve(charge_id).to_dict()

    # -- events ------------------------------------------------------------------------------------

    def list_events(
        self,
        types: Iterable[str] | None = None,
        *,
        created_after: int | None = None,
        delivery_success: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Return events newest first across all pages, e.g. the undelivered ones after an outage."""
        return list(self.iter_events(types, created_after=created_after, delivery_success=delivery_success))

    def iter_events(
        self,
        types: Iterable[str] | None = None,
        *,
        created_after: int | None = None,
        delivery_success: bool | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield events newest first, fetching pages as needed."""
        params: dict[str, Any] = {"limit": 100}
        if types:
            params["types"] = list(types)
        if created_after is not None:
            params["created"] = {"gt": created_after}
        if delivery_success is not None:
            params["delivery_success"] = delivery_success
        for event in self.client.v1.events.list(params=params).auto_paging_iter():
            yield event.to_dict()

    def construct_event(self, payload: bytes, sig_header: str) -> dict[str, Any]:
        """Verify a webhook's signature on its raw body and return the event; raise WebhookSignatureError if not."""
        if not self.webhook_secret:
            raise WebhookSignatureError("no webhook secret is configured")
        try:
            event = stripe.Webhook.construct_event(payload, sig_header, self.webhook_secret, self.webhook_tolerance)
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureError(str(exc)) from exc
        except ValueError as exc:
            # Not JSON, or not UTF-8: stripe raises ValueError before it can check anything else.
            raise WebhookSignatureError(f"invalid payload: {exc}") from exc
        return event.to_dict()


def _matches(price: dict[str, Any], tier: Tier) -> bool:
    """Return whether an existing price already sells this tier."""
    interval = (price.get("recurring") or {}).get("interval")
    if price["currency"] != tier.currency.lower() or interval != tier.interval:
        return False
    if tier.unit_amount is None:
        custom = price.get("custom_unit_amount") or {}
        return bool(custom) and custom.get("minimum") == tier.minimum and custom.get("maximum") == tier.maximum
    return price["unit_amount"] == tier.unit_amount
