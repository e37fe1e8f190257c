"""The every-minute tick: re-issue work a broker lost. Later parts add schedules and lease reaping."""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app

from newsletter import jobs, notifications

log = logging.getLogger(__name__)


def tick() -> dict[str, int]:
    """Run the periodic duties once and return what each did."""
    config = current_app.config["HERALD"]
    due = notifications.due_mail_jobs(dt.timedelta(seconds=config.MAIL_REQUEUE_SECONDS))
    for job_id in due:
        jobs.enqueue(jobs.SEND_MAIL, job_id)
    if due:
        log.info("tick re-enqueued %d mail jobs", len(due))
    return {"mail_jobs_requeued": len(due)}
