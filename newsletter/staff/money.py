"""The console's reading of memberships: members over time, monthly recurring revenue, tiers and the Stripe log."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select

from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import AuditAction, Subscriber, utcnow
from newsletter.staff import audit, parts, stats
from newsletter.staff.audit import Actor

# Currencies Stripe counts in whole units (no cents); every other amount is in hundredths.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                "xof", "xpf"}


def ready() -> bool:
    return parts.billing_ready()


def _m():
    from newsletter.models import billing

    return billing


def major(amount: int | float, currency: str) -> float:
    """An amount in minor units as a number of whole units (cents to euros)."""
    return amount if currency.lower() in ZERO_DECIMAL else amount / 100


def paying_statuses():
    m = _m()
    # MRR counts what is being charged: an active plan, or one whose card Stripe is still retrying.
    return (m.MembershipStatus.ACTIVE, m.MembershipStatus.PAST_DUE)


def is_member_clause():
    """SQL: the subscriber has a membership that gives access now (the memberships module's own rule)."""
    from newsletter.billing.memberships import is_member

    return is_member(Subscriber.id)


@dataclass
class Revenue:
    currency: str
    monthly: float  # whole units a month
    members: int


def monthly_recurring_revenue() -> list[Revenue]:
    """MRR per currency: monthly plans at their price, yearly ones at a twelfth, of paying memberships."""
    m = _m()
    rows = db.session.execute(
        select(m.Membership.currency, m.Membership.interval, func.sum(m.Membership.amount), func.count())
        .where(m.Membership.status.in_(paying_statuses()), m.Membership.amount.is_not(None))
        .group_by(m.Membership.currency, m.Membership.interval)
    )
    totals: dict[str, Revenue] = {}
    for currency, interval, amount, count in rows:
        code = (currency or "").upper() or "?"
        revenue = totals.setdefault(code, Revenue(code, 0.0, 0))
        per_month = (amount or 0) / 12 if interval == "year" else (amount or 0)
        revenue.monthly += major(per_month, code)
        revenue.members += count
    return sorted(totals.values(), key=lambda r: -r.monthly)


def member_history(days: int = 30, now: dt.datetime | None = None) -> list[int]:
    """Memberships with access at the end of each of the last `days` days: started minus ended, cumulated."""
    m = _m()
    today = (now or utcnow()).date()
    span = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    started = stats._by_day(
        select(stats.day_of(m.Membership.started_at), func.count())
        .where(m.Membership.started_at.is_not(None)).group_by(stats.day_of(m.Membership.started_at))
    )
    ended = stats._by_day(
        select(stats.day_of(m.Membership.ended_at), func.count())
        .where(m.Membership.started_at.is_not(None), m.Membership.ended_at.is_not(None))
        .group_by(stats.day_of(m.Membership.ended_at))
    )
    return [s - e for s, e in zip(stats._cumulative(started, span), stats._cumulative(ended, span), strict=True)]


@dataclass
class TierRow:
    tier: str
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def members_by_tier() -> tuple[list[TierRow], list[str]]:
    """Memberships counted by tier and status; and the statuses that occur, in Stripe's order."""
    m = _m()
    rows = db.session.execute(
        select(func.coalesce(m.Tier.name, "No tier"), m.Membership.status, func.count())
        .select_from(m.Membership).outerjoin(m.Tier, m.Tier.id == m.Membership.tier_id)
        .group_by(m.Tier.name, m.Membership.status)
    )
    table: dict[str, TierRow] = {}
    seen: set[str] = set()
    for tier, status, count in rows:
        value = str(getattr(status, "value", status))
        seen.add(value)
        table.setdefault(tier, TierRow(tier, {})).by_status[value] = count
    order = [s.value for s in m.MembershipStatus if s.value in seen]
    return sorted(table.values(), key=lambda r: -r.total), order


def tiers() -> list:
    m = _m()
    return list(db.session.scalars(select(m.Tier).order_by(m.Tier.position, m.Tier.id)))


def memberships_of(subscriber_id: int) -> list | None:
    """A subscriber's memberships, newest first; None before memberships exist."""
    if not ready():
        return None
    m = _m()
    return list(db.session.scalars(
        select(m.Membership).where(m.Membership.subscriber_id == subscriber_id).order_by(m.Membership.created_at.desc())
    ))


def stripe_events(*, type_: str = "", page: int = 1, per_page: int = 50) -> tuple[list, int]:
    """One page of the Stripe event log, newest first, and the number of matching events."""
    m = _m()
    query = select(m.StripeEvent)
    if type_:
        query = query.where(m.StripeEvent.type == type_)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    events = db.session.scalars(
        query.order_by(m.StripeEvent.received_at.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return list(events), total


def event_types() -> list[str]:
    m = _m()
    return list(db.session.scalars(select(m.StripeEvent.type).distinct().order_by(m.StripeEvent.type)))


def describe_changes(changes: dict | None) -> list[str]:
    """Say in lines what handling an event changed, e.g. "membership status: active → past_due"."""
    if not changes:
        return []
    lines = []
    for what, value in changes.items():
        if isinstance(value, dict):
            for name, change in value.items():
                if isinstance(change, list | tuple) and len(change) == 2:
                    lines.append(f"{what} {name}: {_plain(change[0])} → {_plain(change[1])}")
                else:
                    lines.append(f"{what} {name}: {_plain(change)}")
        elif isinstance(value, list):
            lines.append(f"{what}: {', '.join(_plain(v) for v in value)}")
        else:
            lines.append(f"{what}: {_plain(value)}")
    return lines


def _plain(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)[:200]


# --- Tiers (admins) -----------------------------------------------------------------------------


def minor(value: str, currency: str, field: str) -> int:
    """An amount typed in whole units ("5", "4.50") in minor units."""
    try:
        amount = Decimal((value or "").strip().replace(",", "."))
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not an amount like 5 or 4.50.", field) from None
    return int(amount if currency.lower() in ZERO_DECIMAL else amount * 100)


def save_tier(actor: Actor, slug: str, *, name: str, currency: str, monthly: str, yearly: str, benefits: str,
              position: int, active: bool):
    """Create or change a tier through the memberships module, and record who did."""
    from newsletter.billing import tiers as billing_tiers

    tier = billing_tiers.save_tier(
        slug.strip().lower(), name=name, currency=currency.strip(), monthly_amount=minor(monthly, currency, "monthly"),
        yearly_amount=minor(yearly, currency, "yearly"), benefits=benefits, position=position, active=active)
    audit.record_now(actor, AuditAction.TIER_SAVED, f"tier {tier.slug}",
                     f"{tier.name}: {tier.monthly_amount}/{tier.yearly_amount} {tier.currency} (minor units)"
                     + ("" if tier.active else ", not offered"))
    return tier


def sync_tier_prices(actor: Actor, slug: str) -> dict[str, str]:
    """Make Stripe sell a tier at its amounts now; raise InvalidInput if Stripe refuses or cannot be reached."""
    from newsletter.billing import gateway
    from newsletter.billing import tiers as billing_tiers

    tier = billing_tiers.find_tier(slug)
    if tier is None:
        raise InvalidInput(f"No tier {slug!r}.", "slug")
    try:
        prices = billing_tiers.ensure_catalog([tier])
    except gateway.StripeError as exc:
        raise InvalidInput(f"Stripe refused or could not be reached: {exc}", "stripe") from None
    audit.record_now(actor, AuditAction.TIER_PRICES_SYNCED, f"tier {slug}", ", ".join(sorted(prices)))
    return prices
