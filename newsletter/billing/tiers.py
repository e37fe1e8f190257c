"""Membership tiers as data: what each funds, and the Stripe prices behind it, found by lookup key."""

from __future__ import annotations

import re

from flask import current_app
from sqlalchemy import select

from newsletter.addresses import InvalidInput
from newsletter.billing import gateway as stripe
from newsletter.billing import stripe_gateway
from newsletter.extensions import db
from newsletter.models import BillingInterval, Tier

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
_CURRENCY = re.compile(r"[a-z]{3}")


def active_tiers() -> list[Tier]:
    """Return the tiers a reader may join, in display order."""
    return list(db.session.scalars(select(Tier).where(Tier.active).order_by(Tier.position, Tier.id)))


def find_tier(slug: str) -> Tier | None:
    return db.session.scalar(select(Tier).where(Tier.slug == slug))


def lookup_keys(slug: str) -> tuple[str, str]:
    """The lookup keys of a tier's monthly and yearly prices, e.g. supporter_monthly, supporter_yearly."""
    key = slug.replace("-", "_")
    return f"{key}_monthly", f"{key}_yearly"


def save_tier(slug: str, *, name: str, currency: str, monthly_amount: int, yearly_amount: int,
              benefits: str = "", position: int = 0, active: bool = True) -> Tier:
    """Create or change a tier (amounts in minor units, e.g. cents) and commit; Stripe is updated separately."""
    if not _SLUG.fullmatch(slug):
        raise InvalidInput("A tier's slug is 1-48 lowercase letters, digits or hyphens.", "slug")
    currency = currency.lower()
    if not _CURRENCY.fullmatch(currency):
        raise InvalidInput("The currency is a three-letter ISO code such as eur.", "currency")
    if monthly_amount <= 0 or yearly_amount <= 0:
        raise InvalidInput("Monthly and yearly amounts must be above zero.", "amount")
    if not name.strip():
        raise InvalidInput("A tier needs a name.", "name")
    tier = find_tier(slug)
    monthly_key, yearly_key = lookup_keys(slug)
    if tier is None:
        tier = Tier(slug=slug, monthly_lookup_key=monthly_key, yearly_lookup_key=yearly_key)
        db.session.add(tier)
    tier.name, tier.benefits, tier.currency = name.strip(), benefits.strip(), currency
    tier.monthly_amount, tier.yearly_amount = monthly_amount, yearly_amount
    tier.position, tier.active = position, active
    db.session.commit()
    return tier


def set_active(slug: str, active: bool) -> Tier:
    """Offer a tier on the membership page, or stop offering it (its members keep their membership)."""
    tier = find_tier(slug)
    if tier is None:
        raise InvalidInput(f"No tier {slug!r}.", "slug")
    tier.active = active
    db.session.commit()
    return tier


def _catalog(tiers: list[Tier]) -> list[stripe.Tier]:
    product = current_app.config["HERALD"].NEWSROOM_NAME + " membership: {}"
    return [
        stripe.Tier(tier.lookup_key(interval), product.format(tier.name), tier.currency, tier.amount(interval),
                    interval.value)
        for tier in tiers for interval in BillingInterval
    ]


def ensure_catalog(tiers: list[Tier] | None = None) -> dict[str, str]:
    """Make Stripe sell every tier at its amounts (new prices take the lookup keys over); return key -> price id."""
    tiers = active_tiers() if tiers is None else tiers
    prices = stripe_gateway().ensure_catalog(_catalog(tiers))
    return {key: price["id"] for key, price in prices.items()}


def price_id(tier: Tier, interval: BillingInterval) -> str | None:
    """Return the id of the Stripe price now carrying the tier's lookup key, or None if there is none."""
    key = tier.lookup_key(interval)
    price = stripe_gateway().find_prices_by_lookup_keys([key]).get(key)
    return price["id"] if price else None
