"""A 100,000-row CSV imported through the console by a real web process and a real worker, in flat memory."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select

from newsletter import subscribers
from newsletter.extensions import db
from newsletter.models import ImportStatus, StaffRole, Subscriber, SubscriberImport, Subscription
from newsletter.staff import imports
from tests.conftest import REDIS_URL, herald_env
from tests.staff_support import PASSWORD, add_subscriber, make_staff
from tests.support import csrf_from, free_port, start_web, start_worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow]

ROWS = 100_000
MAX_GROWTH_KB = 50 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> None:
    # Resets VmHWM to the current RSS (Linux 4.0+), so the peak read later is the import's own, not the
    # sign-in's argon2 hash (64 MiB by design) or the start-up's.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _write(path: Path) -> dict[str, int]:
    """The file: mostly new readers, with every kind of row an import must refuse, spread through it."""
    expected = {"added": 0, "unsubscribed": 0, "subscribed": 0, "suppressed": 0, "repeated": 0, "invalid": 0,
                "empty": 0}
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Email Address", "First Name", "Signed up"])
        for i in range(ROWS):
            if i % 1000 == 1:
                writer.writerow([f"reader{i - 1}@example.org", "Again", "2024"])  # same chunk as its twin
                expected["repeated"] += 1
            elif i % 1000 == 2:
                writer.writerow([f"left{i // 1000}@example.org", "", ""])
                expected["unsubscribed"] += 1
            elif i % 1000 == 3:
                writer.writerow([f"on{i // 1000}@example.org", "", ""])
                expected["subscribed"] += 1
            elif i % 1000 == 4:
                writer.writerow([f"Bounced{i // 1000}@Example.org", "", ""])
                expected["suppressed"] += 1
            elif i % 1000 == 5:
                writer.writerow([f"not an address {i}", "", ""])
                expected["invalid"] += 1
            elif i % 1000 == 6:
                writer.writerow(["", "No address", ""])
                expected["empty"] += 1
            else:
                writer.writerow([f"reader{i}@example.org", f"Читач {i}", "2023-05-01"])
                expected["added"] += 1
    return expected


def test_a_100k_row_import_through_the_console_keeps_web_and_worker_memory_flat(app, newsletters, tmp_path):
    daily, _ = newsletters
    for k in range(ROWS // 1000):
        add_subscriber(f"left{k}@example.org", [daily.id], status="unsubscribed")
        add_subscriber(f"on{k}@example.org", [daily.id])
        subscribers.suppress(f"bounced{k}@example.org", "hard_bounce")
    make_staff(StaffRole.EDITOR, email="editor@herald-news.example.org")
    source = tmp_path / "readers.csv"
    expected = _write(source)

    redis.Redis.from_url(REDIS_URL).flushdb()
    env = herald_env(UPLOAD_FOLDER=str(tmp_path / "uploads"), MAIL_URL="memory:")
    worker = start_worker(env, tmp_path, name="import-worker")
    port = free_port()
    web = start_web(env, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        http = requests.Session()
        page = http.get(f"{base}/staff/sign-in")
        signed = http.post(f"{base}/staff/sign-in", data={"csrf_token": csrf_from(page.text),
                                                          "email": "editor@herald-news.example.org",
                                                          "password": PASSWORD}, allow_redirects=False)
        assert signed.status_code == 303
        form = http.get(f"{base}/staff/imports")  # warms the web process up before the first reading
        for pid in (web.proc.pid, worker.proc.pid):
            _reset_peak(pid)
        web_before, worker_before = _status_kb(web.proc.pid, "VmRSS"), _status_kb(worker.proc.pid, "VmRSS")

        started = time.monotonic()
        with open(source, "rb") as upload:
            response = http.post(f"{base}/staff/imports", allow_redirects=False, files={
                "file": ("readers.csv", upload, "text/csv")}, data={
                "csrf_token": csrf_from(form.text), "newsletters": [str(daily.id)],
                "consent_source": "Mailchimp list 'Morning briefing', 2019-2026", "already_confirmed": "yes"})
        assert response.status_code == 303, response.text[:2000]

        def finished():
            db.session.expire_all()
            job = db.session.scalars(select(SubscriberImport)).one()
            return job if job.status in (ImportStatus.DONE, ImportStatus.FAILED) else None

        job = wait_until(finished, timeout=55, interval=0.5, message="the import to finish")
        elapsed = time.monotonic() - started
        report_page = http.get(f"{base}{response.headers['Location']}")
    finally:
        web_after = {f: _status_kb(web.proc.pid, f) for f in ("VmRSS", "VmHWM")} if web.alive() else {}
        worker_after = {f: _status_kb(worker.proc.pid, f) for f in ("VmRSS", "VmHWM")} if worker.alive() else {}
        web.stop()
        worker.stop()
    assert job.status == ImportStatus.DONE, job.error + worker.output()[-3000:]

    print(f"\n100k import: {elapsed:.1f} s; web VmRSS {web_before} -> {web_after['VmRSS']} kB "
          f"(peak {web_after['VmHWM']}); worker VmRSS {worker_before} -> {worker_after['VmRSS']} kB "
          f"(peak {worker_after['VmHWM']})")
    # The peak (VmHWM) during the import, not just the end state: nothing ever held the file.
    assert web_after["VmHWM"] - web_before < MAX_GROWTH_KB
    assert worker_after["VmHWM"] - worker_before < MAX_GROWTH_KB

    assert (job.added, job.rows_done) == (expected["added"], ROWS)
    assert job.reasons == {
        "skipped": {imports.SKIP_REPEATED: expected["repeated"], imports.SKIP_UNSUBSCRIBED: expected["unsubscribed"],
                    imports.SKIP_SUBSCRIBED: expected["subscribed"], imports.SKIP_SUPPRESSED: expected["suppressed"]},
        "rejected": {imports.REJECT_INVALID: expected["invalid"], imports.REJECT_EMPTY: expected["empty"]},
    }
    assert job.skipped == 400 and job.rejected == 200
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == expected["added"] + 2 * (ROWS // 1000)
    assert db.session.scalar(select(func.count()).select_from(Subscription)
                             .where(Subscription.newsletter_id == daily.id)) == expected["added"] + 2 * (ROWS // 1000)
    assert "99" in report_page.text and imports.SKIP_UNSUBSCRIBED in report_page.text
    assert elapsed < 55
