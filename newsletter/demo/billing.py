"""Demo membership tiers for `make run`: a Supporter tier, sold by the local fake Stripe when it is up."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.billing import gateway as stripe_errors
from newsletter.billing import tiers
from newsletter.models import Tier

TIERS = [
    {
        "slug": "supporter",
        "name": "Supporter",
        "currency": "eur",
        "monthly_amount": 500,
        "yearly_amount": 5000,
        "benefits": "Funds a day of a reporter's work on the ground every month\n"
                    "Newsletters without appeals for money, every story in full\n"
                    "A seat at our quarterly members' call with the editors",
        "position": 0,
    },
]


@dataclass
class DemoTiers:
    tiers: list[Tier]
    # "prices ready" or why Stripe could not be asked (demo data never fails on it).
    stripe: str


def load_tiers() -> DemoTiers:
    """Create the demo tiers if missing (never overwrite an edited one), then make Stripe sell them if reachable."""
    loaded = []
    for spec in TIERS:
        found = tiers.find_tier(spec["slug"])
        loaded.append(found if found is not None else tiers.save_tier(**spec))
    try:
        tiers.ensure_catalog(loaded)
    except stripe_errors.StripeError as exc:
        return DemoTiers(loaded, f"Stripe not reachable, prices not created ({type(exc).__name__}); "
                                 "run `flask tiers sync` once it is up")
    return DemoTiers(loaded, "prices ready")
