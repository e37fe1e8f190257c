"""The reader's account: sign in by an emailed link (no passwords), see subscriptions and membership, open billing."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from newsletter import accounts, jobs
from newsletter.addresses import InvalidInput
from newsletter.extensions import limiter
from newsletter.tokens import ExpiredToken, InvalidToken
from newsletter.web.errors import render_error
from newsletter.web.membership import READER_KEY

bp = Blueprint("account", __name__, url_prefix="/account")


def _limit() -> str:
    return current_app.config["HERALD"].SIGNUP_RATE_LIMIT


def _reader_id() -> int | None:
    value = session.get(READER_KEY)
    return value if isinstance(value, int) else None


@bp.get("/sign-in")
def sign_in_form():
    return render_template("account/sign_in.html", email="", error=None)


@bp.post("/sign-in")
@limiter.limit(_limit)
def request_link():
    email = request.form.get("email", "")
    email = email if isinstance(email, str) else ""
    try:
        job_ids = accounts.request_signin(email)
    except InvalidInput as exc:
        return render_template("account/sign_in.html", email=email, error=exc), 400
    for job_id in job_ids:
        jobs.enqueue(jobs.SEND_MAIL, job_id)
    # The same answer whether or not the address is known.
    return render_template("account/check_inbox.html")


def _link_problem(exc: InvalidToken):
    if isinstance(exc, ExpiredToken):
        message = "This sign-in link has expired or was already used. Ask for a new one; it takes a minute."
        return render_template("account/sign_in.html", email="", error=message), 410
    return render_error(400, "This sign-in link is not valid. It may have been cut short when it was copied.",
                        title="That link doesn't work")


@bp.get("/sign-in/<token>")
def sign_in_page(token: str):
    # Mail scanners fetch links: the GET only shows a button, the POST spends the link.
    try:
        subscriber = accounts.check_signin_token(token)
    except InvalidToken as exc:
        return _link_problem(exc)
    return render_template("account/sign_in_confirm.html", token=token, subscriber=subscriber)


@bp.post("/sign-in/<token>")
@limiter.limit(_limit)
def sign_in(token: str):
    try:
        subscriber_id = accounts.complete_signin(token)
    except InvalidToken as exc:
        return _link_problem(exc)
    # Only the reader's key: a staff session in the same browser is its own business.
    session[READER_KEY] = subscriber_id
    return redirect(url_for("account.overview"), 303)


@bp.get("")
def overview():
    reader_id = _reader_id()
    overview = accounts.account_overview(reader_id) if reader_id is not None else None
    if overview is None:
        session.pop(READER_KEY, None)
        return redirect(url_for("account.sign_in_form"), 303)
    return render_template("account/overview.html", overview=overview)


@bp.post("/billing")
def manage_billing():
    reader_id = _reader_id()
    if reader_id is None:
        return redirect(url_for("account.sign_in_form"), 303)
    try:
        url = accounts.billing_portal_url(reader_id)
    except accounts.BillingUnavailable as exc:
        return render_error(409, str(exc), title="Billing")
    return redirect(url, 303)


@bp.post("/sign-out")
def sign_out():
    session.pop(READER_KEY, None)
    return redirect(url_for("account.sign_in_form"), 303)
