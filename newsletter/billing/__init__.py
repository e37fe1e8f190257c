"""Paid memberships: the Stripe gateway, webhook event dispatch and membership state."""

from __future__ import annotations

from flask import current_app

from newsletter.billing.gateway import StripeGateway

_EXTENSION = "herald_stripe"


def stripe_gateway() -> StripeGateway:
    """Return this app's gateway to Stripe, built on first use from its settings.

    Built lazily rather than in create_app, so a test can point STRIPE_API_BASE at a fake started later.
    """
    gateway = current_app.extensions.get(_EXTENSION)
    if gateway is None:
        config = current_app.config["HERALD"]
        gateway = StripeGateway(
            config.STRIPE_SECRET_KEY,
            api_base=config.STRIPE_API_BASE or None,
            webhook_secret=config.STRIPE_WEBHOOK_SECRET,
            # A local fake is up or it is not; retrying it only slows down `flask demo-data`.
            max_network_retries=0 if config.uses_local_stripe else 2,
        )
        current_app.extensions[_EXTENSION] = gateway
    return gateway
