"""Bring in a CSV of addresses: saved to the shared upload folder, read by a worker in committed chunks.

The file is never held in memory: the web copies the upload to disk, the worker reads it row by row and
commits every chunk with the import's counters, so a run cut short resumes after its last chunk. An address
that unsubscribed or is suppressed is never subscribed again; every other new one is asked to confirm by
the normal confirmation mail, unless staff state that the rows confirmed elsewhere.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from newsletter import jobs
from newsletter.addresses import InvalidInput, clean_name, email_hash, normalize_email
from newsletter.extensions import db
from newsletter.models import (
    AuditAction,
    ConsentEvent,
    ConsentKind,
    ImportStatus,
    Newsletter,
    Subscriber,
    SubscriberImport,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from newsletter.notifications import queue_mail
from newsletter.staff import audit
from newsletter.staff.audit import Actor
from newsletter.staff.exports import safe_cell

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000
LEASE = dt.timedelta(minutes=5)
COPY_BUFFER = 1024 * 1024
EMAIL_HEADERS = {"email", "e-mail", "email address", "e-mail address", "emailaddress", "mail", "address"}
NAME_HEADERS = {"name", "full name", "fullname", "display name", "first name", "firstname"}

# Why a row was left out, as the report says it. Skipped: nothing wrong with the row, but we must not add it.
SKIP_SUPPRESSED = "suppressed (bounced, complained or erased): never mailed again"
SKIP_UNSUBSCRIBED = "unsubscribed before: never subscribed again by an import"
SKIP_SUBSCRIBED = "already subscribed"
SKIP_PENDING = "already waiting to confirm"
SKIP_REPEATED = "repeated in the file"
# Rejected: the row itself is unusable.
REJECT_INVALID = "not a valid email address"
REJECT_EMPTY = "no email address in the row"


@dataclass
class Chunk:
    """What one chunk did, merged into the import's counters when it commits."""

    added: int = 0
    skipped: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    mail_job_ids: list[int] = field(default_factory=list)
    report: list[tuple[int, str, str, str]] = field(default_factory=list)

    def skip(self, line: int, email: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.report.append((line, email, "skipped", reason))

    def reject(self, line: int, email: str, reason: str) -> None:
        self.rejected[reason] += 1
        self.report.append((line, email, "rejected", reason))


def _config():
    return current_app.config["HERALD"]


def upload_folder() -> Path:
    return Path(_config().UPLOAD_FOLDER)


# --- Starting an import (the web) ---------------------------------------------------------------


def start_import(stream: BinaryIO, filename: str, newsletter_ids: list[int], consent_source: str,
                 already_confirmed: bool, actor: Actor) -> SubscriberImport:
    """Save an uploaded CSV to the upload folder, record the import and hand it to a worker."""
    consent_source = " ".join((consent_source or "").split())
    if not consent_source:
        raise InvalidInput("Say where these people agreed to hear from us (for the consent record).",
                           "consent_source")
    if len(consent_source) > 200:
        raise InvalidInput("Keep the consent source under 200 characters.", "consent_source")
    ids = sorted({int(n) for n in newsletter_ids})
    found = list(db.session.scalars(select(Newsletter.name).where(Newsletter.id.in_(ids)))) if ids else []
    if not ids or len(found) != len(ids):
        raise InvalidInput("Choose at least one newsletter to add these addresses to.", "newsletters")
    folder = upload_folder()
    folder.mkdir(parents=True, exist_ok=True)
    stored = f"import-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:12]}.csv"
    target = folder / stored
    with open(target, "wb") as out:
        shutil.copyfileobj(stream, out, COPY_BUFFER)
    size = target.stat().st_size
    if size == 0:
        target.unlink(missing_ok=True)
        raise InvalidInput("That file is empty.", "file")
    shown = Path(filename or "upload.csv").name[:255] or "upload.csv"
    job = SubscriberImport(
        staff_id=actor.staff_id, filename=shown, stored_name=stored, newsletter_ids=ids,
        consent_source=consent_source, already_confirmed=already_confirmed, bytes_total=size,
        status=ImportStatus.QUEUED, reasons={},
    )
    db.session.add(job)
    db.session.flush()
    audit.record(actor, AuditAction.SUBSCRIBERS_IMPORTED, f"import {job.id}",
                 f"{shown} ({size} bytes) into {', '.join(sorted(found))}; "
                 f"{'confirmed elsewhere' if already_confirmed else 'confirmation mail to each new address'}; "
                 f"consent: {consent_source}")
    db.session.commit()
    jobs.enqueue(jobs.IMPORT_SUBSCRIBERS, job.id)
    return job


def retry_import(import_id: int, actor: Actor) -> SubscriberImport:
    """Hand an import that failed or stalled back to a worker; it resumes after its last committed chunk."""
    job = db.session.get(SubscriberImport, import_id)
    if job is None:
        raise InvalidInput(f"No import {import_id}.", "import")
    if job.status == ImportStatus.DONE:
        raise InvalidInput("That import is finished.", "import")
    job.status, job.lease_until, job.error = ImportStatus.QUEUED, None, ""
    audit.record(actor, AuditAction.SUBSCRIBERS_IMPORTED, f"import {job.id}", "resumed by hand")
    db.session.commit()
    jobs.enqueue(jobs.IMPORT_SUBSCRIBERS, job.id)
    return job


def resume_stalled_imports(now: dt.datetime | None = None) -> list[int]:
    """Hand back to a worker every import whose run died (its lease ran out) or whose task was lost; for the tick."""
    now = now or utcnow()
    stalled = list(db.session.scalars(
        select(SubscriberImport.id).where(
            SubscriberImport.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING)),
            or_(SubscriberImport.lease_until < now,
                (SubscriberImport.lease_until.is_(None)) & (SubscriberImport.created_at < now - LEASE)),
        ).order_by(SubscriberImport.id)
    ))
    db.session.commit()
    for import_id in stalled:
        jobs.enqueue(jobs.IMPORT_SUBSCRIBERS, import_id)
    return stalled


def list_imports(limit: int = 50) -> list[SubscriberImport]:
    return list(db.session.scalars(select(SubscriberImport).order_by(SubscriberImport.id.desc()).limit(limit)))


# --- Reading the file (the worker) --------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A binary reader that counts the bytes read, for the progress bar."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _columns(first: list[str]) -> tuple[int, int | None, bool]:
    """(email column, name column, whether the first row is a header)."""
    names = [c.strip().lower() for c in first]
    email = next((i for i, c in enumerate(names) if c in EMAIL_HEADERS), None)
    if email is not None:
        name = next((i for i, c in enumerate(names) if c in NAME_HEADERS), None)
        return email, name, True
    # No header: the first column that holds an address is the email, the next one the name.
    email = next((i for i, c in enumerate(first) if "@" in c), 0)
    return email, (email + 1 if len(first) > email + 1 else None), False


def _text(raw: BinaryIO) -> io.TextIOWrapper:
    # utf-8-sig drops the byte-order mark spreadsheet programs write; a bad byte becomes U+FFFD and its
    # address is then rejected, instead of the whole file failing.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _rows(path: Path, counter_holder: list) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, email, name) for every data row; the byte counter goes into counter_holder."""
    with _text(open(path, "rb")) as head:  # noqa: SIM115 - the wrapper closes it
        dialect = _dialect(head.read(8192))
    counting = _Counting(open(path, "rb"))  # noqa: SIM115 - closed with the wrapper around it
    counter_holder.append(counting)
    with _text(io.BufferedReader(counting, 64 * 1024)) as text:
        reader = csv.reader(text, dialect)
        first = next(reader, None)
        if first is None:
            return
        email_col, name_col, header = _columns(first)
        if not header:
            yield reader.line_num, _cell(first, email_col), _cell(first, name_col)
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            yield reader.line_num, _cell(row, email_col), _cell(row, name_col)


def _cell(row: list[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index][:1000]


def _claim(import_id: int, now: dt.datetime) -> SubscriberImport | None:
    result = db.session.execute(
        update(SubscriberImport)
        .where(SubscriberImport.id == import_id,
               SubscriberImport.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING)),
               or_(SubscriberImport.lease_until.is_(None), SubscriberImport.lease_until < now))
        .values(status=ImportStatus.RUNNING, lease_until=now + LEASE)
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    job = db.session.get(SubscriberImport, import_id, populate_existing=True)
    if job.started_at is None:
        job.started_at = now
        db.session.commit()
    return job


def run_import(import_id: int, chunk_rows: int = CHUNK_ROWS) -> ImportStatus | None:
    """Read an import's file in chunks, committing each with the counters; None if another run holds it."""
    job = _claim(import_id, utcnow())
    if job is None:
        return None
    path = upload_folder() / job.stored_name
    report_path = upload_folder() / job.report_name
    try:
        with open(report_path, "a+b") as report_file:
            # What an interrupted chunk wrote was never committed: cut it off.
            report_file.truncate(job.report_bytes)
            report_file.seek(job.report_bytes)
            report = io.TextIOWrapper(report_file, encoding="utf-8", newline="")
            writer = csv.writer(report)
            if job.report_bytes == 0:
                writer.writerow(["line", "email", "outcome", "reason"])
            _read(job, path, writer, report, chunk_rows)
    except Exception as exc:  # noqa: BLE001 - recorded for staff; the chunks committed so far stay
        db.session.rollback()
        log.exception("import %s failed", import_id)
        job = db.session.get(SubscriberImport, import_id, populate_existing=True)
        job.status, job.error, job.lease_until = ImportStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000], None
        db.session.commit()
        return job.status
    return ImportStatus.DONE


def _read(job: SubscriberImport, path: Path, writer, report: io.TextIOWrapper, chunk_rows: int) -> None:
    holder: list[_Counting] = []
    skip = job.rows_done
    chunk: list[tuple[int, str, str]] = []
    with contextlib.closing(_rows(path, holder)) as rows:
        for seen, row in enumerate(rows, start=1):
            if seen <= skip:
                continue  # committed by an earlier run
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                _commit_chunk(job, chunk, writer, report, holder[0].count)
                chunk = []
    _commit_chunk(job, chunk, writer, report, job.bytes_total, last=True)


def _commit_chunk(job: SubscriberImport, rows: list[tuple[int, str, str]], writer, report: io.TextIOWrapper,
                  bytes_done: int, last: bool = False) -> None:
    now = utcnow()
    result = _process(job, rows, now) if rows else Chunk()
    for line, email, outcome, reason in sorted(result.report):
        writer.writerow([line, safe_cell(email), outcome, reason])
    report.flush()
    reasons = {"skipped": Counter(job.reasons.get("skipped", {})), "rejected": Counter(job.reasons.get("rejected", {}))}
    reasons["skipped"].update(result.skipped)
    reasons["rejected"].update(result.rejected)
    job.reasons = {k: dict(v) for k, v in reasons.items()}
    job.added += result.added
    job.skipped += sum(result.skipped.values())
    job.rejected += sum(result.rejected.values())
    job.rows_done += len(rows)
    job.bytes_done = min(bytes_done, job.bytes_total)
    job.report_bytes = report.buffer.tell()
    job.lease_until = now + LEASE
    if last:
        job.status, job.finished_at, job.lease_until, job.bytes_done = ImportStatus.DONE, now, None, job.bytes_total
    db.session.commit()
    for job_id in result.mail_job_ids:
        jobs.enqueue(jobs.SEND_MAIL, job_id)


def _insert(model):
    dialect = db.session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def _insert_rows(model, rows: list[dict], conflict: list[str] | None = None) -> None:
    """INSERT many rows as one executemany (psycopg pipelines it: one parsed statement, no round trip per row);
    skip rows that hit the unique `conflict` columns."""
    if not rows:
        return
    statement = _insert(model)
    if conflict:
        statement = statement.on_conflict_do_nothing(index_elements=conflict)
    db.session.execute(statement, rows)


def _process(job: SubscriberImport, rows: list[tuple[int, str, str]], now: dt.datetime) -> Chunk:
    """Add one chunk's rows: new subscribers, subscriptions, consent records and confirmation mails, in bulk."""
    result = Chunk()
    parsed: dict[str, tuple[int, str, str, str]] = {}  # key -> (line, email, name, raw)
    for line, raw_email, raw_name in rows:
        if not raw_email.strip():
            result.reject(line, raw_email, REJECT_EMPTY)
            continue
        try:
            address = normalize_email(raw_email)
        except InvalidInput:
            result.reject(line, raw_email, REJECT_INVALID)
            continue
        if address.key in parsed:
            result.skip(line, raw_email, SKIP_REPEATED)
            continue
        try:
            name = clean_name(raw_name)
        except InvalidInput:
            name = ""  # a bad name never costs a reader their subscription
        parsed[address.key] = (line, address.email, name, raw_email)
    if not parsed:
        return result
    hashes = {email_hash(key): key for key in parsed}
    suppressed = {hashes[h] for h in db.session.scalars(
        select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes))))}
    existing = {s.email_key: s for s in db.session.scalars(
        select(Subscriber).where(Subscriber.email_key.in_(list(parsed))))}
    wanted = job.newsletter_ids
    confirmed = job.already_confirmed
    new_people: list[dict] = []
    joins: list[tuple[str, list[int]]] = []  # (key, newsletter ids) to subscribe
    for key, (line, email, name, raw) in parsed.items():
        if key in suppressed:
            result.skip(line, raw, SKIP_SUPPRESSED)
            continue
        person = existing.get(key)
        if person is None:
            new_people.append({
                "email": email, "email_key": key, "name": name, "created_at": now,
                "confirmed_at": now if confirmed else None,
                "confirm_window_start": None if confirmed else now, "confirm_window_count": 0 if confirmed else 1,
            })
            joins.append((key, list(wanted)))
            continue
        statuses = {s.newsletter_id: s.status for s in person.subscriptions}
        if SubscriptionStatus.UNSUBSCRIBED in statuses.values():
            result.skip(line, raw, SKIP_UNSUBSCRIBED)
            continue
        missing = [n for n in wanted if n not in statuses]
        if not missing:
            subscribed = any(statuses.get(n) == SubscriptionStatus.SUBSCRIBED for n in wanted)
            result.skip(line, raw, SKIP_SUBSCRIBED if subscribed else SKIP_PENDING)
            continue
        if confirmed and person.confirmed_at is None:
            person.confirmed_at = now
        joins.append((key, missing))
    ids = {key: person.id for key, person in existing.items()}
    if new_people:
        # A row someone signed up with through the form while this chunk ran is skipped here and
        # found by the SELECT below: it gets the subscription all the same.
        _insert_rows(Subscriber, new_people, ["email_key"])
        keys = [p["email_key"] for p in new_people]
        ids.update(dict(db.session.execute(
            select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(keys))).all()))
    status = SubscriptionStatus.SUBSCRIBED if confirmed else SubscriptionStatus.PENDING
    source = f"import {job.id}: {job.consent_source}"[:255]
    subscriptions, consents = [], []
    for key, newsletter_ids in joins:
        sid = ids[key]
        for nid in newsletter_ids:
            subscriptions.append({"subscriber_id": sid, "newsletter_id": nid, "status": status, "created_at": now,
                                  "requested_at": now, "confirmed_at": now if confirmed else None})
            consents.append({"subscriber_id": sid, "newsletter_id": nid, "kind": ConsentKind.SIGNUP, "at": now,
                             "source": source, "ip": "", "user_agent": "", "text_version": "", "channel": ""})
            if confirmed:
                consents.append({"subscriber_id": sid, "newsletter_id": nid, "kind": ConsentKind.CONFIRM, "at": now,
                                 "source": source, "ip": "", "user_agent": "", "text_version": "", "channel": ""})
        if not confirmed:
            result.mail_job_ids.append(sid)  # replaced by the mail job's id below
        result.added += 1
    if subscriptions:
        _insert_rows(Subscription, subscriptions, ["subscriber_id", "newsletter_id"])
        _insert_rows(ConsentEvent, consents)
    if not confirmed and result.mail_job_ids:
        wanted_by = {ids[key]: sorted(nids) for key, nids in joins}
        mail_jobs = [queue_mail("confirm", sid, {"newsletters": wanted_by[sid]}) for sid in result.mail_job_ids]
        db.session.flush()
        result.mail_job_ids = [j.id for j in mail_jobs]
    return result
