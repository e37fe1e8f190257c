"""Stripe's webhook endpoint: verify the signature on the raw body, store the event once, enqueue, answer at once."""

from __future__ import annotations

import logging

from flask import Blueprint, request

from newsletter import jobs
from newsletter.billing import events
from newsletter.billing.gateway import WebhookSignatureError
from newsletter.extensions import csrf, limiter

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/stripe")
@csrf.exempt
@limiter.exempt
def stripe_webhook():
    """Stripe's deliveries: 400 unless signed with our secret within five minutes; 200 for a stored event."""
    signature = request.headers.get("Stripe-Signature", "")
    if not signature:
        return {"error": "missing Stripe-Signature header"}, 400
    try:
        received = events.receive_event(request.get_data(cache=False), signature)
    except WebhookSignatureError as exc:
        log.warning("refused a webhook delivery: %s", exc)
        return {"error": "signature verification failed"}, 400
    if received.new:
        jobs.enqueue(jobs.HANDLE_STRIPE_EVENT, received.event_id)
    # A repeat is answered the same way and not handled again: its id is already stored.
    return {"received": True, "duplicate": not received.new}, 200
