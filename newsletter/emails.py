"""One small builder per transactional mail: what goes into its template pair."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import Newsletter, Subscriber, SubscriptionStatus
from newsletter.notifications import render_mail
from newsletter.urls import external_url

Built = tuple[str, str, str] | None


def _newsletters(ids: list[int]) -> list[Newsletter]:
    return list(db.session.scalars(select(Newsletter).where(Newsletter.id.in_(ids)).order_by(Newsletter.position)))


def _common(subscriber: Subscriber) -> dict:
    tokens = current_app.extensions["herald_tokens"]
    return {
        "subscriber": subscriber,
        "postal_address": current_app.config["HERALD"].POSTAL_ADDRESS,
        "preferences_url": external_url("public.preferences", token=tokens.preferences(subscriber.id)),
    }


def build_confirm(subscriber: Subscriber, params: dict) -> Built:
    """The double opt-in mail: what they asked for, how often, and the link; no marketing."""
    ids = params.get("newsletters", [])
    pending = {s.newsletter_id for s in subscriber.subscriptions if s.status == SubscriptionStatus.PENDING}
    ids = [i for i in ids if i in pending]
    if not ids:
        return None  # confirmed or withdrawn since: nothing left to ask
    tokens = current_app.extensions["herald_tokens"]
    context = _common(subscriber) | {
        "newsletters": _newsletters(ids),
        "confirm_url": external_url("public.confirm", token=tokens.confirm(subscriber.id, ids)),
        "hours": current_app.config["HERALD"].CONFIRM_TOKEN_HOURS,
    }
    return render_mail("confirm", **context)


def build_welcome(subscriber: Subscriber, params: dict) -> Built:
    """Sent once the reader has confirmed."""
    newsletters = _newsletters(params.get("newsletters", []))
    if not newsletters:
        return None
    return render_mail("welcome", **_common(subscriber), newsletters=newsletters)


def _membership(subscriber: Subscriber, params: dict):
    from newsletter.models import Membership

    return db.session.scalar(select(Membership).where(
        Membership.stripe_subscription_id == params.get("subscription", ""),
        Membership.subscriber_id == subscriber.id,
    ))


def _money(amount: int | None, currency: str) -> str:
    return f"{(amount or 0) / 100:,.2f} {currency.upper()}".strip()


def _account_url() -> str:
    return external_url("account.sign_in_form")


def build_membership_welcome(subscriber: Subscriber, params: dict) -> Built:
    """Sent once per Stripe subscription, when it first proves paid or gives access."""
    membership = _membership(subscriber, params)
    if membership is None:
        return None
    return render_mail("membership_welcome", **_common(subscriber), membership=membership, tier=membership.tier,
                       price=_money(membership.amount, membership.currency), account_url=_account_url())


def build_payment_failed(subscriber: Subscriber, params: dict) -> Built:
    """Sent once per invoice and attempt: the card was declined or needs the bank's confirmation."""
    membership = _membership(subscriber, params)
    if membership is None:
        return None
    return render_mail("payment_failed", **_common(subscriber), membership=membership, tier=membership.tier,
                       amount=_money(params.get("amount"), params.get("currency", "")),
                       fix_url=params.get("url") or _account_url(), account_url=_account_url())


def build_membership_ended(subscriber: Subscriber, params: dict) -> Built:
    """Sent once per Stripe subscription, when a membership that started ends."""
    membership = _membership(subscriber, params)
    if membership is None:
        return None
    return render_mail("membership_ended", **_common(subscriber), membership=membership, tier=membership.tier,
                       membership_url=external_url("membership.page"))


def build_signin(subscriber: Subscriber, params: dict) -> Built:
    """The sign-in link: single use, short-lived; the token carries a nonce, never the address."""
    from newsletter import accounts

    # Issued as the mail is built, so no usable token waits in the mail queue and its time starts now.
    token, minutes = accounts.issue_signin_token(subscriber.id)
    url = external_url("account.sign_in_page", token=token)
    return render_mail("signin", **_common(subscriber), signin_url=url, minutes=minutes)


BUILDERS: dict[str, Callable[[Subscriber, dict], Built]] = {
    "confirm": build_confirm,
    "welcome": build_welcome,
    "membership_welcome": build_membership_welcome,
    "payment_failed": build_payment_failed,
    "membership_ended": build_membership_ended,
    "signin": build_signin,
}


def build(kind: str, subscriber: Subscriber, params: dict) -> Built:
    """Return (subject, text, html) for a queued mail, or None when it no longer applies."""
    return BUILDERS[kind](subscriber, params)
