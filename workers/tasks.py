"""Thin, named Celery tasks over Herald's service functions."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown

from newsletter import articles, jobs, maintenance, notifications, sending
from newsletter.billing import events as billing_events
from newsletter.extensions import db
from newsletter.staff import imports


@shared_task(name=jobs.SEND_MAIL, bind=True, max_retries=None)
def send_mail(self, job_id: int) -> str | None:
    """Send one transactional mail; a temporary SMTP failure retries with backoff and jitter."""
    try:
        status = notifications.deliver_mail_job(job_id)
    except notifications.RetryLater as later:
        # Short countdowns only: the database holds the schedule, the tick is the safety net.
        raise self.retry(countdown=later.delay) from None
    return status.value if status else None


@shared_task(name=jobs.TICK)
def tick() -> dict[str, int]:
    """The every-minute duties."""
    return maintenance.tick()


@shared_task(name=jobs.FETCH_FEED)
def fetch_feed(feed_id: int) -> str:
    """Fetch one feed and store its articles; a failure is recorded on the feed with a backoff."""
    return articles.fetch_feed(feed_id).outcome.value


@shared_task(name=jobs.START_EDITION)
def start_edition(edition_id: int) -> int:
    """Fan a frozen edition out into deliveries and start its batch tasks."""
    return sending.start_edition(edition_id).recipients


@shared_task(name=jobs.SEND_BATCH)
def send_batch(edition_id: int) -> dict[str, int]:
    """Deliver one batch of an edition, then enqueue the next; retries live in the database, not here."""
    return sending.run_batch(edition_id).counts


@shared_task(name=jobs.IMPORT_SUBSCRIBERS)
def import_subscribers(import_id: int) -> str | None:
    """Read one uploaded CSV import in committed chunks (resuming after the last one a lost run committed)."""
    status = imports.run_import(import_id)
    return status.value if status else None


@worker_process_init.connect
def _own_database_connections(**_) -> None:
    # A forked pool process must not share the parent's pooled database sockets.
    from workers.celery_app import flask_app

    with flask_app.app_context():
        db.engine.dispose(close=False)


@worker_process_shutdown.connect
def _close_smtp(**_) -> None:
    sending.close_transports()


@shared_task(name=jobs.HANDLE_STRIPE_EVENT, bind=True, max_retries=None)
def handle_stripe_event(self, event_id: str) -> dict | None:
    """Handle one stored Stripe event; a failure (Stripe unreachable) retries with backoff."""
    try:
        outcome = billing_events.process_event(event_id)
    except billing_events.RetryLater as later:
        # Short countdowns only: the event row holds the schedule, the tick is the safety net.
        raise self.retry(countdown=later.delay) from None
    return outcome.changes if outcome else None
