"""Editions in the console: what is coming, previews for each audience, editing a draft, sending and its progress."""

from __future__ import annotations

import math

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select

from newsletter import digests, schedules, subscribers
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Audience, Edition, EditionStatus, Schedule, StaffRole
from newsletter.staff import deliveries, editorial, parts
from newsletter.web.staff.access import actor, bp, current_staff, requires

HISTORY_PER_PAGE = 25
UPCOMING = (EditionStatus.DRAFT,)
GOING = (EditionStatus.FROZEN, EditionStatus.SENDING)
PAST = (EditionStatus.SENT, EditionStatus.SKIPPED, EditionStatus.MISSED, EditionStatus.CANCELLED)


def _edition(edition_id: int) -> Edition:
    edition = db.session.get(Edition, edition_id)
    if edition is None:
        abort(404)
    return edition


def _back(edition_id: int, **args):
    return redirect(url_for("staff.edition", edition_id=edition_id, **args), 303)


@bp.get("/editions")
@requires(StaffRole.VIEWER)
def editions():
    page = request.args.get("page", "1")
    page = max(int(page), 1) if page.isdigit() else 1
    drafts = list(db.session.scalars(select(Edition).where(Edition.status.in_(UPCOMING)).order_by(Edition.run_at)))
    drafted = {e.schedule_id for e in drafts}
    undrafted = [s for s in schedules.list_schedules() if s.enabled and s.next_run_at and s.id not in drafted]
    going = list(db.session.scalars(select(Edition).where(Edition.status.in_(GOING)).order_by(Edition.run_at)))
    past_query = select(Edition).where(Edition.status.in_(PAST))
    total = db.session.scalar(select(func.count()).select_from(past_query.subquery())) or 0
    past = list(db.session.scalars(past_query.order_by(Edition.run_at.desc(), Edition.id.desc())
                                   .offset((page - 1) * HISTORY_PER_PAGE).limit(HISTORY_PER_PAGE)))
    counts = deliveries.counts_for([e.id for e in going + past])
    return render_template(
        "staff/editions.html", drafts=drafts, undrafted=sorted(undrafted, key=lambda s: s.next_run_at), going=going,
        past=past, counts=counts, page=page, pages=max(math.ceil(total / HISTORY_PER_PAGE), 1),
        sending=parts.sending_ready(), describe=schedules.describe, empty=deliveries.Counts(),
    )


@bp.post("/schedules/<int:schedule_id>/draft")
@requires(StaffRole.EDITOR)
def schedule_draft(schedule_id: int):
    if db.session.get(Schedule, schedule_id) is None:
        abort(404)
    try:
        edition = editorial.draft_next_edition(schedule_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
        return redirect(url_for("staff.editions"), 303)
    flash("The next edition is drafted. Review it, change it, send a test, or send it now.", "ok")
    return _back(edition.id)


def _renderings(edition: Edition) -> dict:
    stored = digests.edition_renderings(edition.id)
    if stored:
        return stored
    if not edition.items:
        return {}
    return digests.render_edition(edition.id)


def _preview_document(html: str, name: str) -> str:
    # What a reader's copy fills in, filled for the preview: the staff member's name, links that go nowhere.
    values = {digests.SLOT_NAME: name, digests.SLOT_UNSUBSCRIBE_URL: "#unsubscribe",
              digests.SLOT_PREFERENCES_URL: "#preferences"}
    return digests.fill_slots(html, values)


@bp.get("/editions/<int:edition_id>")
@requires(StaffRole.VIEWER)
def edition(edition_id: int):
    edition = _edition(edition_id)
    audience = Audience.MEMBER if request.args.get("audience") == Audience.MEMBER.value else Audience.NON_MEMBER
    fmt = "text" if request.args.get("format") == "text" else "html"
    preview_error = None
    try:
        renderings = _renderings(edition)
    except Exception as exc:  # noqa: BLE001 - a broken template must not hide the page that could fix it
        renderings, preview_error = {}, f"{type(exc).__name__}: {exc}"
    rendering = renderings.get(audience)
    name = (current_staff().name or "Olena").split()[0]
    document = _preview_document(rendering.html, name) if rendering and fmt == "html" else ""
    text = _preview_document(rendering.text, name) if rendering and fmt == "text" else ""
    is_draft = edition.status == EditionStatus.DRAFT
    progress = deliveries.progress(edition.id) if edition.status not in UPCOMING else None
    return render_template(
        "staff/edition.html", edition=edition, audience=audience, fmt=fmt, rendering=rendering, document=document,
        text=text, preview_error=preview_error, is_draft=is_draft, progress=progress,
        candidates=editorial.candidate_articles(edition) if is_draft else [], sending=parts.sending_ready(),
        schedule=db.session.get(Schedule, edition.schedule_id) if edition.schedule_id else None,
    )


def _edit(edition_id: int, action, *args) -> None:
    try:
        action(edition_id, *args, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")


@bp.post("/editions/<int:edition_id>/subject")
@requires(StaffRole.EDITOR)
def edition_subject(edition_id: int):
    _edition(edition_id)
    _edit(edition_id, editorial.set_edition_subject, request.form.get("subject", ""))
    return _back(edition_id)


@bp.post("/editions/<int:edition_id>/articles")
@requires(StaffRole.EDITOR)
def edition_add_article(edition_id: int):
    _edition(edition_id)
    article = request.form.get("article_id", "")
    if not article.isdigit():
        flash("Choose an article to add.", "error")
    else:
        _edit(edition_id, editorial.add_edition_article, int(article))
    return _back(edition_id)


@bp.post("/editions/<int:edition_id>/articles/<int:article_id>/remove")
@requires(StaffRole.EDITOR)
def edition_remove_article(edition_id: int, article_id: int):
    _edition(edition_id)
    _edit(edition_id, editorial.remove_edition_article, article_id)
    return _back(edition_id)


@bp.post("/editions/<int:edition_id>/articles/<int:article_id>/move")
@requires(StaffRole.EDITOR)
def edition_move_article(edition_id: int, article_id: int):
    edition = _edition(edition_id)
    ids = [item.article_id for item in edition.items]
    if article_id in ids:
        step = -1 if request.form.get("direction") == "up" else 1
        position = min(max(ids.index(article_id) + step, 0), len(ids) - 1)
        _edit(edition_id, editorial.move_edition_article, article_id, position)
    return _back(edition_id)


@bp.post("/editions/<int:edition_id>/cancel")
@requires(StaffRole.EDITOR)
def edition_cancel(edition_id: int):
    edition = _edition(edition_id)
    try:
        if edition.status == EditionStatus.DRAFT:
            editorial.cancel_draft(edition_id, actor())
            flash("The draft is cancelled; its articles go to the next edition.", "ok")
        else:
            not_sent = deliveries.cancel(edition_id, actor())
            flash(f"Sending is cancelled; {not_sent} message{'s' if not_sent != 1 else ''} will not go.", "ok")
    except InvalidInput as exc:
        flash(str(exc), "error")
    return _back(edition_id)


@bp.post("/editions/<int:edition_id>/test")
@requires(StaffRole.EDITOR)
def edition_test(edition_id: int):
    _edition(edition_id)
    audience = Audience.MEMBER if request.form.get("audience") == Audience.MEMBER.value else Audience.NON_MEMBER
    # A test goes to the staff member's own address only: the console is not a way to mail anyone else.
    address = current_staff().email
    try:
        deliveries.send_test(edition_id, address, audience, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash(f"A test copy ({'member' if audience == Audience.MEMBER else 'non-member'}) is on its way to "
              f"{address}.", "ok")
    return _back(edition_id)


@bp.get("/editions/<int:edition_id>/send")
@requires(StaffRole.EDITOR)
def edition_send_confirm(edition_id: int):
    """Ask once more before a mass send, saying how many readers it reaches (no script needed)."""
    edition = _edition(edition_id)
    if edition.status not in (EditionStatus.DRAFT, EditionStatus.FROZEN):
        return _back(edition_id)
    recipients = db.session.scalar(
        select(func.count()).select_from(subscribers.recipients_query(edition.newsletter_id).subquery()))
    try:
        rendering = _renderings(edition).get(Audience.NON_MEMBER)
    except Exception:  # noqa: BLE001 - the page still lets them go back and fix it
        rendering = None
    return render_template("staff/send_confirm.html", edition=edition, recipients=recipients or 0,
                           rendering=rendering, sending=parts.sending_ready())


@bp.post("/editions/<int:edition_id>/send")
@requires(StaffRole.EDITOR)
def edition_send(edition_id: int):
    _edition(edition_id)
    try:
        recipients = deliveries.send_now(edition_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
        return _back(edition_id)
    if db.session.get(Edition, edition_id, populate_existing=True).status == EditionStatus.SKIPPED:
        flash("There was nothing to send: the edition has no articles, so it is skipped.", "error")
        return _back(edition_id)
    flash(f"Sending to {recipients} reader{'s' if recipients != 1 else ''}.", "ok")
    return redirect(url_for("staff.edition_progress", edition_id=edition_id), 303)


@bp.post("/editions/<int:edition_id>/pause")
@requires(StaffRole.EDITOR)
def edition_pause(edition_id: int):
    _edition(edition_id)
    try:
        deliveries.pause(edition_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.edition_progress", edition_id=edition_id), 303)


@bp.post("/editions/<int:edition_id>/resume")
@requires(StaffRole.EDITOR)
def edition_resume(edition_id: int):
    _edition(edition_id)
    try:
        deliveries.resume(edition_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.edition_progress", edition_id=edition_id), 303)


@bp.post("/editions/<int:edition_id>/retry")
@requires(StaffRole.EDITOR)
def edition_retry(edition_id: int):
    _edition(edition_id)
    try:
        queued = deliveries.retry_failed(edition_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
        return _back(edition_id)
    flash(f"{queued} failed deliver{'ies are' if queued != 1 else 'y is'} being sent again.", "ok")
    return redirect(url_for("staff.edition_progress", edition_id=edition_id), 303)


@bp.get("/editions/<int:edition_id>/progress")
@requires(StaffRole.VIEWER)
def edition_progress(edition_id: int):
    edition = _edition(edition_id)
    progress = deliveries.progress(edition_id)
    return render_template("staff/progress.html", edition=edition, progress=progress, sending=parts.sending_ready(),
                           last_sent=deliveries.last_activity(edition_id))


@bp.get("/editions/<int:edition_id>/progress.json")
@requires(StaffRole.VIEWER)
def edition_progress_json(edition_id: int):
    _edition(edition_id)
    return jsonify(deliveries.progress(edition_id).as_dict())
