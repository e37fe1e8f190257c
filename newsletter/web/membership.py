"""The membership page: tiers and what they fund, joining and giving through Stripe Checkout, the thank-you page."""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from newsletter import jobs
from newsletter.addresses import InvalidInput
from newsletter.billing import checkout, tiers
from newsletter.extensions import db, limiter
from newsletter.models import BillingInterval, Subscriber
from newsletter.subscribers import Context
from newsletter.web.errors import render_error

bp = Blueprint("membership", __name__)

READER_KEY = "reader_id"  # the signed-in reader's subscriber id (web/account.py)


def _limit() -> str:
    return current_app.config["HERALD"].SIGNUP_RATE_LIMIT


def _field(name: str) -> str:
    value = request.form.get(name, "")
    return value if isinstance(value, str) else ""


def _signed_in_email() -> str:
    reader_id = session.get(READER_KEY)
    subscriber = db.session.get(Subscriber, reader_id) if isinstance(reader_id, int) else None
    return subscriber.email if subscriber else ""


def _page(error: InvalidInput | None = None, form: str = "", status: int = 200):
    config = current_app.config["HERALD"]
    values = request.form if request.method == "POST" else {}
    return (
        render_template(
            "membership/index.html",
            tiers=tiers.active_tiers(),
            intervals=list(BillingInterval),
            digest=checkout.digest_newsletter(),
            # A fresh nonce per page view: the idempotency key of whatever this form submits.
            nonce=secrets.token_urlsafe(24),
            error=error,
            error_form=form,
            values=values,
            email=values.get("email") or _signed_in_email(),
            donation_min=config.DONATION_MIN,
            donation_max=config.DONATION_MAX,
            donation_currency=config.DONATION_CURRENCY.upper(),
        ),
        status,
    )


def _context() -> Context:
    return Context(ip=request.remote_addr or "", user_agent=request.headers.get("User-Agent", ""),
                   source=request.path)


def _go(start: checkout.CheckoutStart):
    for job_id in start.mail_job_ids:
        jobs.enqueue(jobs.SEND_MAIL, job_id)
    # 303: the browser follows with a GET to Stripe's hosted page.
    return redirect(start.url, 303)


@bp.get("/membership")
def page():
    return _page()


@bp.post("/membership/join")
@limiter.limit(_limit)
def join():
    try:
        start = checkout.start_membership(_field("email"), _field("name"), _field("plan"),
                                          _field("digest") == "yes", _field("nonce"), _context())
    except InvalidInput as exc:
        return _page(exc, "join", 400)
    except checkout.AlreadyMember:
        return render_error(409, "This address already has a membership. Sign in to your account to manage it.",
                            title="You're already a member")
    except checkout.CheckoutUnavailable as exc:
        return render_error(503, str(exc), title="Payments are unavailable")
    return _go(start)


@bp.post("/membership/donate")
@limiter.limit(_limit)
def donate():
    try:
        start = checkout.start_donation(_field("email"), _field("name"), _field("amount"),
                                        _field("digest") == "yes", _field("nonce"), _context())
    except InvalidInput as exc:
        return _page(exc, "donate", 400)
    except checkout.CheckoutUnavailable as exc:
        return render_error(503, str(exc), title="Payments are unavailable")
    return _go(start)


@bp.get("/membership/thanks")
def thanks():
    # Grants nothing: a success URL can be skipped or typed in. Access comes from Stripe's webhooks alone.
    kind = "donation" if request.args.get("kind") == "donation" else "membership"
    return render_template("membership/thanks.html", kind=kind, account_url=url_for("account.sign_in_form"))
