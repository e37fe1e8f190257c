"""Staff sign-in with a password and an optional two-factor code, sign-out, and one's own account."""

from __future__ import annotations

import segno
from flask import current_app, flash, redirect, render_template, request, session, url_for
from markupsafe import Markup

from newsletter.addresses import InvalidInput
from newsletter.extensions import limiter
from newsletter.models import AuditAction, StaffRole, utcnow
from newsletter.staff import accounts, audit
from newsletter.web.staff.access import (
    actor,
    bp,
    current_staff,
    end_session,
    public,
    requires,
    safe_next,
    start_session,
)

# The second step must follow the first within this many seconds.
CODE_STEP_SECONDS = 300


def _signin_limit() -> str:
    return current_app.config["HERALD"].STAFF_SIGNIN_RATE_LIMIT


def _field(name: str) -> str:
    value = request.form.get(name, "")
    return value if isinstance(value, str) else ""


def _finish(user) -> object:
    target = safe_next(session.get("staff_next"))
    start_session(user)
    return redirect(target, 303)


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(_signin_limit, methods=["POST"])
@public
def sign_in():
    if current_staff() is not None:
        return redirect(safe_next(request.args.get("next")))
    error, status = None, 200
    if request.method == "GET":
        session["staff_next"] = safe_next(request.args.get("next"))
    else:
        try:
            user = accounts.authenticate(_field("email"), _field("password"), request.remote_addr or "")
        except accounts.SignInLocked as exc:
            error, status = str(exc), 429
        except accounts.SignInFailed as exc:
            error, status = str(exc), 401
        else:
            if not user.has_two_factor:
                return _finish(user)
            session["staff_pending"] = {"id": user.id, "at": utcnow().timestamp()}
            return redirect(url_for("staff.sign_in_code"), 303)
    headers = {"Retry-After": "60"} if status == 429 else {}
    return render_template("staff/sign_in.html", error=error, email=_field("email")), status, headers


@bp.route("/sign-in/code", methods=["GET", "POST"])
@limiter.limit(_signin_limit, methods=["POST"])
@public
def sign_in_code():
    pending = session.get("staff_pending") or {}
    if not pending or utcnow().timestamp() - pending.get("at", 0) > CODE_STEP_SECONDS:
        session.pop("staff_pending", None)
        flash("Please sign in again.", "error")
        return redirect(url_for("staff.sign_in"), 303)
    error, status = None, 200
    if request.method == "POST":
        try:
            user = accounts.verify_code(pending["id"], _field("code"), request.remote_addr or "")
        except accounts.SignInLocked as exc:
            error, status = str(exc), 429
        except (accounts.SignInFailed, InvalidInput):
            error, status = "That code is not right. Use the newest code your app shows.", 401
        else:
            return _finish(user)
    return render_template("staff/sign_in_code.html", error=error), status


@bp.post("/sign-out")
@requires(StaffRole.VIEWER)
def sign_out():
    audit.record_now(actor(), AuditAction.SIGN_OUT, f"staff {current_staff().id}")
    end_session()
    flash("You are signed out.", "ok")
    return redirect(url_for("staff.sign_in"), 303)


@bp.route("/account", methods=["GET", "POST"])
@requires(StaffRole.VIEWER)
def account():
    user = current_staff()
    error = None
    if request.method == "POST":
        try:
            accounts.change_password(user.id, _field("current_password"), _field("new_password"), actor())
        except InvalidInput as exc:
            error = exc
        else:
            # The new password ended every session, this one included: start a fresh one.
            start_session(user)
            flash("Your password is changed. Other sessions are signed out.", "ok")
            return redirect(url_for("staff.account"), 303)
    return render_template("staff/account.html", error=error), 400 if error else 200


def _qr_svg(uri: str) -> Markup:
    svg = segno.make(uri, error="m").svg_inline(scale=4, omitsize=True, title="QR code for your authenticator app")
    # segno writes only the QR's own path data; the URI itself never reaches the markup.
    return Markup(svg.replace("<svg ", '<svg role="img" aria-label="QR code for your authenticator app" ', 1))  # noqa: S704


@bp.route("/account/two-factor", methods=["GET", "POST"])
@requires(StaffRole.VIEWER)
def two_factor():
    user = current_staff()
    error = None
    if user.has_two_factor:
        return render_template("staff/two_factor.html", enabled=True, error=None)
    if not session.get("staff_totp_setup"):
        # The secret waits in the signed session until a code made with it proves the phone has it; a
        # reload shows the same one, so a phone that scanned it already keeps working.
        session["staff_totp_setup"] = accounts.new_totp_secret()
    secret = session["staff_totp_setup"]
    if request.method == "POST":
        try:
            accounts.enable_two_factor(user.id, secret, _field("code"), actor())
        except InvalidInput as exc:
            error = exc
        else:
            session.pop("staff_totp_setup", None)
            flash("Two-factor sign-in is on. You will be asked for a code each time you sign in.", "ok")
            return redirect(url_for("staff.two_factor"), 303)
    uri = accounts.totp_uri(secret, user.email)
    return render_template("staff/two_factor.html", enabled=False, secret=secret, uri=uri, qr=_qr_svg(uri),
                           error=error), 400 if error else 200


@bp.post("/account/two-factor/disable")
@requires(StaffRole.VIEWER)
def two_factor_disable():
    user = current_staff()
    try:
        accounts.disable_two_factor(user.id, actor(), code=_field("code"))
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash("Two-factor sign-in is off.", "ok")
    return redirect(url_for("staff.two_factor"), 303)
