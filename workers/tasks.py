"""Thin, named Celery tasks over Herald's service functions."""

from __future__ import annotations

from celery import shared_task

from newsletter import articles, jobs, maintenance, notifications


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
