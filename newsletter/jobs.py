"""The names of the Celery tasks the app enqueues, and the one place that enqueues them.

The web never imports workers/: it sends tasks by name, so it needs none of the worker's code.
"""

from __future__ import annotations

import logging

from flask import current_app

SEND_MAIL = "herald.send_mail"
FETCH_FEED = "herald.fetch_feed"
START_EDITION = "herald.start_edition"
SEND_BATCH = "herald.send_batch"
IMPORT_SUBSCRIBERS = "herald.import_subscribers"
TICK = "herald.tick"
HANDLE_STRIPE_EVENT = "herald.handle_stripe_event"

log = logging.getLogger(__name__)


def enqueue(name: str, *args, **options) -> bool:
    """Send a task by name after the caller's commit; return False if the broker is unreachable.

    A failure here loses nothing: the work is recorded in the database and the every-minute tick
    enqueues it again.
    """
    celery = current_app.extensions["celery"]
    try:
        celery.send_task(name, args=args, **options)
    except Exception:  # noqa: BLE001 - any broker failure is survivable, see above
        log.warning("could not enqueue %s%r; the tick will retry", name, args, exc_info=True)
        return False
    return True
