"""Finding subscribers for staff: search and filters, one subscriber's whole record, and staff's actions on it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import Select, exists, func, or_, select

from newsletter import subscribers
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import (
    AuditAction,
    ConsentEvent,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from newsletter.staff import audit, deliveries, money
from newsletter.staff.audit import Actor


class StatusFilter(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    PENDING = "pending"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


@dataclass
class SubscriberFilter:
    """What the subscriber list is narrowed to; every field empty means everyone."""

    q: str = ""
    status: StatusFilter | None = None
    newsletter_id: int | None = None
    member: bool | None = None

    @classmethod
    def from_args(cls, args) -> SubscriberFilter:
        status = args.get("status", "")
        newsletter = args.get("newsletter", "")
        member = args.get("member", "")
        return cls(
            q=" ".join((args.get("q", "") or "").split())[:200],
            status=StatusFilter(status) if status in {s.value for s in StatusFilter} else None,
            newsletter_id=int(newsletter) if newsletter.isdigit() else None,
            member={"yes": True, "no": False}.get(member),
        )

    def as_args(self) -> dict[str, str]:
        args = {"q": self.q, "status": self.status.value if self.status else "",
                "newsletter": str(self.newsletter_id or ""),
                "member": {True: "yes", False: "no"}.get(self.member, "")}
        return {k: v for k, v in args.items() if v}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filtered_query(f: SubscriberFilter, query: Select | None = None) -> Select:
    """The subscribers the filters match, as a SELECT the caller can page, count or stream."""
    query = select(Subscriber) if query is None else query
    if f.q:
        needle = _like(f.q.lower())
        if "@" in f.q:
            # An address typed from its start finds it through the unique index.
            query = query.where(Subscriber.email_key.like(f"{needle}%", escape="\\"))
        else:
            query = query.where(or_(Subscriber.email_key.like(f"%{needle}%", escape="\\"),
                                    func.lower(Subscriber.name).like(f"%{needle}%", escape="\\")))
    if f.status == StatusFilter.SUPPRESSED:
        query = query.where(exists().where(Suppression.email_key == Subscriber.email_key))
        if f.newsletter_id:
            query = query.where(exists().where(Subscription.subscriber_id == Subscriber.id,
                                               Subscription.newsletter_id == f.newsletter_id))
    elif f.status or f.newsletter_id:
        conditions = [Subscription.subscriber_id == Subscriber.id]
        if f.status:
            conditions.append(Subscription.status == SubscriptionStatus(f.status.value))
        if f.newsletter_id:
            conditions.append(Subscription.newsletter_id == f.newsletter_id)
        query = query.where(exists().where(*conditions))
    if f.member is not None and money.ready():
        clause = money.is_member_clause()
        query = query.where(clause if f.member else ~clause)
    return query


def search_subscribers(f: SubscriberFilter, page: int = 1, per_page: int = 50) -> tuple[list[Subscriber], int]:
    """Return one page of matching subscribers, newest first, and how many match in all."""
    query = filtered_query(f)
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = db.session.scalars(query.order_by(Subscriber.id.desc()).offset((max(page, 1) - 1) * per_page)
                              .limit(per_page))
    return list(rows), total


def member_ids(subscriber_ids: list[int]) -> set[int] | None:
    """Which of these subscribers are members now; None before memberships exist."""
    if not money.ready():
        return None
    if not subscriber_ids:
        return set()
    return set(db.session.scalars(select(Subscriber.id).where(Subscriber.id.in_(subscriber_ids),
                                                               money.is_member_clause())))


def suppressed_keys(keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return set(db.session.scalars(select(Suppression.email_key).where(Suppression.email_key.in_(keys))))


@dataclass
class SubscriberRecord:
    """Everything the console shows about one subscriber."""

    subscriber: Subscriber
    consents: list[ConsentEvent]
    suppression: Suppression | None
    memberships: list | None
    deliveries: list | None


def subscriber_record(subscriber_id: int) -> SubscriberRecord:
    person = db.session.get(Subscriber, subscriber_id)
    if person is None:
        raise InvalidInput(f"No subscriber {subscriber_id}.", "subscriber")
    consents = list(db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber_id)
        .order_by(ConsentEvent.at.desc(), ConsentEvent.id.desc()).limit(200)
    ))
    suppression = db.session.scalar(select(Suppression).where(Suppression.email_key == person.email_key))
    return SubscriberRecord(person, consents, suppression, money.memberships_of(subscriber_id),
                            deliveries.deliveries_of(subscriber_id))


def unsubscribe_everything(subscriber_id: int, actor: Actor) -> int:
    """Unsubscribe a reader from every newsletter on their behalf (they asked by mail or phone)."""
    outcome = subscribers.unsubscribe_all(subscriber_id, "staff", subscribers.Context(ip=actor.ip, source="/staff"))
    audit.record_now(actor, AuditAction.SUBSCRIBER_UNSUBSCRIBED, f"subscriber {subscriber_id}",
                     f"unsubscribed from {len(outcome.changed)} newsletter(s) by staff")
    return len(outcome.changed)


def suppress_subscriber(subscriber_id: int, detail: str, actor: Actor) -> None:
    """Never mail this reader's address again."""
    person = db.session.get(Subscriber, subscriber_id)
    if person is None:
        raise InvalidInput(f"No subscriber {subscriber_id}.", "subscriber")
    detail = " ".join((detail or "").split())[:400] or "suppressed by staff"
    subscribers.suppress(person.email_key, SuppressionReason.MANUAL.value, f"{detail} ({actor.email})", commit=False)
    audit.record(actor, AuditAction.SUBSCRIBER_SUPPRESSED, f"subscriber {subscriber_id}", detail)
    db.session.commit()
