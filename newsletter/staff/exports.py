"""Subscribers out as CSV: streamed row by row, every cell safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from newsletter.extensions import db
from newsletter.models import Newsletter, Subscriber, Subscription, SubscriptionStatus, Suppression
from newsletter.staff import audience, money

# A cell starting with one of these is run as a formula by Excel, LibreOffice and Google Sheets (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BATCH = 1000
COLUMNS = ["email", "name", "signed_up_at", "confirmed_at", "subscribed", "pending", "unsubscribed", "suppressed",
           "member"]


def safe_cell(value: object) -> str:
    """Return a value as text a spreadsheet shows as text: a leading formula character gets a single quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _line(cells: list[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([safe_cell(c) for c in cells])
    return out.getvalue()


def _when(value) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def export_lines(filters: audience.SubscriberFilter) -> Iterator[str]:
    """Yield the CSV for every subscriber the filters match, a line at a time, in id order.

    Rows are read a thousand at a time from a server-side cursor, so memory stays flat however many there are.
    """
    slugs = dict(db.session.execute(select(Newsletter.id, Newsletter.slug)).all())
    yield _line(COLUMNS)
    billing = money.ready()
    columns = [Subscriber, Suppression.id.is_not(None).label("suppressed")]
    if billing:
        columns.append(money.is_member_clause().label("member"))
    query = (
        audience.filtered_query(filters, select(*columns))
        .outerjoin(Suppression, Suppression.email_key == Subscriber.email_key)
        .order_by(Subscriber.id)
        .options(selectinload(Subscriber.subscriptions).load_only(Subscription.newsletter_id, Subscription.status))
        .execution_options(yield_per=BATCH)
    )
    for row in db.session.execute(query):
        person = row[0]
        by_status: dict[SubscriptionStatus, list[str]] = {s: [] for s in SubscriptionStatus}
        for sub in person.subscriptions:
            by_status[sub.status].append(slugs.get(sub.newsletter_id, str(sub.newsletter_id)))
        yield _line([
            person.email, person.name, _when(person.created_at), _when(person.confirmed_at),
            " ".join(sorted(by_status[SubscriptionStatus.SUBSCRIBED])),
            " ".join(sorted(by_status[SubscriptionStatus.PENDING])),
            " ".join(sorted(by_status[SubscriptionStatus.UNSUBSCRIBED])),
            "yes" if row.suppressed else "no",
            ("yes" if row.member else "no") if billing else "",
        ])
        # Each yielded batch is done with: let the identity map forget it.
        db.session.expunge(person)
