"""Newsletters and their schedules in the console, with the next run times shown before saving."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from newsletter import schedules
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Newsletter, Schedule, StaffRole
from newsletter.staff import editorial
from newsletter.web.staff.access import actor, bp, requires

FIRST_ZONE = "Europe/Kyiv"


def zone_choices() -> list[str]:
    """Every IANA zone, the newsroom's first; the legacy aliases (Europe/Kiev, US/...) left out."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/", "US/")))
    zones = [z for z in zones if z not in {"Europe/Kiev", "Europe/Uzhgorod", "Europe/Zaporozhye"}]
    return [FIRST_ZONE, "UTC", *[z for z in zones if z != FIRST_ZONE]]


@bp.get("/newsletters")
@requires(StaffRole.VIEWER)
def newsletters():
    found = editorial.list_newsletters()
    by_newsletter: dict[int, list[Schedule]] = {}
    for s in schedules.list_schedules():
        by_newsletter.setdefault(s.newsletter_id, []).append(s)
    return render_template("staff/newsletters.html", newsletters=found, schedules=by_newsletter,
                           describe=schedules.describe)


def _newsletter_form() -> editorial.NewsletterForm:
    form = request.form
    position = form.get("position", "0").strip()
    return editorial.NewsletterForm(
        slug=form.get("slug", ""), name=form.get("name", ""), description=form.get("description", ""),
        frequency=form.get("frequency", ""), sender_name=form.get("sender_name", ""),
        sender_email=form.get("sender_email", ""), list_id=form.get("list_id", ""),
        position=int(position) if position.lstrip("-").isdigit() else 0, active=form.get("active") == "yes",
    )


@bp.route("/newsletters/new", methods=["GET", "POST"])
@requires(StaffRole.ADMIN)
def newsletter_new():
    error = None
    if request.method == "POST":
        try:
            newsletter = editorial.create_newsletter(_newsletter_form(), current_app.config["HERALD"].BASE_URL,
                                                     actor())
        except InvalidInput as exc:
            error = exc
        else:
            flash(f"“{newsletter.name}” is created. Give it a schedule so editions are made.", "ok")
            return redirect(url_for("staff.newsletters"), 303)
    return render_template("staff/newsletter_form.html", newsletter=None, error=error,
                           form=request.form), 400 if error else 200


@bp.route("/newsletters/<int:newsletter_id>", methods=["GET"])
@requires(StaffRole.VIEWER)
def newsletter_edit(newsletter_id: int):
    newsletter = db.session.get(Newsletter, newsletter_id) or abort(404)
    return render_template("staff/newsletter_form.html", newsletter=newsletter, error=None, form={})


@bp.post("/newsletters/<int:newsletter_id>")
@requires(StaffRole.ADMIN)
def newsletter_update(newsletter_id: int):
    newsletter = db.session.get(Newsletter, newsletter_id) or abort(404)
    try:
        editorial.update_newsletter(newsletter_id, _newsletter_form(), current_app.config["HERALD"].BASE_URL, actor())
    except InvalidInput as exc:
        return render_template("staff/newsletter_form.html", newsletter=newsletter, error=exc, form=request.form), 400
    flash("Newsletter saved.", "ok")
    return redirect(url_for("staff.newsletters"), 303)


# --- Schedules ----------------------------------------------------------------------------------


def _schedule_values() -> dict:
    form = request.form
    limit = form.get("article_limit", "10").strip()
    return {
        "days": ",".join(form.getlist("days")),
        "at": form.get("time", ""),
        "timezone": form.get("timezone", ""),
        "article_limit": int(limit) if limit.isdigit() else 0,
        "include_tags": [t.strip() for t in form.get("include_tags", "").split(",") if t.strip()],
        "exclude_tags": [t.strip() for t in form.get("exclude_tags", "").split(",") if t.strip()],
        "subject_template": form.get("subject_template", ""),
        "enabled": form.get("enabled") == "yes",
    }


def _schedule_page(schedule: Schedule | None, newsletter_id: int | None, error=None, preview=None, status=200):
    form = request.form if request.method == "POST" else None
    return render_template(
        "staff/schedule_form.html", schedule=schedule, newsletter_id=newsletter_id, form=form, error=error,
        preview=preview, zones=zone_choices(), days=list(zip(schedules.DAYS, schedules.DAY_NAMES, strict=True)),
        newsletters=editorial.list_newsletters(),
    ), status


def _preview(values: dict) -> list:
    return editorial.next_run_times(values["days"] or "", values["at"], values["timezone"])


@bp.route("/schedules/new", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def schedule_new():
    newsletter_arg = request.values.get("newsletter", "")
    newsletter_id = int(newsletter_arg) if newsletter_arg.isdigit() else None
    if request.method == "GET":
        return _schedule_page(None, newsletter_id)
    values = _schedule_values()
    try:
        times = _preview(values)
        if request.form.get("action") == "preview":
            return _schedule_page(None, newsletter_id, preview=times)
        if newsletter_id is None:
            raise InvalidInput("Choose the newsletter this schedule is for.", "newsletter")
        schedule = editorial.create_schedule(actor(), newsletter_id, **values)
    except InvalidInput as exc:
        return _schedule_page(None, newsletter_id, error=exc, status=400)
    flash(f"Schedule saved: {schedules.describe(schedule)}. The next edition is drafted "
          f"{current_app.config['HERALD'].EDITION_LEAD_MINUTES} minutes before it goes.", "ok")
    return redirect(url_for("staff.newsletters"), 303)


@bp.get("/schedules/<int:schedule_id>")
@requires(StaffRole.VIEWER)
def schedule_edit(schedule_id: int):
    schedule = db.session.get(Schedule, schedule_id) or abort(404)
    return _schedule_page(schedule, schedule.newsletter_id)


@bp.post("/schedules/<int:schedule_id>")
@requires(StaffRole.EDITOR)
def schedule_update(schedule_id: int):
    schedule = db.session.get(Schedule, schedule_id) or abort(404)
    values = _schedule_values()
    try:
        times = _preview(values)
        if request.form.get("action") == "preview":
            return _schedule_page(schedule, schedule.newsletter_id, preview=times)
        schedule = editorial.update_schedule(actor(), schedule_id, **values)
    except InvalidInput as exc:
        return _schedule_page(schedule, schedule.newsletter_id, error=exc, status=400)
    flash(f"Schedule saved: {schedules.describe(schedule)}.", "ok")
    return redirect(url_for("staff.newsletters"), 303)
