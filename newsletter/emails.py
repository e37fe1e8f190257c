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


BUILDERS: dict[str, Callable[[Subscriber, dict], Built]] = {
    "confirm": build_confirm,
    "welcome": build_welcome,
}


def build(kind: str, subscriber: Subscriber, params: dict) -> Built:
    """Return (subject, text, html) for a queued mail, or None when it no longer applies."""
    return BUILDERS[kind](subscriber, params)
