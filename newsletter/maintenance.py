"""The every-minute tick: due feeds, schedules and sends; and re-issue every kind of work a broker lost."""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app

from newsletter import articles, digests, jobs, notifications, schedules, sending
from newsletter.billing import events as billing_events
from newsletter.models import utcnow
from newsletter.staff import imports as staff_imports

log = logging.getLogger(__name__)


def tick(now: dt.datetime | None = None) -> dict[str, int]:
    """Run the periodic duties once and return what each did."""
    config = current_app.config["HERALD"]
    due = notifications.due_mail_jobs(dt.timedelta(seconds=config.MAIL_REQUEUE_SECONDS))
    for job_id in due:
        jobs.enqueue(jobs.SEND_MAIL, job_id)
    if due:
        log.info("tick re-enqueued %d mail jobs", len(due))
    now = now or utcnow()
    resumed = staff_imports.resume_stalled_imports(now)
    return {
        "mail_jobs_requeued": len(due),
        "imports_resumed": len(resumed),
        **billing_duties(),
        **content_duties(now),
        **sending.sending_duties(now),
    }


def content_duties(now: dt.datetime) -> dict[str, int]:
    """Enqueue the feeds due a fetch; draft, skip, freeze or record as missed the editions due."""
    # Each feed is fetched by its own task: a slow feed must not hold up the tick.
    feed_ids = articles.claim_due_feeds(now)
    for feed_id in feed_ids:
        jobs.enqueue(jobs.FETCH_FEED, feed_id)
    claimed = schedules.claim_due_editions(now)
    missed = digests.mark_missed_editions(now)
    # Until the sending engine takes them, due editions are frozen here and wait, frozen, to be sent.
    frozen = digests.freeze_due_editions(now)
    return {
        "feeds_enqueued": len(feed_ids),
        "editions_drafted": len(claimed.drafted),
        "editions_missed": len(claimed.missed) + len(missed),
        **frozen,
    }


def billing_duties() -> dict[str, int]:
    """Enqueue the stored Stripe events whose task a broker lost."""
    older = dt.timedelta(seconds=current_app.config["HERALD"].WEBHOOK_REQUEUE_SECONDS)
    event_ids = billing_events.due_events(older)
    for event_id in event_ids:
        jobs.enqueue(jobs.HANDLE_STRIPE_EVENT, event_id)
    if event_ids:
        log.info("tick re-enqueued %d Stripe events", len(event_ids))
    return {"stripe_events_requeued": len(event_ids)}
