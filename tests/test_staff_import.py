"""CSV imports: uploaded through the console, read in committed chunks, never re-adding those who left."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter import jobs, subscribers
from newsletter.extensions import db
from newsletter.models import (
    ConsentEvent,
    ConsentKind,
    ImportStatus,
    MailJob,
    StaffRole,
    Subscriber,
    SubscriberImport,
    Subscription,
    SubscriptionStatus,
)
from newsletter.staff import imports
from newsletter.staff.audit import CLI
from tests.staff_support import add_subscriber, signed_in, token


@pytest.fixture(autouse=True)
def uploads(app, tmp_path, monkeypatch):
    monkeypatch.setattr(app.config["HERALD"], "UPLOAD_FOLDER", str(tmp_path / "uploads"))
    return tmp_path / "uploads"


@pytest.fixture
def enqueued(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **options: calls.append((name, *args)) or True)
    return calls


def _start(data: bytes, newsletter_ids: list[int], *, confirmed: bool = False, name: str = "list.csv"):
    return imports.start_import(io.BytesIO(data), name, newsletter_ids, "Mailchimp list, 2019-2026", confirmed, CLI)


def _report(job: SubscriberImport) -> list[dict]:
    path = imports.upload_folder() / job.report_name
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_an_import_adds_new_addresses_as_pending_and_asks_each_to_confirm_by_the_normal_mail(app, newsletters,
                                                                                            enqueued):
    daily, weekly = newsletters
    data = "Email,Name\nolena@example.org,Олена\nTARAS@Example.org,Taras\n".encode()
    job = _start(data, [daily.id, weekly.id])
    assert enqueued == [(jobs.IMPORT_SUBSCRIBERS, job.id)]
    assert imports.run_import(job.id) == ImportStatus.DONE
    job = db.session.get(SubscriberImport, job.id, populate_existing=True)
    assert (job.status, job.added, job.skipped, job.rejected, job.rows_done) == (ImportStatus.DONE, 2, 0, 0, 2)
    assert job.bytes_done == job.bytes_total == len(data)
    people = {s.email: s for s in db.session.scalars(select(Subscriber))}
    assert set(people) == {"olena@example.org", "TARAS@example.org"}
    assert people["olena@example.org"].name == "Олена" and people["olena@example.org"].confirmed_at is None
    assert {s.status for p in people.values() for s in p.subscriptions} == {SubscriptionStatus.PENDING}
    consents = list(db.session.scalars(select(ConsentEvent)))
    assert len(consents) == 4 and {c.kind for c in consents} == {ConsentKind.SIGNUP}
    assert {c.source for c in consents} == {f"import {job.id}: Mailchimp list, 2019-2026"}
    mails = list(db.session.scalars(select(MailJob).order_by(MailJob.id)))
    assert [m.kind for m in mails] == ["confirm", "confirm"]
    assert mails[0].params == {"newsletters": sorted([daily.id, weekly.id])}
    assert [c for c in enqueued if c[0] == jobs.SEND_MAIL] == [(jobs.SEND_MAIL, m.id) for m in mails]


def test_rows_confirmed_elsewhere_are_subscribed_at_once_without_mail(app, newsletters, enqueued):
    daily, _ = newsletters
    job = _start(b"email\nolena@example.org\n", [daily.id], confirmed=True)
    imports.run_import(job.id)
    person = db.session.scalars(select(Subscriber)).one()
    assert person.confirmed_at is not None
    assert [s.status for s in person.subscriptions] == [SubscriptionStatus.SUBSCRIBED]
    assert sorted(c.kind for c in db.session.scalars(select(ConsentEvent))) == [ConsentKind.CONFIRM, ConsentKind.SIGNUP]
    assert db.session.scalar(select(func.count()).select_from(MailJob)) == 0
    assert person.id in set(db.session.scalars(subscribers.recipients_query(daily.id)))


def test_an_import_never_re_adds_the_unsubscribed_or_the_suppressed_and_says_why_for_every_row(app, newsletters,
                                                                                              enqueued):
    daily, weekly = newsletters
    add_subscriber("left@example.org", [weekly.id], status="unsubscribed")
    add_subscriber("already@example.org", [daily.id])
    add_subscriber("waiting@example.org", [daily.id], status="pending")
    subscribers.suppress("bounced@example.org", "hard_bounce")
    rows = [
        "email;name",
        "new@example.org;New Reader",
        "left@example.org;Came back?",
        "already@example.org;",
        "waiting@example.org;",
        "BOUNCED@example.org;",
        "not an address;",
        ";Nameless",
        "new@example.org;Twice",
        "=cmd@evil;x",
    ]
    job = _start(("\ufeff" + "\r\n".join(rows) + "\r\n").encode(), [daily.id], confirmed=True)
    imports.run_import(job.id)
    job = db.session.get(SubscriberImport, job.id, populate_existing=True)
    assert (job.added, job.skipped, job.rejected) == (1, 5, 3)
    assert job.reasons == {
        "skipped": {imports.SKIP_UNSUBSCRIBED: 1, imports.SKIP_SUBSCRIBED: 1, imports.SKIP_PENDING: 1,
                    imports.SKIP_SUPPRESSED: 1, imports.SKIP_REPEATED: 1},
        "rejected": {imports.REJECT_INVALID: 2, imports.REJECT_EMPTY: 1},
    }
    left = db.session.scalar(select(Subscriber).where(Subscriber.email_key == "left@example.org"))
    assert [(s.newsletter_id, s.status) for s in left.subscriptions] == [(weekly.id, SubscriptionStatus.UNSUBSCRIBED)]
    assert db.session.scalar(select(Subscriber).where(Subscriber.email_key == "bounced@example.org")) is None
    report = _report(job)
    assert [(r["line"], r["outcome"]) for r in report] == [
        ("3", "skipped"), ("4", "skipped"), ("5", "skipped"), ("6", "skipped"), ("7", "rejected"), ("8", "rejected"),
        ("9", "skipped"), ("10", "rejected")]
    assert report[-1]["email"] == "'=cmd@evil"  # the report is safe to open in a spreadsheet too


def test_a_file_without_a_header_takes_the_address_column_and_the_next_as_the_name(app, newsletters, enqueued):
    daily, _ = newsletters
    job = _start(b"olena@example.org,Olena\ntaras@example.org,Taras\n", [daily.id], confirmed=True)
    imports.run_import(job.id)
    assert sorted(db.session.scalars(select(Subscriber.name))) == ["Olena", "Taras"]


def test_a_big_file_is_committed_chunk_by_chunk_and_a_run_cut_short_resumes_after_the_last_chunk(
        app, newsletters, enqueued, monkeypatch):
    daily, _ = newsletters
    lines = ["email"] + [f"reader{i}@example.org" for i in range(25)] + ["broken"]
    job = _start(("\n".join(lines) + "\n").encode(), [daily.id], confirmed=True)
    real = imports._process
    calls = {"n": 0}

    def dies_on_the_third_chunk(job_row, rows, now):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("the database went away")
        return real(job_row, rows, now)

    monkeypatch.setattr(imports, "_process", dies_on_the_third_chunk)
    assert imports.run_import(job.id, chunk_rows=10) == ImportStatus.FAILED
    job = db.session.get(SubscriberImport, job.id, populate_existing=True)
    assert (job.status, job.rows_done, job.added) == (ImportStatus.FAILED, 20, 20)
    assert "the database went away" in job.error
    assert 0 < job.bytes_done <= job.bytes_total
    monkeypatch.setattr(imports, "_process", real)
    imports.retry_import(job.id, CLI)
    assert imports.run_import(job.id, chunk_rows=10) == ImportStatus.DONE
    job = db.session.get(SubscriberImport, job.id, populate_existing=True)
    assert (job.rows_done, job.added, job.rejected) == (26, 25, 1)
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 25
    assert [r["email"] for r in _report(job)] == ["broken"]  # written once, though two runs read the file


def test_a_run_finds_an_import_another_worker_holds_and_leaves_it(app, newsletters, enqueued):
    daily, _ = newsletters
    job = _start(b"email\nolena@example.org\n", [daily.id])
    assert imports._claim(job.id, imports.utcnow()) is not None
    assert imports.run_import(job.id) is None
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_the_console_upload_needs_a_consent_source_and_a_newsletter_and_shows_the_report(app, newsletters,
                                                                                        enqueued):
    daily, _ = newsletters
    editor = signed_in(app, StaffRole.EDITOR)

    def upload(**fields):
        data = {"csrf_token": token(editor), "already_confirmed": "no", **fields}
        data.setdefault("file", (io.BytesIO(b"email\nolena@example.org\nnope\n"), "readers.csv"))
        return editor.post("/staff/imports", data=data, content_type="multipart/form-data")

    missing_source = upload(newsletters=[str(daily.id)], consent_source="")
    assert missing_source.status_code == 400 and "Say where these people agreed" in missing_source.text
    missing_list = upload(consent_source="Old list")
    assert missing_list.status_code == 400 and "Choose at least one newsletter" in missing_list.text
    no_token = editor.post("/staff/imports", data={"newsletters": [str(daily.id)], "consent_source": "Old list",
                                                   "file": (io.BytesIO(b"email\n"), "x.csv")},
                           content_type="multipart/form-data")
    assert no_token.status_code == 400 and "form has expired" in no_token.text
    response = upload(newsletters=[str(daily.id)], consent_source="Old list")
    assert response.status_code == 303
    job = db.session.scalars(select(SubscriberImport)).one()
    assert job.filename == "readers.csv" and job.staff_id == editor.staff.id
    running = editor.get(response.headers["Location"])
    assert '<meta http-equiv="refresh" content="2">' in running.text and "<progress" in running.text
    imports.run_import(job.id)
    done = editor.get(response.headers["Location"])
    assert "http-equiv" not in done.text and imports.REJECT_INVALID in done.text
    report = editor.get(f"/staff/imports/{job.id}/report.csv")
    assert report.status_code == 200 and "nope,rejected" in report.text
    report.close()
    assert Path(imports.upload_folder() / job.stored_name).is_file()


def test_an_upload_larger_than_the_limit_is_refused(app, newsletters, enqueued, monkeypatch):
    monkeypatch.setattr(app.config["HERALD"], "IMPORT_MAX_BYTES", 1000)
    editor = signed_in(app, StaffRole.EDITOR)
    data = {"csrf_token": token(editor), "newsletters": [str(newsletters[0].id)], "consent_source": "Old list",
            "file": (io.BytesIO(b"email\n" + b"someone@example.org\n" * 200), "big.csv")}
    assert editor.post("/staff/imports", data=data, content_type="multipart/form-data").status_code == 413


def test_an_import_whose_worker_died_or_whose_task_was_lost_is_handed_back(app, newsletters, enqueued):
    daily, _ = newsletters
    died = _start(b"email\nolena@example.org\n", [daily.id])
    lost = _start(b"email\ntaras@example.org\n", [daily.id])
    fresh = _start(b"email\nmaria@example.org\n", [daily.id])
    imports._claim(died.id, imports.utcnow() - imports.LEASE * 2)  # its lease ran out long ago
    db.session.get(SubscriberImport, lost.id).created_at = imports.utcnow() - imports.LEASE * 2
    db.session.commit()
    enqueued.clear()
    assert sorted(imports.resume_stalled_imports()) == sorted([died.id, lost.id])
    assert enqueued == [(jobs.IMPORT_SUBSCRIBERS, i) for i in sorted([died.id, lost.id])] and fresh
