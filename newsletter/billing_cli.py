"""Flask commands for memberships: tiers and their Stripe prices, reconciliation with Stripe, the event log."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from newsletter.addresses import InvalidInput
from newsletter.billing import gateway as stripe_errors
from newsletter.billing import memberships, tiers
from newsletter.extensions import db
from newsletter.models import StripeEvent, Tier

tiers_cli = AppGroup("tiers", help="Membership tiers and the Stripe prices behind them.")


def register(app: Flask) -> None:
    app.cli.add_command(tiers_cli)
    app.cli.add_command(sync_stripe)
    app.cli.add_command(stripe_events)


def _minor(value: str) -> int:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount like 5 or 4.50") from None
    return int(amount * 100)


def _sync_prices(slugs: list[str] | None = None) -> None:
    chosen = [t for t in tiers.active_tiers() if slugs is None or t.slug in slugs]
    try:
        prices = tiers.ensure_catalog(chosen)
    except stripe_errors.StripeError as exc:
        raise click.ClickException(f"Stripe refused or could not be reached: {exc}") from None
    for key, price in sorted(prices.items()):
        click.echo(f"price {key}\t{price}")


@tiers_cli.command("add")
@click.argument("slug")
@click.option("--name", required=True, help='Shown to readers, e.g. "Supporter".')
@click.option("--monthly", required=True, help="Monthly amount in whole units, e.g. 5 or 4.50.")
@click.option("--yearly", required=True, help="Yearly amount in whole units, e.g. 50.")
@click.option("--currency", default="eur", show_default=True)
@click.option("--benefit", "benefits", multiple=True, help="What the tier funds or gives; repeat for several.")
@click.option("--position", type=int, default=0, help="Order on the membership page.")
@click.option("--no-stripe", is_flag=True, help="Only save the tier; create its Stripe prices later (tiers sync).")
def tiers_add(slug: str, name: str, monthly: str, yearly: str, currency: str, benefits: tuple[str, ...],
              position: int, no_stripe: bool) -> None:
    """Create or change a tier, then make Stripe sell it (prices found by lookup keys SLUG_monthly, SLUG_yearly)."""
    try:
        tier = tiers.save_tier(slug, name=name, currency=currency, monthly_amount=_minor(monthly),
                               yearly_amount=_minor(yearly), benefits="\n".join(benefits), position=position)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"tier {tier.slug}: {tier.name}, {tier.monthly_lookup_key} / {tier.yearly_lookup_key}")
    if not no_stripe:
        _sync_prices([tier.slug])


@tiers_cli.command("list")
def tiers_list() -> None:
    """List tiers with their amounts and lookup keys."""
    for tier in db.session.scalars(select(Tier).order_by(Tier.position, Tier.id)):
        state = "active" if tier.active else "hidden"
        click.echo(f"{tier.slug}\t{tier.name}\t{tier.monthly_amount / 100:.2f}/{tier.yearly_amount / 100:.2f} "
                   f"{tier.currency.upper()}\t{tier.monthly_lookup_key}, {tier.yearly_lookup_key}\t{state}")


@tiers_cli.command("hide")
@click.argument("slug")
def tiers_hide(slug: str) -> None:
    """Stop offering a tier (its members keep their membership)."""
    try:
        tiers.set_active(slug, False)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"tier {slug} hidden")


@tiers_cli.command("sync")
def tiers_sync() -> None:
    """Make Stripe sell every active tier at its amounts (creates missing or changed prices)."""
    _sync_prices()


@click.command("sync-stripe")
def sync_stripe() -> None:
    """Bring every membership in line with Stripe: list all subscriptions, upsert, mark missing ones."""
    try:
        report = memberships.sync_all()
    except stripe_errors.StripeError as exc:
        raise click.ClickException(f"Stripe refused or could not be reached: {exc}") from None
    for sub_id, changed in sorted(report.changed.items()):
        click.echo(f"{sub_id}\t{json.dumps(changed, ensure_ascii=False)}")
    for sub_id in report.missing:
        click.echo(f"{sub_id}\tmissing at Stripe: access ended")
    for sub_id in report.unlinked:
        click.echo(f"{sub_id}\tno subscriber matches its customer: left unlinked")
    click.echo(f"{report.seen} subscription(s) at Stripe, {len(report.changed)} membership(s) changed, "
               f"{len(report.missing)} missing, {len(report.unlinked)} unlinked", err=True)


@click.command("stripe-events")
@click.option("--unprocessed", is_flag=True, help="Only events not handled yet.")
@click.option("--limit", type=int, default=30, show_default=True)
def stripe_events(unprocessed: bool, limit: int) -> None:
    """Show the latest Stripe events, whether they were handled, and what each changed."""
    query = select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(limit)
    if unprocessed:
        query = query.where(StripeEvent.processed_at.is_(None))
    for event in db.session.scalars(query):
        state = "handled" if event.processed_at else f"pending ({event.attempts} tries) {event.last_error[:80]}"
        click.echo(f"{event.received_at:%Y-%m-%d %H:%M:%S}\t{event.id}\t{event.type}\t{state}\t"
                   f"{json.dumps(event.changes or {}, ensure_ascii=False)}")
