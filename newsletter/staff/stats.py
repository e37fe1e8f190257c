"""The audience at a glance: subscriber counts and their history, recent editions, and what needs attention."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, literal_column, or_, select

from newsletter.extensions import db
from newsletter.models import (
    Edition,
    EditionStatus,
    Feed,
    ImportStatus,
    MailJob,
    MailJobStatus,
    Subscriber,
    SubscriberImport,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    utcnow,
)
from newsletter.staff import deliveries, parts

# A feed this many failures in a row is worth a person's look (one failure is often a blip).
FEED_FAILURES_TO_FLAG = 3
# A frozen edition not being sent this long after its time, or a send with no progress this long, is stuck.
STUCK_AFTER = dt.timedelta(minutes=15)
# Bounces and complaints in a day, at least this many and this many times the week's daily average.
BOUNCE_SPIKE_MIN = 10
BOUNCE_SPIKE_FACTOR = 3.0
# Mailbox providers start filtering a sender whose bounces pass a few percent.
BOUNCE_RATE_TO_FLAG = 0.02


@dataclass
class AudienceCounts:
    confirmed: int = 0
    pending: int = 0
    unsubscribed: int = 0
    suppressed: int = 0


def _status_flags():
    """Per subscriber: whether any subscription is subscribed, pending, unsubscribed; and when they last left."""
    status = Subscription.status
    return (
        select(
            Subscription.subscriber_id.label("sid"),
            func.max(case((status == SubscriptionStatus.SUBSCRIBED, 1), else_=0)).label("on"),
            func.max(case((status == SubscriptionStatus.PENDING, 1), else_=0)).label("waiting"),
            func.max(case((status == SubscriptionStatus.UNSUBSCRIBED, 1), else_=0)).label("left"),
            func.max(Subscription.unsubscribed_at).label("left_at"),
        )
        .group_by(Subscription.subscriber_id)
        .subquery()
    )


def audience_counts() -> AudienceCounts:
    """Subscribers now: confirmed (on at least one list), pending (waiting to confirm), unsubscribed (left all)."""
    flags = _status_flags()
    row = db.session.execute(
        select(
            func.coalesce(func.sum(flags.c.on), 0),
            func.coalesce(func.sum(case((and_(flags.c.on == 0, flags.c.waiting == 1), 1), else_=0)), 0),
            func.coalesce(func.sum(case((and_(flags.c.on == 0, flags.c.waiting == 0, flags.c.left == 1), 1),
                                        else_=0)), 0),
        )
    ).one()
    suppressed = db.session.scalar(select(func.count()).select_from(Suppression)) or 0
    return AudienceCounts(int(row[0]), int(row[1]), int(row[2]), suppressed)


def day_of(column):
    """The UTC calendar day of a timestamp column, on PostgreSQL and SQLite alike."""
    if db.session.get_bind().dialect.name == "postgresql":
        # A literal, not a bound parameter: GROUP BY must repeat the SELECT's expression exactly.
        return func.date(func.timezone(literal_column("'UTC'"), column))
    return func.date(column)


def _by_day(query) -> Counter:
    counts: Counter = Counter()
    for day, n in db.session.execute(query):
        if day is not None:
            counts[str(day)[:10]] += n
    return counts


@dataclass
class DailySeries:
    days: list[dt.date]
    values: dict[str, list[int]] = field(default_factory=dict)


def _days(days: int, today: dt.date) -> list[dt.date]:
    return [today - dt.timedelta(days=days - 1 - i) for i in range(days)]


def _cumulative(counts: Counter, days: list[dt.date]) -> list[int]:
    keys = sorted(counts)
    out, total, k = [], 0, 0
    for day in days:
        label = day.isoformat()
        while k < len(keys) and keys[k] <= label:
            total += counts[keys[k]]
            k += 1
        out.append(total)
    return out


def audience_history(days: int = 30, now: dt.datetime | None = None) -> DailySeries:
    """Confirmed, pending and unsubscribed subscribers at the end of each of the last `days` days (UTC).

    Rebuilt from each subscriber's first signup, first confirmation and, for those who left every list,
    their last unsubscribe: three grouped queries, whatever the number of subscribers.
    """
    today = (now or utcnow()).date()
    span = _days(days, today)
    flags = _status_flags()
    joined = _by_day(
        select(day_of(Subscriber.created_at), func.count()).join(flags, flags.c.sid == Subscriber.id)
        .group_by(day_of(Subscriber.created_at))
    )
    confirmed = _by_day(
        select(day_of(Subscriber.confirmed_at), func.count()).join(flags, flags.c.sid == Subscriber.id)
        .where(Subscriber.confirmed_at.is_not(None)).group_by(day_of(Subscriber.confirmed_at))
    )
    gone = and_(flags.c.on == 0, flags.c.waiting == 0, flags.c.left == 1)
    left_all = _by_day(
        select(day_of(flags.c.left_at), func.count()).where(gone).group_by(day_of(flags.c.left_at))
    )
    left_confirmed = _by_day(
        select(day_of(flags.c.left_at), func.count()).join(Subscriber, Subscriber.id == flags.c.sid)
        .where(gone, Subscriber.confirmed_at.is_not(None)).group_by(day_of(flags.c.left_at))
    )
    joined_c, confirmed_c = _cumulative(joined, span), _cumulative(confirmed, span)
    left_c, left_conf_c = _cumulative(left_all, span), _cumulative(left_confirmed, span)
    return DailySeries(span, {
        "confirmed": [c - lc for c, lc in zip(confirmed_c, left_conf_c, strict=True)],
        "pending": [max(j - c - (lt - lc), 0) for j, c, lt, lc in
                    zip(joined_c, confirmed_c, left_c, left_conf_c, strict=True)],
        "unsubscribed": left_c,
    })


# --- Editions -----------------------------------------------------------------------------------


def deliveries_ready() -> bool:
    return parts.sending_ready()



@dataclass
class EditionFigures:
    edition: Edition
    counts: deliveries.Counts


def recent_editions(limit: int = 8) -> list[EditionFigures]:
    """The last editions that went out or are going out, with their delivery figures."""
    editions = list(db.session.scalars(
        select(Edition)
        .where(Edition.status.in_((EditionStatus.FROZEN, EditionStatus.SENDING, EditionStatus.SENT)))
        .order_by(Edition.run_at.desc(), Edition.id.desc()).limit(limit)
    ))
    counts = deliveries.counts_for([e.id for e in editions])
    return [EditionFigures(e, counts.get(e.id, deliveries.Counts())) for e in editions]


# --- What needs attention -----------------------------------------------------------------------


@dataclass
class Attention:
    severity: str  # "error" or "warn"
    message: str
    link: tuple[str, dict] | None = None  # an endpoint and its arguments


def attention(now: dt.datetime | None = None) -> list[Attention]:
    """Things a person should look at: failing feeds, stuck sends, bounce spikes, missed editions, failures."""
    now = now or utcnow()
    items: list[Attention] = []
    for feed in db.session.scalars(
        select(Feed).where(Feed.active, Feed.failures >= FEED_FAILURES_TO_FLAG).order_by(Feed.failures.desc())
    ):
        items.append(Attention("error", f"The feed “{feed.name or feed.url}” has failed {feed.failures} times in a "
                                        f"row: {feed.last_error[:200]}", ("staff.feed_edit", {"feed_id": feed.id})))
    for edition in db.session.scalars(
        select(Edition).where(Edition.status == EditionStatus.FROZEN, Edition.run_at < now - STUCK_AFTER)
        .order_by(Edition.run_at)
    ):
        items.append(Attention("error", f"{edition.newsletter.name}: the edition for "
                                        f"{edition.run_at:%d %b %H:%M} UTC is ready but has not started sending.",
                               ("staff.edition", {"edition_id": edition.id})))
    for edition_id, why in deliveries.stuck_sends(now, STUCK_AFTER):
        edition = db.session.get(Edition, edition_id)
        items.append(Attention("error", f"{edition.newsletter.name}: the send of edition {edition_id} {why}.",
                               ("staff.edition_progress", {"edition_id": edition_id})))
    items.extend(_bounce_spike(now))
    items.extend(_bouncy_editions(now))
    missed = db.session.scalar(
        select(func.count()).select_from(Edition)
        .where(Edition.status == EditionStatus.MISSED, Edition.run_at > now - dt.timedelta(days=7))
    )
    if missed:
        words = f"{missed} editions missed their" if missed != 1 else "1 edition missed its"
        items.append(Attention("warn", f"{words} time in the last week.", ("staff.editions", {})))
    failed_mail = db.session.scalar(
        select(func.count()).select_from(MailJob)
        .where(MailJob.status == MailJobStatus.FAILED, MailJob.created_at > now - dt.timedelta(days=1))
    )
    if failed_mail:
        items.append(Attention("warn", f"{failed_mail} confirmation or welcome mail{'s' if failed_mail != 1 else ''} "
                                       "could not be delivered in the last day."))
    failed_imports = db.session.scalar(
        select(func.count()).select_from(SubscriberImport)
        .where(SubscriberImport.status == ImportStatus.FAILED, SubscriberImport.created_at > now - dt.timedelta(days=7))
    )
    if failed_imports:
        items.append(Attention("warn", f"{failed_imports} subscriber import{'s' if failed_imports != 1 else ''} failed "
                                       "this week.", ("staff.imports", {})))
    return items


def _bounce_spike(now: dt.datetime) -> list[Attention]:
    bad = or_(Suppression.reason == SuppressionReason.HARD_BOUNCE, Suppression.reason == SuppressionReason.COMPLAINT)
    day = db.session.scalar(
        select(func.count()).select_from(Suppression).where(bad, Suppression.created_at > now - dt.timedelta(days=1))
    ) or 0
    week = db.session.scalar(
        select(func.count()).select_from(Suppression)
        .where(bad, Suppression.created_at <= now - dt.timedelta(days=1),
               Suppression.created_at > now - dt.timedelta(days=8))
    ) or 0
    average = week / 7
    if day >= BOUNCE_SPIKE_MIN and day > BOUNCE_SPIKE_FACTOR * average:
        return [Attention("error", f"{day} addresses bounced or complained in the last 24 hours, against "
                                   f"{average:.1f} a day the week before. Check the last edition and the sender's "
                                   "reputation before the next send.")]
    return []


def _bouncy_editions(now: dt.datetime) -> list[Attention]:
    """Recent editions where more than BOUNCE_RATE_TO_FLAG of the finished deliveries bounced."""
    recent = list(db.session.scalars(
        select(Edition.id).where(Edition.status.in_((EditionStatus.SENDING, EditionStatus.SENT)),
                                 Edition.run_at > now - dt.timedelta(days=3))
    ))
    items = []
    for edition_id, rate in deliveries.bounce_rates(recent).items():
        if rate > BOUNCE_RATE_TO_FLAG:
            edition = db.session.get(Edition, edition_id)
            items.append(Attention("error", f"{edition.newsletter.name}: {rate:.1%} of the edition of "
                                            f"{edition.run_at:%d %b} bounced. A list with many dead addresses hurts "
                                            "delivery for everyone.", ("staff.edition", {"edition_id": edition_id})))
    return items
