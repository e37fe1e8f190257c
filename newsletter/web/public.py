"""Public pages for readers: sign up, confirm, preferences and unsubscribe."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request, url_for

from newsletter import jobs, subscribers
from newsletter.addresses import InvalidInput
from newsletter.extensions import csrf, limiter
from newsletter.subscribers import Context
from newsletter.tokens import ExpiredToken, InvalidToken
from newsletter.web.errors import render_error

bp = Blueprint("public", __name__)


def _signup_limit() -> str:
    return current_app.config["HERALD"].SIGNUP_RATE_LIMIT


def _context(default_source: str | None = None) -> Context:
    source = request.form.get("source", "") or default_source or request.path
    if not source.startswith("/") or source.startswith("//"):
        source = request.path
    return Context(
        ip=request.remote_addr or "",
        user_agent=request.headers.get("User-Agent", ""),
        source=source,
    )


def _tokens():
    return current_app.extensions["herald_tokens"]


def _enqueue(outcome: subscribers.Outcome) -> None:
    for job_id in outcome.mail_job_ids:
        jobs.enqueue(jobs.SEND_MAIL, job_id)


def _field(name: str) -> str:
    # A field sent twice or as a file is not something our form sends; take the first text value.
    value = request.form.get(name, "")
    return value if isinstance(value, str) else ""


@bp.get("/healthz")
def healthz():
    return {"ok": True}


@bp.get("/")
@bp.get("/subscribe")
def signup_form():
    return _render_signup(subscribers.active_newsletters())


@bp.get("/n/<slug>")
def newsletter_page(slug: str):
    chosen = [n for n in subscribers.active_newsletters() if n.slug == slug]
    if not chosen:
        abort(404)
    return _render_signup(chosen, single=chosen[0])


def _render_signup(newsletters, single=None, error: InvalidInput | None = None, status: int = 200):
    form = request.form if request.method == "POST" else {}
    return (
        render_template(
            "public/signup.html",
            newsletters=newsletters,
            single=single,
            error=error,
            form=form,
            chosen=set(request.form.getlist("newsletters")) if request.method == "POST" else set(),
            consent_version=current_app.config["HERALD"].CONSENT_TEXT_VERSION,
        ),
        status,
    )


@bp.post("/subscribe")
@limiter.limit(_signup_limit)
def signup():
    ctx = _context("/subscribe")
    try:
        outcome = subscribers.signup(_field("email"), _field("name"), request.form.getlist("newsletters"), ctx)
    except InvalidInput as exc:
        single = None
        if ctx.source.startswith("/n/"):
            slug = ctx.source.removeprefix("/n/")
            single = next((n for n in subscribers.active_newsletters() if n.slug == slug), None)
        newsletters = [single] if single else subscribers.active_newsletters()
        return _render_signup(newsletters, single=single, error=exc, status=400)
    _enqueue(outcome)
    # The same page whether the address was new, pending, subscribed or suppressed.
    return render_template("public/check_inbox.html")


def _bad_link(message: str = "This link is not valid. It may have been cut short when it was copied."):
    return render_error(400, message, title="That link doesn't work")


@bp.get("/confirm/<token>")
def confirm_page(token: str):
    try:
        check = subscribers.check_confirm_token(token)
    except ExpiredToken:
        return render_template("public/confirm_expired.html", token=token), 410
    except InvalidToken:
        return _bad_link()
    return render_template("public/confirm.html", token=token, check=check)


@bp.post("/confirm/<token>")
def confirm(token: str):
    try:
        outcome = subscribers.confirm(token, _context())
    except ExpiredToken:
        return render_template("public/confirm_expired.html", token=token), 410
    except InvalidToken:
        return _bad_link()
    _enqueue(outcome)
    preferences = url_for("public.preferences", token=_tokens().preferences(outcome.subscriber_id))
    return render_template("public/confirmed.html", preferences_url=preferences, changed=outcome.changed)


@bp.post("/confirm/<token>/resend")
@limiter.limit(_signup_limit)
def resend_confirmation(token: str):
    try:
        outcome = subscribers.resend_confirmation(token)
    except InvalidToken:
        return _bad_link()
    _enqueue(outcome)
    return render_template("public/check_inbox.html")


@bp.route("/preferences/<token>", methods=["GET", "POST"])
def preferences(token: str):
    try:
        subscriber = subscribers.subscriber_for_preferences(token)
    except InvalidToken:
        return _bad_link()
    error, saved, status = None, False, 200
    if request.method == "POST":
        try:
            outcome = subscribers.update_preferences(
                subscriber.id, _field("name"), request.form.getlist("newsletters"), _context()
            )
        except InvalidInput as exc:
            error, status = exc, 400
        else:
            _enqueue(outcome)
            saved = True
    return (
        render_template(
            "public/preferences.html",
            token=token,
            subscriber=subscriber,
            newsletters=subscribers.active_newsletters(),
            statuses={s.newsletter_id: s.status for s in subscriber.subscriptions},
            error=error,
            saved=saved,
            name=_field("name") if error else subscriber.name,
        ),
        status,
    )


@bp.post("/preferences/<token>/unsubscribe-all")
def unsubscribe_all(token: str):
    try:
        subscriber = subscribers.subscriber_for_preferences(token)
    except InvalidToken:
        return _bad_link()
    subscribers.unsubscribe_all(subscriber.id, "preferences", _context())
    return render_template("public/unsubscribed.html", everything=True, preferences_url=url_for(
        "public.preferences", token=token))


@bp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    try:
        subscriber_id, newsletter_id = _tokens().read_unsubscribe(token)
    except InvalidToken:
        return _bad_link("This unsubscribe link is damaged. Use the link in a complete copy of the email.")
    newsletter = next((n for n in subscribers.active_newsletters() if n.id == newsletter_id), None)
    preferences = url_for("public.preferences", token=_tokens().preferences(
        subscriber_id))
    return render_template("public/unsubscribe.html", token=token, newsletter=newsletter,
                           preferences_url=preferences)


@bp.post("/unsubscribe/<token>")
@csrf.exempt
@limiter.exempt
def unsubscribe(token: str):
    """RFC 8058 one-click: no cookie, login or CSRF token; 200 with no redirect; idempotent."""
    channel = "one_click" if request.form.get("List-Unsubscribe") == "One-Click" else "unsubscribe_page"
    if channel == "unsubscribe_page" and request.form.get("confirm") != "yes":
        # Neither Gmail's one-click body nor our own button: refuse rather than guess.
        return render_error(400, "To unsubscribe, use the button on the unsubscribe page.")
    try:
        subscriber_id, newsletter_id = _tokens().read_unsubscribe(token)
        subscribers.unsubscribe(token, channel, _context())
    except InvalidToken:
        return _bad_link("This unsubscribe link is damaged. Use the link in a complete copy of the email.")
    newsletter = next((n for n in subscribers.active_newsletters() if n.id == newsletter_id), None)
    preferences = url_for("public.preferences", token=_tokens().preferences(
        subscriber_id))
    return render_template("public/unsubscribed.html", newsletter=newsletter, everything=False,
                           preferences_url=preferences)
