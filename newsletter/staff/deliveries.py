"""The console's side of the sending engine: delivery figures, progress, and send controls with an audit trail."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, func, not_, or_, select, update

from newsletter import digests
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Audience, AuditAction, Edition, EditionStatus, Schedule, utcnow
from newsletter.staff import audit, parts
from newsletter.staff.audit import Actor


class SendingUnavailable(InvalidInput):
    """The sending engine is not installed or its tables are not migrated yet."""

    def __init__(self):
        super().__init__("The sending engine is not installed yet: editions can be prepared and previewed, "
                         "but not sent from the console.", "edition")


@dataclass
class Counts:
    """An edition's deliveries by outcome."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.sent + self.failed + self.bounced + self.skipped + self.cancelled

    @property
    def done(self) -> int:
        return self.total - self.queued


@dataclass
class SendProgress:
    """Where an edition's sending stands, for the progress bar."""

    edition_id: int
    status: EditionStatus
    paused: bool = False
    counts: Counts = field(default_factory=Counts)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def fraction(self) -> float:
        if self.status in (EditionStatus.SENT,) and not self.counts.queued:
            return 1.0
        return self.counts.done / self.counts.total if self.counts.total else 0.0

    @property
    def percent(self) -> int:
        return int(self.fraction * 100)

    @property
    def active(self) -> bool:
        """Still moving: the page keeps refreshing."""
        return self.status in (EditionStatus.FROZEN, EditionStatus.SENDING) and not self.paused

    def as_dict(self) -> dict:
        return {
            "edition_id": self.edition_id, "status": self.status.value, "paused": self.paused,
            "total": self.counts.total, "done": self.counts.done, "percent": self.percent,
            "counts": {k: getattr(self.counts, k) for k in ("queued", "sent", "failed", "bounced", "skipped",
                                                            "cancelled")},
        }


def _models():
    from newsletter.models import sending as models

    return models


def _engine():
    if not parts.sending_ready():
        raise SendingUnavailable()
    from newsletter import sending

    return sending


def counts_for(edition_ids: list[int]) -> dict[int, Counts]:
    """Delivery counts for each edition (empty without the sending engine)."""
    if not edition_ids or not parts.sending_ready():
        return {}
    m = _models()
    out: dict[int, Counts] = {}
    for edition_id, status, n in db.session.execute(
        select(m.Delivery.edition_id, m.Delivery.status, func.count())
        .where(m.Delivery.edition_id.in_(edition_ids))
        .group_by(m.Delivery.edition_id, m.Delivery.status)
    ):
        setattr(out.setdefault(edition_id, Counts()), str(status.value if hasattr(status, "value") else status), n)
    return out


def progress(edition_id: int) -> SendProgress:
    """Return where an edition's sending stands; before sending starts, an empty count."""
    edition = db.session.get(Edition, edition_id, populate_existing=True)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    result = SendProgress(edition_id, edition.status)
    if not parts.sending_ready():
        return result
    m = _models()
    send = db.session.get(m.EditionSend, edition_id, populate_existing=True)
    if send is not None:
        result.paused = send.paused_at is not None
        result.started_at, result.finished_at = send.started_at, send.finished_at
    result.counts = counts_for([edition_id]).get(edition_id, Counts())
    db.session.commit()
    return result


def stuck_sends(now: dt.datetime, after: dt.timedelta) -> list[tuple[int, str]]:
    """Editions sending, not paused, with deliveries due and none sent for `after`."""
    if not parts.sending_ready():
        return []
    m = _models()
    due = exists().where(
        m.Delivery.edition_id == Edition.id, m.Delivery.status == m.DeliveryStatus.QUEUED,
        or_(m.Delivery.retry_at.is_(None), m.Delivery.retry_at <= now),
    )
    recent = exists().where(m.Delivery.edition_id == Edition.id, m.Delivery.sent_at > now - after)
    ids = db.session.scalars(
        select(Edition.id).join(m.EditionSend, m.EditionSend.edition_id == Edition.id)
        .where(Edition.status == EditionStatus.SENDING, m.EditionSend.paused_at.is_(None),
               m.EditionSend.started_at < now - after, due, not_(recent))
    )
    minutes = int(after.total_seconds() // 60)
    return [(edition_id, f"has made no progress for {minutes} minutes") for edition_id in ids]


def bounce_rates(edition_ids: list[int]) -> dict[int, float]:
    """Share of each edition's finished deliveries that bounced."""
    rates = {}
    for edition_id, counts in counts_for(edition_ids).items():
        finished = counts.sent + counts.bounced + counts.failed
        if finished:
            rates[edition_id] = counts.bounced / finished
    return rates


@dataclass
class SubscriberDelivery:
    edition: Edition
    status: str
    sent_at: dt.datetime | None
    error: str


def deliveries_of(subscriber_id: int, limit: int = 20) -> list[SubscriberDelivery] | None:
    """A subscriber's latest deliveries, newest first; None without the sending engine."""
    if not parts.sending_ready():
        return None
    m = _models()
    rows = db.session.execute(
        select(Edition, m.Delivery.status, m.Delivery.sent_at, m.Delivery.last_error)
        .join(m.Delivery, and_(m.Delivery.edition_id == Edition.id, m.Delivery.subscriber_id == subscriber_id))
        .order_by(Edition.run_at.desc()).limit(limit)
    )
    return [SubscriberDelivery(e, str(getattr(s, "value", s)), at, err or "") for e, s, at, err in rows]


# --- Controls -----------------------------------------------------------------------------------


def send_now(edition_id: int, actor: Actor, now: dt.datetime | None = None) -> int:
    """Freeze a draft (or take a frozen edition) and fan it out now; return the number of recipients.

    A draft sent early is dated now, so its date line and the archive say when it really went; the
    schedule's own slot is then drafted again by the tick, with the articles published since.
    """
    engine = _engine()
    now = now or utcnow()
    edition = db.session.get(Edition, edition_id)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    if edition.status == EditionStatus.DRAFT:
        slot = edition.run_at
        db.session.execute(update(Edition).where(Edition.id == edition_id, Edition.status == EditionStatus.DRAFT)
                           .values(run_at=now, updated_at=now))
        schedule = db.session.get(Schedule, edition.schedule_id) if edition.schedule_id else None
        if schedule is not None and schedule.enabled and slot > now and (schedule.next_run_at or slot) > slot:
            # The tick had already moved past this slot when it drafted it: hand the slot back.
            schedule.next_run_at = slot
        db.session.commit()
        if digests.freeze_edition(edition_id, now) == EditionStatus.SKIPPED:
            audit.record_now(actor, AuditAction.EDITION_SENT, f"edition {edition_id}", "nothing to send: skipped")
            return 0
    started = engine.start_edition(edition_id, now)
    if not started.started:
        status = db.session.get(Edition, edition_id, populate_existing=True).status
        raise InvalidInput(f"Edition {edition_id} is {status.value}; only a draft or a frozen edition can be sent.",
                           "edition")
    audit.record_now(actor, AuditAction.EDITION_SENT, f"edition {edition_id}",
                     f"{edition.newsletter.name}: sent by hand to {started.recipients} recipients")
    return started.recipients


def send_test(edition_id: int, address: str, audience: Audience, actor: Actor) -> str:
    """Send one copy of an edition to a staff member's address, as the given audience would get it."""
    engine = _engine()
    message_id = engine.send_test(edition_id, address, audience)
    audit.record_now(actor, AuditAction.EDITION_TEST_SENT, f"edition {edition_id}",
                     f"test copy ({audience.value.replace('_', '-')}) to {address}")
    return message_id


def pause(edition_id: int, actor: Actor) -> bool:
    changed = _engine().pause(edition_id)
    if changed:
        audit.record_now(actor, AuditAction.EDITION_PAUSED, f"edition {edition_id}")
    return changed


def resume(edition_id: int, actor: Actor) -> bool:
    changed = _engine().resume(edition_id)
    if changed:
        audit.record_now(actor, AuditAction.EDITION_RESUMED, f"edition {edition_id}")
    return changed


def cancel(edition_id: int, actor: Actor) -> int:
    """Cancel a frozen or sending edition; return how many deliveries will not go."""
    not_sent = _engine().cancel(edition_id)
    audit.record_now(actor, AuditAction.EDITION_CANCELLED, f"edition {edition_id}",
                     f"cancelled while sending: {not_sent} not sent")
    return not_sent


def retry_failed(edition_id: int, actor: Actor) -> int:
    queued = _engine().retry_failed(edition_id)
    audit.record_now(actor, AuditAction.EDITION_RETRIED, f"edition {edition_id}",
                     f"{queued} failed deliveries queued again")
    return queued


def last_activity(edition_id: int) -> dt.datetime | None:
    """When the last delivery of an edition was sent."""
    if not parts.sending_ready():
        return None
    m = _models()
    return db.session.scalar(select(func.max(m.Delivery.sent_at)).where(m.Delivery.edition_id == edition_id))
