"""Joining and giving: validate the membership page's forms, then open a Stripe Checkout Session for them."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from flask import current_app

from newsletter import subscribers
from newsletter.addresses import InvalidInput, clean_name, normalize_email
from newsletter.billing import gateway as stripe_errors
from newsletter.billing import memberships, stripe_gateway, tiers
from newsletter.extensions import db
from newsletter.models import BillingInterval, Newsletter, Tier
from newsletter.subscribers import Context
from newsletter.urls import external_url

log = logging.getLogger(__name__)

# The form's nonce: random URL-safe text, so a double click or a retried POST reuses one Checkout Session.
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_AMOUNT = re.compile(r"\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*")


class CheckoutUnavailable(Exception):
    """Stripe could not be asked, or does not sell the tier; the message is for the reader."""


class AlreadyMember(Exception):
    """The address already has a membership with access: joining twice would bill twice."""


@dataclass
class CheckoutStart:
    """Where to send the reader (Stripe's hosted page) and the mail jobs to enqueue."""

    url: str
    subscriber_id: int
    mail_job_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    tier: Tier
    interval: BillingInterval


def parse_plan(value: str) -> Plan:
    """Read the form's "<tier slug>:<month|year>" into an active tier and interval, or raise InvalidInput."""
    slug, _, interval = (value or "").partition(":")
    tier = tiers.find_tier(slug.strip()) if slug else None
    if tier is None or not tier.active or interval not in {i.value for i in BillingInterval}:
        raise InvalidInput("Please choose one of the memberships shown.", "plan")
    return Plan(tier, BillingInterval(interval))


def parse_donation(value: str) -> int:
    """Read a donation typed in whole units ("25", "25.50") into minor units within the configured bounds."""
    config = current_app.config["HERALD"]
    low, high = (int(Decimal(str(v)) * 100) for v in (config.DONATION_MIN, config.DONATION_MAX))
    match = _AMOUNT.fullmatch(value or "")
    if not match:
        raise InvalidInput("Please enter an amount as a number, for example 25 or 25.50.", "amount")
    try:
        amount = int(Decimal(f"{match.group(1)}.{(match.group(2) or '0').ljust(2, '0')}") * 100)
    except InvalidOperation:
        raise InvalidInput("Please enter an amount as a number, for example 25 or 25.50.", "amount") from None
    currency = config.DONATION_CURRENCY.upper()
    if amount < low:
        raise InvalidInput(f"The smallest donation we can take is {low / 100:,.2f} {currency}.", "amount")
    if amount > high:
        raise InvalidInput(f"The largest donation we can take online is {high / 100:,.2f} {currency}.", "amount")
    return amount


def _check_nonce(nonce: str) -> str:
    if not _NONCE.fullmatch(nonce or ""):
        raise InvalidInput("This form has expired. Please reload the page and try again.", "nonce")
    return nonce


def digest_newsletter() -> Newsletter | None:
    """The newsletter the page's "also get the daily digest" box subscribes to, if it exists and is active."""
    slug = current_app.config["HERALD"].MEMBERSHIP_NEWSLETTER
    return next((n for n in subscribers.active_newsletters() if n.slug == slug), None)


def _reader(email: str, name: str | None, want_digest: bool, ctx: Context) -> tuple[int, list[int]]:
    """Make sure the reader is a subscriber (linked by normalized address); start the digest's opt-in if asked."""
    newsletter = digest_newsletter() if want_digest else None
    if newsletter is None:
        subscriber = subscribers.get_or_create_subscriber(email, name)
        db.session.commit()
        return subscriber.id, []
    existing = subscribers.find_subscriber(email)
    if existing is not None and existing.is_confirmed:
        outcome = subscribers.add_newsletters(existing.id, [newsletter.slug], ctx)
        return existing.id, outcome.mail_job_ids
    outcome = subscribers.signup(email, name, [newsletter.slug], ctx)
    # A suppressed address records nothing in signup; it still needs a subscriber to pay as.
    subscriber = subscribers.get_or_create_subscriber(email, name)
    db.session.commit()
    return subscriber.id, outcome.mail_job_ids


def _idempotency_key(kind: str, nonce: str, subscriber_id: int, choice: str) -> str:
    # Deterministic per form submission: the same nonce and choice give the same Checkout Session.
    digest = hashlib.sha256(f"{kind}|{nonce}|{subscriber_id}|{choice}".encode()).hexdigest()[:48]
    return f"herald-checkout-{kind}-{digest}"


def _who(subscriber_id: int, email: str) -> dict[str, str]:
    # Reuse the Stripe customer of an earlier membership, so the portal shows everything in one place.
    customer = memberships.billing_customer(subscriber_id)
    return {"customer": customer} if customer else {"customer_email": email}


def _create(params: dict, idempotency_key: str) -> str:
    try:
        session = stripe_gateway().create_checkout_session(idempotency_key=idempotency_key, **params)
    except stripe_errors.StripeError as exc:
        log.warning("checkout session failed: %s", exc)
        raise CheckoutUnavailable("Payments can't be taken right now. Nothing was charged; please try again.") from None
    return session["url"]


def _return_urls(kind: str) -> dict[str, str]:
    # Stripe fills in {CHECKOUT_SESSION_ID}; built by hand so the braces are not URL-encoded.
    return {
        "success_url": external_url("membership.thanks") + f"?kind={kind}&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": external_url("membership.page"),
    }


def start_membership(email: str, name: str | None, plan: str, want_digest: bool, nonce: str,
                     ctx: Context) -> CheckoutStart:
    """Validate a join, make the reader a subscriber, and open a subscription Checkout Session.

    Nothing is granted here: the membership exists once Stripe's webhooks say it was paid.
    """
    address = normalize_email(email)
    clean_name(name)
    chosen = parse_plan(plan)
    _check_nonce(nonce)
    subscriber_id, mail_job_ids = _reader(address.email, name, want_digest, ctx)
    if memberships.has_access(subscriber_id):
        raise AlreadyMember()
    price = _price(chosen)
    metadata = {"subscriber_id": str(subscriber_id), "tier": chosen.tier.slug}
    params = {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "client_reference_id": str(subscriber_id),
        "metadata": {**metadata, "kind": "membership"},
        "subscription_data": {"metadata": metadata},
        **_who(subscriber_id, address.email),
        **_return_urls("membership"),
    }
    key = _idempotency_key("membership", nonce, subscriber_id, f"{chosen.tier.slug}:{chosen.interval}")
    return CheckoutStart(_create(params, key), subscriber_id, mail_job_ids)


def _price(plan: Plan) -> str:
    try:
        price = tiers.price_id(plan.tier, plan.interval)
    except stripe_errors.StripeError as exc:
        log.warning("price lookup failed: %s", exc)
        raise CheckoutUnavailable("Payments can't be taken right now. Nothing was charged; please try again.") from None
    if price is None:
        log.error("Stripe has no price with lookup key %s (run `flask tiers sync`)",
                  plan.tier.lookup_key(plan.interval))
        raise CheckoutUnavailable("This membership can't be joined right now. Please try again later.")
    return price


def start_donation(email: str, name: str | None, amount: str, want_digest: bool, nonce: str,
                   ctx: Context) -> CheckoutStart:
    """Validate a one-time gift and open a payment Checkout Session for it (a donor is not a member)."""
    address = normalize_email(email)
    clean_name(name)
    minor = parse_donation(amount)
    _check_nonce(nonce)
    config = current_app.config["HERALD"]
    subscriber_id, mail_job_ids = _reader(address.email, name, want_digest, ctx)
    metadata = {"subscriber_id": str(subscriber_id), "kind": "donation"}
    params = {
        "mode": "payment",
        "submit_type": "donate",
        "line_items": [{
            "price_data": {
                "currency": config.DONATION_CURRENCY.lower(),
                "unit_amount": minor,
                "product_data": {"name": f"Donation to {config.NEWSROOM_NAME}"},
            },
            "quantity": 1,
        }],
        "client_reference_id": str(subscriber_id),
        "metadata": metadata,
        # Copied onto the charge, so a refund or dispute finds the donation even before the Checkout event.
        "payment_intent_data": {"metadata": metadata},
        **_who(subscriber_id, address.email),
        **_return_urls("donation"),
    }
    key = _idempotency_key("donation", nonce, subscriber_id, str(minor))
    return CheckoutStart(_create(params, key), subscriber_id, mail_job_ids)
