"""Readers' accounts without passwords: sign-in links by mail, what a signed-in reader sees, the billing portal."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select, update

from newsletter.addresses import normalize_email
from newsletter.billing import gateway as stripe_errors
from newsletter.billing import memberships, stripe_gateway
from newsletter.extensions import db
from newsletter.models import (
    Donation,
    MailJob,
    Membership,
    SigninLink,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.notifications import queue_mail
from newsletter.subscribers import is_suppressed
from newsletter.tokens import ExpiredToken, InvalidToken
from newsletter.urls import external_url

log = logging.getLogger(__name__)

SIGNIN_MINUTES = 30
# At most this many sign-in mails to one address per hour, so the form cannot flood an inbox.
SIGNIN_MAILS_PER_HOUR = 5


class BillingUnavailable(Exception):
    """Stripe could not be reached, or the reader has nothing to manage there; the message is for them."""


def _tokens():
    return current_app.extensions["herald_tokens"]


def _hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def request_signin(email: str) -> list[int]:
    """Queue a sign-in mail if the address is a known, mailable subscriber; return the mail job ids.

    The caller answers the same way whatever happened, so the form tells nobody who is a reader.
    """
    key = normalize_email(email).key  # InvalidInput for something that is no address at all
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == key))
    if subscriber is None or is_suppressed(key):
        return []
    hour_ago = utcnow() - dt.timedelta(hours=1)
    recent = db.session.scalar(
        select(func.count()).select_from(MailJob)
        .where(MailJob.subscriber_id == subscriber.id, MailJob.kind == "signin", MailJob.created_at > hour_ago)
    )
    if recent >= SIGNIN_MAILS_PER_HOUR:
        log.info("sign-in mail limit reached for subscriber %s", subscriber.id)
        return []
    job = queue_mail("signin", subscriber.id, {})
    db.session.commit()
    return [job.id]


def issue_signin_token(subscriber_id: int) -> tuple[str, int]:
    """Store a fresh single-use nonce and return (the signed token carrying it, minutes it lasts); caller commits."""
    nonce = secrets.token_urlsafe(24)
    now = utcnow()
    db.session.add(SigninLink(subscriber_id=subscriber_id, nonce_hash=_hash(nonce), created_at=now,
                              expires_at=now + dt.timedelta(minutes=SIGNIN_MINUTES)))
    db.session.flush()
    return _tokens().signin(subscriber_id, nonce), SIGNIN_MINUTES


def _read(token: str) -> tuple[int, str]:
    return _tokens().read_signin(token, dt.timedelta(minutes=SIGNIN_MINUTES))


def check_signin_token(token: str) -> Subscriber:
    """Return whom an unused, unexpired link signs in, without using it up; raise InvalidToken / ExpiredToken."""
    subscriber_id, nonce = _read(token)
    link = db.session.scalar(select(SigninLink).where(SigninLink.nonce_hash == _hash(nonce)))
    if link is None or link.subscriber_id != subscriber_id:
        raise InvalidToken("unknown sign-in link")
    if link.used_at is not None:
        raise ExpiredToken("sign-in link already used")
    if link.expires_at < utcnow():
        raise ExpiredToken("sign-in link expired")
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    return subscriber


def complete_signin(token: str) -> int:
    """Spend a sign-in link and return the subscriber id to keep in the session; raise InvalidToken / ExpiredToken."""
    subscriber_id, nonce = _read(token)
    now = utcnow()
    spent = db.session.execute(
        update(SigninLink)
        .where(SigninLink.nonce_hash == _hash(nonce), SigninLink.subscriber_id == subscriber_id,
               SigninLink.used_at.is_(None), SigninLink.expires_at > now)
        .values(used_at=now)
    ).rowcount
    db.session.commit()
    if spent != 1:
        # Used, expired or never issued: the reader asks for a new link either way.
        raise ExpiredToken("sign-in link used or expired")
    return subscriber_id


@dataclass
class Overview:
    """What the account page shows."""

    subscriber: Subscriber
    subscriptions: list[Subscription]
    memberships: list[Membership]
    donations: list[Donation]
    preferences_token: str
    is_member: bool
    can_manage_billing: bool


def account_overview(subscriber_id: int) -> Overview | None:
    """Return what a signed-in reader sees, or None if the subscriber is gone (erased)."""
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    donations = list(db.session.scalars(
        select(Donation).where(Donation.subscriber_id == subscriber_id).order_by(Donation.id.desc())))
    owned = memberships.memberships_of(subscriber_id)
    return Overview(
        subscriber=subscriber,
        subscriptions=sorted(subscriber.subscriptions, key=lambda s: (s.newsletter.position, s.newsletter_id)),
        memberships=owned,
        donations=donations,
        preferences_token=_tokens().preferences(subscriber_id),
        is_member=any(m.has_access for m in owned),
        can_manage_billing=memberships.billing_customer(subscriber_id) is not None,
    )


def billing_portal_url(subscriber_id: int) -> str:
    """Open a Customer Portal session for the reader's Stripe customer and return its short-lived URL."""
    customer = memberships.billing_customer(subscriber_id)
    if customer is None:
        raise BillingUnavailable("There is no membership to manage for this address yet.")
    try:
        session = stripe_gateway().create_portal_session(customer, external_url("account.overview"))
    except stripe_errors.StripeError as exc:
        log.warning("portal session for subscriber %s failed: %s", subscriber_id, exc)
        raise BillingUnavailable("Billing can't be opened right now. Please try again in a minute.") from None
    return session["url"]
