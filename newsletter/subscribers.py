"""The subscriber's journey: sign up, confirm, choose newsletters, unsubscribe; and who may be mailed."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError

from newsletter.addresses import InvalidInput, clean_name, email_hash, normalize_email
from newsletter.extensions import db
from newsletter.models import (
    ConsentEvent,
    ConsentKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    utcnow,
)
from newsletter.notifications import queue_mail
from newsletter.tokens import ExpiredToken, InvalidToken

log = logging.getLogger(__name__)
MAX_CHOICES = 50


@dataclass
class Context:
    """Where a request came from, for the consent log."""

    ip: str = ""
    user_agent: str = ""
    source: str = ""

    def clipped(self) -> Context:
        return Context(self.ip[:64], self.user_agent[:512], self.source[:255])


@dataclass
class Outcome:
    """What a use case did, and the mail jobs to enqueue once it has committed."""

    mail_job_ids: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    subscriber_id: int | None = None


def _config():
    return current_app.config["HERALD"]


def _tokens():
    return current_app.extensions["herald_tokens"]


def active_newsletters() -> list[Newsletter]:
    """Return the newsletters a reader may choose, in display order."""
    query = select(Newsletter).where(Newsletter.active).order_by(Newsletter.position, Newsletter.id)
    return list(db.session.scalars(query))


def resolve_newsletters(choices: list[str]) -> list[Newsletter]:
    """Return the active newsletters named by slug or id, or raise InvalidInput naming the unknown one."""
    if len(choices) > MAX_CHOICES:
        raise InvalidInput("Too many newsletters chosen.", "newsletters")
    by_key = {}
    for n in active_newsletters():
        by_key[n.slug] = n
        by_key[str(n.id)] = n
    chosen: dict[int, Newsletter] = {}
    for raw in choices:
        key = (raw or "").strip()
        if key not in by_key:
            shown = key[:40].encode("ascii", "replace").decode()
            raise InvalidInput(f"We have no newsletter called {shown!r}.", "newsletters")
        chosen[by_key[key].id] = by_key[key]
    return list(chosen.values())


def is_suppressed(email_key: str) -> bool:
    return db.session.scalar(select(Suppression.id).where(Suppression.email_hash == email_hash(email_key))) is not None


def find_subscriber(email: str) -> Subscriber | None:
    """Return the subscriber with this address, compared without regard to case."""
    try:
        key = normalize_email(email).key
    except InvalidInput:
        return None
    return db.session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def _get_or_create(address, name: str) -> Subscriber:
    found = db.session.scalar(select(Subscriber).where(Subscriber.email_key == address.key))
    if found is not None:
        return found
    subscriber = Subscriber(email=address.email, email_key=address.key, name=name)
    try:
        with db.session.begin_nested():
            db.session.add(subscriber)
    except IntegrityError:
        # Someone signed up with the same address in the same instant: use their row.
        return db.session.scalars(select(Subscriber).where(Subscriber.email_key == address.key)).one()
    return subscriber


def _subscription(subscriber: Subscriber, newsletter_id: int) -> Subscription | None:
    return next((s for s in subscriber.subscriptions if s.newsletter_id == newsletter_id), None)


def _may_send_confirmation(subscriber: Subscriber, now: dt.datetime) -> bool:
    """Count confirmation mails in a rolling day, so the form cannot be used to flood an inbox."""
    start = subscriber.confirm_window_start
    if start is None or now - start >= dt.timedelta(days=1):
        subscriber.confirm_window_start, subscriber.confirm_window_count = now, 0
    if subscriber.confirm_window_count >= _config().CONFIRMATION_MAILS_PER_DAY:
        return False
    subscriber.confirm_window_count += 1
    return True


def _request_confirmation(subscriber: Subscriber, newsletter_ids: list[int], outcome: Outcome) -> None:
    if not newsletter_ids or not _may_send_confirmation(subscriber, utcnow()):
        return
    job = queue_mail("confirm", subscriber.id, {"newsletters": sorted(newsletter_ids)})
    db.session.flush()
    outcome.mail_job_ids.append(job.id)


def _consent(subscriber: Subscriber, kind: ConsentKind, newsletter_id: int | None, ctx: Context, **extra) -> None:
    ctx = ctx.clipped()
    db.session.add(
        ConsentEvent(
            subscriber_id=subscriber.id, newsletter_id=newsletter_id, kind=kind,
            ip=ctx.ip, user_agent=ctx.user_agent, source=ctx.source, **extra,
        )
    )


def signup(email: str, name: str | None, choices: list[str], ctx: Context) -> Outcome:
    """Record a signup as pending subscriptions and queue the confirmation mail.

    Answers the same way whether the address is new, pending, subscribed or suppressed.
    """
    address = normalize_email(email)
    name = clean_name(name)
    newsletters = resolve_newsletters(choices)
    if not newsletters:
        raise InvalidInput("Please choose at least one newsletter.", "newsletters")
    outcome = Outcome()
    if is_suppressed(address.key):
        log.info("signup for a suppressed address ignored")
        return outcome
    subscriber = _get_or_create(address, name)
    if not subscriber.name and name:
        # Only fill an empty name: anyone can type someone else's address into the form.
        subscriber.name = name
    now = utcnow()
    pending: list[int] = []
    for newsletter in newsletters:
        sub = _subscription(subscriber, newsletter.id)
        if sub is not None and sub.status == SubscriptionStatus.SUBSCRIBED:
            continue
        if sub is None:
            sub = Subscription(newsletter_id=newsletter.id, status=SubscriptionStatus.PENDING)
            subscriber.subscriptions.append(sub)
        sub.status, sub.requested_at = SubscriptionStatus.PENDING, now
        pending.append(newsletter.id)
        _consent(subscriber, ConsentKind.SIGNUP, newsletter.id, ctx, text_version=_config().CONSENT_TEXT_VERSION)
    db.session.flush()
    _request_confirmation(subscriber, pending, outcome)
    db.session.commit()
    return outcome


def get_or_create_subscriber(email: str, name: str | None = None) -> Subscriber:
    """Return the subscriber with this address, creating one if new; the caller commits.

    For flows that need a subscriber row without a newsletter (a member, a donor); a name is only
    filled in when none is known, as in signup.
    """
    address = normalize_email(email)
    name = clean_name(name)
    subscriber = _get_or_create(address, name)
    if not subscriber.name and name:
        subscriber.name = name
    db.session.flush()
    return subscriber


def add_newsletters(subscriber_id: int, choices: list[str], ctx: Context) -> Outcome:
    """Add newsletters to a subscriber's choices without touching the others.

    A confirmed reader who never left a newsletter joins it at once, as in update_preferences; anyone
    else gets a pending subscription and the usual confirmation mail.
    """
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    outcome = Outcome(subscriber_id=subscriber_id)
    if is_suppressed(subscriber.email_key):
        return outcome
    needs_confirmation: list[int] = []
    now = utcnow()
    for newsletter in resolve_newsletters(choices):
        sub = _subscription(subscriber, newsletter.id)
        if sub is not None and sub.status == SubscriptionStatus.SUBSCRIBED:
            continue
        if sub is None:
            sub = Subscription(newsletter_id=newsletter.id)
            subscriber.subscriptions.append(sub)
        _consent(subscriber, ConsentKind.SIGNUP, newsletter.id, ctx, text_version=_config().CONSENT_TEXT_VERSION)
        if subscriber.is_confirmed and sub.unsubscribed_at is None:
            sub.status, sub.confirmed_at = SubscriptionStatus.SUBSCRIBED, now
            _consent(subscriber, ConsentKind.CONFIRM, newsletter.id, ctx)
        else:
            sub.status, sub.requested_at = SubscriptionStatus.PENDING, now
            needs_confirmation.append(newsletter.id)
        outcome.changed.append(newsletter.id)
    db.session.flush()
    _request_confirmation(subscriber, needs_confirmation, outcome)
    db.session.commit()
    return outcome


@dataclass
class ConfirmCheck:
    """What a confirmation link would confirm, for the page with one button."""

    subscriber: Subscriber
    newsletters: list[Newsletter]


def check_confirm_token(token: str) -> ConfirmCheck:
    """Return what the link confirms, or raise InvalidToken / ExpiredToken."""
    max_age = dt.timedelta(hours=_config().CONFIRM_TOKEN_HOURS)
    sid, nids, _issued = _tokens().read_confirm(token, max_age)
    subscriber = db.session.get(Subscriber, sid)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    newsletters = [s.newsletter for s in subscriber.subscriptions if s.newsletter_id in nids]
    return ConfirmCheck(subscriber, newsletters)


def confirm(token: str, ctx: Context) -> Outcome:
    """Confirm the pending subscriptions a link names, and queue the welcome mail once."""
    check = check_confirm_token(token)
    subscriber = check.subscriber
    outcome = Outcome(subscriber_id=subscriber.id)
    if is_suppressed(subscriber.email_key):
        return outcome
    wanted = {n.id for n in check.newsletters}
    now = utcnow()
    for sub in subscriber.subscriptions:
        # Only pending ones: an unsubscribe after the link was sent must win over an old link.
        if sub.newsletter_id in wanted and sub.status == SubscriptionStatus.PENDING:
            sub.status, sub.confirmed_at = SubscriptionStatus.SUBSCRIBED, now
            outcome.changed.append(sub.newsletter_id)
            _consent(subscriber, ConsentKind.CONFIRM, sub.newsletter_id, ctx)
    if outcome.changed:
        if subscriber.confirmed_at is None:
            subscriber.confirmed_at = now
        job = queue_mail("welcome", subscriber.id, {"newsletters": sorted(outcome.changed)})
        db.session.flush()
        outcome.mail_job_ids.append(job.id)
    db.session.commit()
    return outcome


def resend_confirmation(token: str) -> Outcome:
    """Queue a new confirmation mail for what an expired link asked, within the daily limit."""
    outcome = Outcome()
    try:
        check_confirm_token(token)
        return outcome  # the link still works: nothing to resend
    except ExpiredToken as exc:
        subscriber_id, newsletter_ids = exc.subscriber_id, exc.newsletter_ids
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None or is_suppressed(subscriber.email_key):
        return outcome
    pending = [
        s.newsletter_id for s in subscriber.subscriptions
        if s.newsletter_id in newsletter_ids and s.status == SubscriptionStatus.PENDING
    ]
    _request_confirmation(subscriber, pending, outcome)
    db.session.commit()
    return outcome


def subscriber_for_preferences(token: str) -> Subscriber:
    """Return the subscriber a preferences link belongs to, or raise InvalidToken."""
    subscriber = db.session.get(Subscriber, _tokens().read_preferences(token))
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    return subscriber


def _withdraw(subscriber: Subscriber, sub: Subscription, channel: str, ctx: Context) -> bool:
    if sub.status == SubscriptionStatus.UNSUBSCRIBED:
        return False
    sub.status, sub.unsubscribed_at = SubscriptionStatus.UNSUBSCRIBED, utcnow()
    _consent(subscriber, ConsentKind.WITHDRAW, sub.newsletter_id, ctx, channel=channel)
    return True


def update_preferences(subscriber_id: int, name: str | None, choices: list[str], ctx: Context) -> Outcome:
    """Change the name and the newsletters chosen; new choices that need proof get a confirmation mail."""
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    new_name = clean_name(name)
    wanted = {n.id for n in resolve_newsletters(choices)}
    outcome = Outcome()
    if new_name != subscriber.name:
        subscriber.name = new_name
    needs_confirmation: list[int] = []
    now = utcnow()
    for newsletter in active_newsletters():
        sub = _subscription(subscriber, newsletter.id)
        if newsletter.id in wanted:
            if sub is not None and sub.status == SubscriptionStatus.SUBSCRIBED:
                continue
            if sub is None:
                sub = Subscription(newsletter_id=newsletter.id)
                subscriber.subscriptions.append(sub)
            _consent(subscriber, ConsentKind.SIGNUP, newsletter.id, ctx, text_version=_config().CONSENT_TEXT_VERSION)
            # The link proves the mailbox, so a confirmed reader adding a list joins at once; one
            # who left a list before confirms afresh, as the bulk-sender rules ask.
            if subscriber.is_confirmed and sub.unsubscribed_at is None and not is_suppressed(subscriber.email_key):
                sub.status, sub.confirmed_at = SubscriptionStatus.SUBSCRIBED, now
                _consent(subscriber, ConsentKind.CONFIRM, newsletter.id, ctx)
            else:
                sub.status, sub.requested_at = SubscriptionStatus.PENDING, now
                needs_confirmation.append(newsletter.id)
            outcome.changed.append(newsletter.id)
        elif sub is not None and _withdraw(subscriber, sub, "preferences", ctx):
            outcome.changed.append(newsletter.id)
    db.session.flush()
    _request_confirmation(subscriber, needs_confirmation, outcome)
    db.session.commit()
    return outcome


def unsubscribe_all(subscriber_id: int, channel: str, ctx: Context) -> Outcome:
    """Unsubscribe from every newsletter at once."""
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise InvalidToken("no such subscriber")
    outcome = Outcome()
    for sub in subscriber.subscriptions:
        if _withdraw(subscriber, sub, channel, ctx):
            outcome.changed.append(sub.newsletter_id)
    db.session.commit()
    return outcome


def unsubscribe(token: str, channel: str, ctx: Context) -> Outcome:
    """Unsubscribe from the one newsletter the link names, in this transaction; idempotent."""
    subscriber_id, newsletter_id = _tokens().read_unsubscribe(token)
    outcome = Outcome()
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return outcome  # erased: there is nothing left to mail
    sub = _subscription(subscriber, newsletter_id)
    if sub is not None and _withdraw(subscriber, sub, channel, ctx):
        outcome.changed.append(newsletter_id)
    db.session.commit()
    return outcome


def suppress(email_key: str, reason: str, detail: str = "", commit: bool = True) -> None:
    """Never mail this address again (hard bounce, complaint, erasure, staff)."""
    digest = email_hash(email_key)
    if db.session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is None:
        db.session.add(
            Suppression(email_hash=digest, email_key=email_key.lower(), reason=SuppressionReason(reason), detail=detail)
        )
    if commit:
        db.session.commit()


def recipients_query(newsletter_id: int):
    """The SELECT of subscriber ids the sending engine mails: confirmed, subscribed, not suppressed."""
    return (
        select(Subscriber.id)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(
            Subscription.newsletter_id == newsletter_id,
            Subscription.status == SubscriptionStatus.SUBSCRIBED,
            Subscriber.confirmed_at.is_not(None),
            ~exists().where(Suppression.email_key == Subscriber.email_key),
        )
    )


