"""The staff blueprint's gate: who is signed in, the one role decorator, and console-wide page helpers."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, g, redirect, request, session, url_for
from markupsafe import Markup

from newsletter.extensions import db
from newsletter.models import StaffRole, StaffUser, utcnow
from newsletter.staff.audit import Actor
from newsletter.web.errors import render_error

bp = Blueprint("staff", __name__, url_prefix="/staff")

SESSION_KEYS = ("staff_id", "staff_epoch", "staff_signed_in_at", "staff_pending")


def _config():
    return current_app.config["HERALD"]


def current_staff() -> StaffUser | None:
    return g.get("staff")


def actor() -> Actor:
    """The signed-in staff member and their address, for the audit log."""
    user = current_staff()
    return Actor(user.id if user else None, user.email if user else "", request.remote_addr or "")


def _forget_csrf_token() -> None:
    # Flask-WTF keeps the request's token in g; with the session cleared, the next form gets a new one.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


def start_session(user: StaffUser) -> None:
    """Make a fresh session for a signed-in staff member (a new cookie: nothing from before carries over)."""
    session.clear()
    _forget_csrf_token()
    session.permanent = True
    session["staff_id"] = user.id
    session["staff_epoch"] = user.session_epoch
    session["staff_signed_in_at"] = utcnow().timestamp()


def end_session() -> None:
    session.clear()
    _forget_csrf_token()


@bp.before_request
def load_staff() -> None:
    g.staff = None
    # Each request signs its own CSRF token from its own session. (A fresh app context already starts
    # without one; this also holds where several clients share one context, as in the tests.)
    _forget_csrf_token()
    staff_id = session.get("staff_id")
    if staff_id is None:
        return
    user = db.session.get(StaffUser, staff_id)
    signed_in = session.get("staff_signed_in_at", 0)
    # The cookie's own expiry is refreshed on every request; this caps a session however busy it is.
    fresh = utcnow().timestamp() - signed_in < _config().STAFF_SESSION_HOURS * 3600
    if user is None or not user.active or session.get("staff_epoch") != user.session_epoch or not fresh:
        end_session()
        return
    g.staff = user


@bp.after_request
def no_store(response):
    # Console pages hold readers' addresses: never keep them in a shared or back-button cache.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def safe_next(target: str | None) -> str:
    """Return a console path to go back to after sign-in; anything else goes to the dashboard."""
    if target and target.startswith("/staff") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("staff.dashboard")


def requires(role: StaffRole) -> Callable:
    """Let a view run only for a signed-in staff member with at least `role`; the only gate in the console.

    Without a session: a redirect to sign-in. With too small a role: 403, for GET and POST alike.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = current_staff()
            if user is None:
                back = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for("staff.sign_in", next=back), 303)
            if not user.role.allows(role):
                return render_error(403, f"This needs the {role.value} role; you are signed in as "
                                         f"{user.role.value}.", title="Not allowed")
            return view(*args, **kwargs)

        wrapped.staff_role = role
        return wrapped

    return decorator


def public(view: Callable) -> Callable:
    """Mark a console view that works without a session (sign-in itself)."""
    view.staff_public = True
    return view


# --- Template helpers ---------------------------------------------------------------------------


@bp.app_context_processor
def console_context() -> dict:
    user = g.get("staff")
    return {
        "staff_user": user,
        "can": lambda role: bool(user) and user.role.allows(StaffRole(role)),
        "staff_zone": _config().STAFF_TIMEZONE,
    }


@bp.app_template_filter("staff_time")
def staff_time(value: dt.datetime | None, fmt: str = "%d %b %Y, %H:%M") -> str:
    """Show a UTC time in the newsroom's zone."""
    if value is None:
        return "–"
    return value.astimezone(ZoneInfo(_config().STAFF_TIMEZONE)).strftime(fmt)


@bp.app_template_filter("zone_time")
def zone_time(value: dt.datetime | None, zone: str, fmt: str = "%a %d %b %Y, %H:%M %Z") -> str:
    """Show a UTC time on the wall clock of a given zone."""
    if value is None:
        return "–"
    try:
        return value.astimezone(ZoneInfo(zone)).strftime(fmt)
    except (KeyError, ValueError):
        return staff_time(value)


@bp.app_template_filter("num")
def number(value: int | float | None) -> str:
    """Thousands with a thin space, as the newsroom writes them."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}".replace(",", "\u202f")
    return f"{int(value):,}".replace(",", "\u202f")


@bp.app_template_filter("money")
def money_amount(value: int | None, currency: str) -> str:
    """An amount in minor units with its currency, e.g. 12.50 EUR."""
    if value is None:
        return "–"
    from newsletter.staff.money import major

    amount = major(value, currency or "")
    return f"{number(float(amount)) if amount % 1 else number(int(amount))} {(currency or '').upper()}"


@bp.app_template_filter("ago")
def ago(value: dt.datetime | None) -> Markup | str:
    """Say how long ago, with the exact time on hover."""
    if value is None:
        return "never"
    seconds = (utcnow() - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            words = f"{n} {unit}{'s' if n != 1 else ''}"
            break
    else:
        words = "moments"
    text = f"in {words}" if future else f"{words} ago"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(timespec="seconds"), staff_time(value), text)
