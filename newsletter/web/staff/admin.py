"""Memberships and the Stripe log for everyone; staff accounts, the audit log and settings for admins."""

from __future__ import annotations

import math
from dataclasses import fields

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from newsletter.addresses import InvalidInput
from newsletter.config import Config
from newsletter.extensions import db
from newsletter.models import AuditAction, StaffRole, StaffUser
from newsletter.staff import accounts, audit, money
from newsletter.web.staff.access import actor, bp, current_staff, requires

PER_PAGE = 50
# Settings whose values are secrets, or hold one (a URL with a password): shown as set or not, never read out.
SECRET_SETTINGS = {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "MAIL_URL"}


def _page() -> int:
    value = request.args.get("page", "1")
    return max(int(value), 1) if value.isdigit() else 1


# --- Memberships --------------------------------------------------------------------------------


@bp.get("/memberships")
@requires(StaffRole.VIEWER)
def memberships():
    if not money.ready():
        return render_template("staff/memberships.html", ready=False)
    rows, statuses = money.members_by_tier()
    events, _ = money.stripe_events(page=1, per_page=10)
    return render_template("staff/memberships.html", ready=True, rows=rows, statuses=statuses,
                           revenue=money.monthly_recurring_revenue(), tiers=money.tiers(), events=events,
                           describe=money.describe_changes)


@bp.get("/memberships/events")
@requires(StaffRole.VIEWER)
def stripe_events():
    if not money.ready():
        return render_template("staff/memberships.html", ready=False)
    type_ = request.args.get("type", "")
    page = _page()
    events, total = money.stripe_events(type_=type_, page=page, per_page=PER_PAGE)
    return render_template("staff/stripe_events.html", events=events, total=total, page=page, type_=type_,
                           types=money.event_types(), pages=max(math.ceil(total / PER_PAGE), 1),
                           describe=money.describe_changes)


# --- Tiers (admins) -----------------------------------------------------------------------------


def _tiers_page(error: InvalidInput | None = None, form=None, status: int = 200):
    if not money.ready():
        return render_template("staff/memberships.html", ready=False), 200
    editing = None
    slug = request.args.get("slug", "")
    if slug:
        editing = next((t for t in money.tiers() if t.slug == slug), None)
    return render_template("staff/tiers.html", tiers=money.tiers(), editing=editing, error=error,
                           form=form or {}, major=money.major), status


@bp.get("/tiers")
@requires(StaffRole.ADMIN)
def tiers():
    return _tiers_page()


@bp.post("/tiers")
@requires(StaffRole.ADMIN)
def tier_save():
    if not money.ready():
        abort(404)
    form = request.form
    position = form.get("position", "0").strip()
    try:
        tier = money.save_tier(
            actor(), form.get("slug", ""), name=form.get("name", ""), currency=form.get("currency", "eur"),
            monthly=form.get("monthly", ""), yearly=form.get("yearly", ""), benefits=form.get("benefits", ""),
            position=int(position) if position.lstrip("-").isdigit() else 0, active=form.get("active") == "yes")
    except InvalidInput as exc:
        return _tiers_page(exc, form, 400)
    flash(f"Tier “{tier.name}” saved.", "ok")
    if form.get("sync") == "yes":
        try:
            money.sync_tier_prices(actor(), tier.slug)
        except InvalidInput as exc:
            flash(f"{exc} The tier is saved; update Stripe later with “Update Stripe prices”.", "error")
        else:
            flash("Stripe now sells it at these amounts.", "ok")
    return redirect(url_for("staff.tiers"), 303)


@bp.post("/tiers/<slug>/sync")
@requires(StaffRole.ADMIN)
def tier_sync(slug: str):
    if not money.ready():
        abort(404)
    try:
        money.sync_tier_prices(actor(), slug)
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash("Stripe now sells it at these amounts.", "ok")
    return redirect(url_for("staff.tiers"), 303)


# --- Staff accounts -----------------------------------------------------------------------------


@bp.get("/team")
@requires(StaffRole.ADMIN)
def team():
    return render_template("staff/team.html", members=accounts.list_staff(), roles=list(StaffRole), error=None,
                           form={})


@bp.post("/team")
@requires(StaffRole.ADMIN)
def team_create():
    form = request.form
    try:
        user = accounts.create_staff(form.get("email", ""), form.get("password", ""), form.get("role", ""),
                                     name=form.get("name", ""), actor=actor())
    except (InvalidInput, ValueError) as exc:
        error = exc if isinstance(exc, InvalidInput) else InvalidInput("Choose a role.", "role")
        return render_template("staff/team.html", members=accounts.list_staff(), roles=list(StaffRole), error=error,
                               form=form), 400
    flash(f"{user.email} can now sign in as {user.role.value}. Give them the password by a safe way, and ask them "
          "to change it and turn on two-factor sign-in.", "ok")
    return redirect(url_for("staff.team"), 303)


@bp.post("/team/<int:staff_id>")
@requires(StaffRole.ADMIN)
def team_update(staff_id: int):
    if db.session.get(StaffUser, staff_id) is None:
        abort(404)
    form = request.form
    role = form.get("role")
    try:
        accounts.change_staff(staff_id, actor(), role=StaffRole(role) if role in {r.value for r in StaffRole} else None,
                              active={"yes": True, "no": False}.get(form.get("active", "")))
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash("Saved.", "ok")
    return redirect(url_for("staff.team"), 303)


@bp.post("/team/<int:staff_id>/reset-two-factor")
@requires(StaffRole.ADMIN)
def team_reset_two_factor(staff_id: int):
    if db.session.get(StaffUser, staff_id) is None:
        abort(404)
    accounts.disable_two_factor(staff_id, actor())
    flash("Two-factor sign-in is off for that account; they can set it up again after signing in.", "ok")
    return redirect(url_for("staff.team"), 303)


@bp.post("/team/<int:staff_id>/password")
@requires(StaffRole.ADMIN)
def team_reset_password(staff_id: int):
    if db.session.get(StaffUser, staff_id) is None:
        abort(404)
    try:
        accounts.change_password(staff_id, None, request.form.get("password", ""), actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash("Password set; their other sessions are signed out.", "ok")
    return redirect(url_for("staff.team"), 303)


# --- The audit log and settings -----------------------------------------------------------------


@bp.get("/audit")
@requires(StaffRole.ADMIN)
def audit_log():
    action = request.args.get("action", "")
    action = action if action in {a.value for a in AuditAction} else ""
    staff = request.args.get("staff", "")
    page = _page()
    events, total = audit.list_events(action=action or None, staff_id=int(staff) if staff.isdigit() else None,
                                      page=page, per_page=PER_PAGE)
    args = {k: v for k, v in {"action": action, "staff": staff}.items() if v}
    return render_template("staff/audit.html", events=events, total=total, page=page, args=args, action=action,
                           staff_filter=staff, actions=sorted(a.value for a in AuditAction),
                           members=accounts.list_staff(), pages=max(math.ceil(total / PER_PAGE), 1))


@bp.get("/settings")
@requires(StaffRole.ADMIN)
def settings():
    config = current_app.config["HERALD"]
    rows = []
    for f in fields(Config):
        value = getattr(config, f.name)
        if f.name in SECRET_SETTINGS or "SECRET" in f.name or "KEY" in f.name:
            shown = "set" if value else "not set"
            secret = True
        else:
            shown, secret = str(value), False
        rows.append((f.name, shown, secret))
    return render_template("staff/settings.html", rows=rows, me=current_staff())
