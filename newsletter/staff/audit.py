"""The audit log: record who did what in the console, and read it back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import AuditAction, AuditEvent, StaffUser


@dataclass(frozen=True)
class Actor:
    """Who is acting and from where; the console builds one per request, the CLI one for itself."""

    staff_id: int | None
    email: str
    ip: str = ""

    @classmethod
    def of(cls, user: StaffUser, ip: str = "") -> Actor:
        return cls(user.id, user.email, ip)


CLI = Actor(None, "cli")


def record(actor: Actor, action: AuditAction, target: str = "", summary: str = "", **detail) -> AuditEvent:
    """Add an audit event to the session; the caller commits it with the change it describes."""
    event = AuditEvent(
        staff_id=actor.staff_id, staff_email=actor.email[:320], action=action.value, target=target[:120],
        summary=summary[:500], detail=detail, ip=actor.ip[:64],
    )
    db.session.add(event)
    return event


def record_now(actor: Actor, action: AuditAction, target: str = "", summary: str = "", **detail) -> None:
    """Record and commit an event on its own, for actions whose change was committed elsewhere."""
    record(actor, action, target, summary, **detail)
    db.session.commit()


def list_events(*, action: str | None = None, staff_id: int | None = None, page: int = 1,
                per_page: int = 50) -> tuple[list[AuditEvent], int]:
    """Return one page of the log, newest first, and the number of matching events."""
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action == action)
    if staff_id:
        query = query.where(AuditEvent.staff_id == staff_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return list(rows), total or 0
