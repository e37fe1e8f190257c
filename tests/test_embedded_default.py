"""`make run`'s embedded default, end to end: SQLite, the filesystem broker, the outbox folder, real processes."""

import email
import email.policy
import re
import subprocess

import pytest
import requests

from tests.support import BIN, ROOT, csrf_from, free_port, start_web, start_worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _mails(outbox):
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(outbox.glob("*.eml"))]


def _text(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def test_signup_and_confirmation_on_sqlite_with_the_embedded_broker_and_outbox(tmp_path):
    port = free_port()
    outbox = tmp_path / "outbox"
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HERALD_ENV": "development",
        "BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'herald.sqlite3'}",
        "CELERY_BROKER_FOLDER": str(tmp_path / "broker"),
        "MAIL_URL": f"outbox:{outbox}",
        "TICK_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for command in (["init-db"], ["demo-data"]):
        subprocess.run([str(BIN / "flask"), "--app", "app", *command], env=env, check=True, capture_output=True,
                       cwd=ROOT)
    worker = start_worker(env, tmp_path, beat=True, pool="threads", concurrency=2)
    web = start_web(env, tmp_path, port)
    try:
        http = requests.Session()
        page = http.get(f"http://127.0.0.1:{port}/subscribe")
        assert "Daily digest" in page.text
        r = http.post(f"http://127.0.0.1:{port}/subscribe", data={
            "csrf_token": csrf_from(page.text), "email": "sqlite.reader@example.com", "name": "Тарас",
            "newsletters": ["daily"]})
        assert r.status_code == 200

        [confirmation] = wait_until(lambda: _mails(outbox) or None, 30, message="confirmation .eml")
        assert confirmation["X-Envelope-To"] == "sqlite.reader@example.com"
        link = re.search(r"http://\S+/confirm/\S+", _text(confirmation)).group(0)
        r = http.post(link, data={"csrf_token": csrf_from(http.get(link).text)})
        assert "You're subscribed" in r.text

        mails = wait_until(lambda: (m := _mails(outbox)) and len(m) >= 2 and m, 30, message="welcome .eml")
        assert "Thank you for confirming" in _text(mails[1])
        assert mails[1]["To"].addresses[0].display_name == "Тарас"
    finally:
        web.stop()
        worker.stop()
    assert "Traceback" not in worker.output(), worker.output()
    assert "Traceback" not in web.output(), web.output()
