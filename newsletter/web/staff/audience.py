"""Subscribers in the console: search and filter, one subscriber's record, CSV export and CSV import."""

from __future__ import annotations

import math

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)

from newsletter.addresses import InvalidInput
from newsletter.extensions import csrf, db
from newsletter.models import AuditAction, ImportStatus, StaffRole, SubscriberImport, utcnow
from newsletter.staff import audience, audit, editorial, exports, imports
from newsletter.web.staff.access import actor, bp, requires

PER_PAGE = 50


def _page() -> int:
    value = request.args.get("page", "1")
    return max(int(value), 1) if value.isdigit() else 1


@bp.get("/subscribers")
@requires(StaffRole.VIEWER)
def subscribers():
    filters = audience.SubscriberFilter.from_args(request.args)
    page = _page()
    found, total = audience.search_subscribers(filters, page, PER_PAGE)
    return render_template(
        "staff/subscribers.html", filters=filters, found=found, total=total, page=page,
        pages=max(math.ceil(total / PER_PAGE), 1), newsletters=editorial.list_newsletters(),
        members=audience.member_ids([s.id for s in found]),
        suppressed=audience.suppressed_keys([s.email_key for s in found]),
    )


@bp.get("/subscribers/export.csv")
@requires(StaffRole.EDITOR)
def subscribers_export():
    filters = audience.SubscriberFilter.from_args(request.args)
    audit.record_now(actor(), AuditAction.SUBSCRIBERS_EXPORTED, "", "CSV export", filters=filters.as_args())
    name = f"subscribers-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(
        stream_with_context(exports.export_lines(filters)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.get("/subscribers/<int:subscriber_id>")
@requires(StaffRole.VIEWER)
def subscriber(subscriber_id: int):
    try:
        record = audience.subscriber_record(subscriber_id)
    except InvalidInput:
        abort(404)
    return render_template("staff/subscriber.html", record=record, person=record.subscriber,
                           newsletter_names={n.id: n.name for n in editorial.list_newsletters()})


@bp.post("/subscribers/<int:subscriber_id>/unsubscribe")
@requires(StaffRole.EDITOR)
def subscriber_unsubscribe(subscriber_id: int):
    try:
        changed = audience.unsubscribe_everything(subscriber_id, actor())
    except InvalidInput:
        abort(404)
    flash(f"Unsubscribed from {changed} newsletter{'s' if changed != 1 else ''}.", "ok")
    return redirect(url_for("staff.subscriber", subscriber_id=subscriber_id), 303)


@bp.post("/subscribers/<int:subscriber_id>/suppress")
@requires(StaffRole.EDITOR)
def subscriber_suppress(subscriber_id: int):
    try:
        audience.suppress_subscriber(subscriber_id, request.form.get("detail", ""), actor())
    except InvalidInput:
        abort(404)
    flash("This address will never be mailed again.", "ok")
    return redirect(url_for("staff.subscriber", subscriber_id=subscriber_id), 303)


# --- Imports ------------------------------------------------------------------------------------


def _import_form(error: InvalidInput | None = None, status: int = 200):
    return render_template("staff/imports.html", imports=imports.list_imports(), error=error,
                           newsletters=editorial.list_newsletters(), form=request.form), status


@bp.get("/imports", endpoint="imports")
@requires(StaffRole.EDITOR)
def imports_page():
    return _import_form()


@bp.post("/imports")
@requires(StaffRole.EDITOR)
@csrf.exempt
def imports_upload():
    # The import may be far larger than any other form: raise the limit for this view alone, then check
    # the CSRF token by hand (the global check would read the body under the small limit first).
    request.max_content_length = current_app.config["HERALD"].IMPORT_MAX_BYTES
    # Werkzeug's multipart decoder counts its read buffer (64 KiB a read) against this limit too, so the
    # site-wide 64 KiB would refuse any file larger than one read; the text fields here stay small.
    request.max_form_memory_size = 1024 * 1024
    csrf.protect()
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _import_form(InvalidInput("Choose a CSV file to import.", "file"), 400)
    try:
        job = imports.start_import(
            upload.stream, upload.filename, [int(n) for n in request.form.getlist("newsletters") if n.isdigit()],
            request.form.get("consent_source", ""), request.form.get("already_confirmed") == "yes", actor(),
        )
    except InvalidInput as exc:
        return _import_form(exc, 400)
    flash(f"“{job.filename}” is being imported. This page shows how far it has got.", "ok")
    return redirect(url_for("staff.import_detail", import_id=job.id), 303)


def _import(import_id: int) -> SubscriberImport:
    job = db.session.get(SubscriberImport, import_id)
    if job is None:
        abort(404)
    return job


@bp.get("/imports/<int:import_id>")
@requires(StaffRole.EDITOR)
def import_detail(import_id: int):
    job = _import(import_id)
    running = job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING)
    return render_template("staff/import.html", job=job, running=running,
                           newsletters={n.id: n for n in editorial.list_newsletters()})


@bp.get("/imports/<int:import_id>/report.csv")
@requires(StaffRole.EDITOR)
def import_report(import_id: int):
    job = _import(import_id)
    path = imports.upload_folder() / job.report_name
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="text/csv", as_attachment=True,
                     download_name=f"import-{job.id}-report.csv", max_age=0)


@bp.post("/imports/<int:import_id>/retry")
@requires(StaffRole.EDITOR)
def import_retry(import_id: int):
    _import(import_id)
    try:
        imports.retry_import(import_id, actor())
    except InvalidInput as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.import_detail", import_id=import_id), 303)
