"""Flask commands: create the database, load demo data, list subscribers."""

from __future__ import annotations

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select

from newsletter import billing_cli, content_cli, demo, sending_cli, subscribers
from newsletter.demo import billing as demo_billing
from newsletter.demo import content as demo_content
from newsletter.extensions import db
from newsletter.models import Newsletter, Subscriber, Subscription, SubscriptionStatus
from newsletter.staff import cli as staff_cli


def register(app: Flask) -> None:
    app.cli.add_command(init_db)
    app.cli.add_command(demo_data)
    app.cli.add_command(list_subscribers)
    content_cli.register(app)
    billing_cli.register(app)
    staff_cli.register(app)
    sending_cli.register(app)


@click.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    upgrade()
    click.echo("database is at the latest migration")


@click.command("demo-data")
def demo_data() -> None:
    """Load the demo newsletters, the sample article, a schedule per newsletter and a tier (idempotent)."""
    for n in demo.load_newsletters():
        click.echo(f"newsletter {n.slug}: {n.name}")
    saved = demo_content.load_sample_article()
    click.echo(f"article {saved.article_id}: the sample article ({'new' if saved.created else 'already there'})")
    for s in demo_content.load_schedules():
        click.echo(f"schedule {s.id} for {s.newsletter.slug}: next run {s.next_run_at:%Y-%m-%d %H:%M} UTC")
    demo_tiers = demo_billing.load_tiers()
    for tier in demo_tiers.tiers:
        click.echo(f"tier {tier.slug}: {tier.name} ({tier.monthly_lookup_key}, {tier.yearly_lookup_key}); "
                   f"{demo_tiers.stripe}")


@click.command("list-subscribers")
@click.option("--newsletter", "slug", help="Only subscribers of this newsletter (slug).")
@click.option("--status", type=click.Choice([s.value for s in SubscriptionStatus]), help="Subscription status.")
@click.option("--recipients", is_flag=True, help="Only those the next send would mail.")
def list_subscribers(slug: str | None, status: str | None, recipients: bool) -> None:
    """List subscribers with their subscriptions."""
    query = select(Subscriber).order_by(Subscriber.id)
    if slug:
        newsletter = db.session.scalar(select(Newsletter).where(Newsletter.slug == slug))
        if newsletter is None:
            raise click.BadParameter(f"no newsletter {slug!r}", param_hint="--newsletter")
        if recipients:
            query = query.where(Subscriber.id.in_(subscribers.recipients_query(newsletter.id)))
        query = query.join(Subscription).where(Subscription.newsletter_id == newsletter.id)
        if status:
            query = query.where(Subscription.status == SubscriptionStatus(status))
    elif status:
        query = query.where(Subscriber.subscriptions.any(Subscription.status == SubscriptionStatus(status)))
    elif recipients:
        raise click.UsageError("--recipients needs --newsletter")
    count = 0
    for s in db.session.scalars(query).unique():
        subs = ", ".join(f"{x.newsletter.slug}:{x.status.value}" for x in s.subscriptions) or "-"
        confirmed = s.confirmed_at.isoformat(timespec="seconds") if s.confirmed_at else "unconfirmed"
        click.echo(f"{s.id}\t{s.email}\t{s.name or '-'}\t{confirmed}\t{subs}")
        count += 1
    click.echo(f"{count} subscriber(s)", err=True)
