"""The reader's whole journey over HTTP, with a real Celery worker process and a real SMTP server."""

import pytest
import redis
import requests
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import MailJob, Subscriber, Suppression
from newsletter.subscribers import recipients_query
from tests.conftest import REDIS_URL, herald_env
from tests.support import SMTPServer, csrf_from, start_worker, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(app, smtp, tmp_path_factory):
    redis.Redis.from_url(REDIS_URL).flushdb()
    proc = start_worker(herald_env(MAIL_URL=smtp.url), tmp_path_factory.mktemp("worker"), beat=True)
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


@pytest.fixture(autouse=True)
def _fresh_smtp(smtp):
    smtp.clear()


def _post_form(http: requests.Session, url: str, **data) -> requests.Response:
    page = http.get(url)
    page.raise_for_status()
    return http.post(url, data={"csrf_token": csrf_from(page.text), **data}, allow_redirects=False)


def _link(received, kind: str) -> str:
    return next(link for link in received.links() if f"/{kind}/" in link)


def test_sign_up_confirm_welcome_preferences_and_one_click_unsubscribe(app, live_server, worker, smtp, newsletters):
    http = requests.Session()
    signup = _post_form(http, f"{live_server}/subscribe", email="Olena.Koval@Example.com", name="Олена Коваль",
                        newsletters=["daily", "war-weekly"], source="/subscribe")
    assert signup.status_code == 200
    assert "Check your inbox" in signup.text

    [confirmation] = smtp.wait_for(1)
    assert confirmation.recipients == ["Olena.Koval@example.com"]
    assert confirmation.message["To"].addresses[0].display_name == "Олена Коваль"
    assert "Daily digest" in confirmation.text and "Weekly: the war in Ukraine" in confirmation.text
    confirm_url = _link(confirmation, "confirm")
    assert confirm_url.startswith(live_server)
    assert "olena" not in confirm_url.lower()

    confirmed = _post_form(http, confirm_url)
    assert confirmed.status_code == 200
    assert "You're subscribed" in confirmed.text

    welcome = wait_until(lambda: [m for m in smtp.messages if "Welcome" in m.text], message="welcome mail")[0]
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert sorted(db.session.scalars(recipients_query(newsletters[0].id))) == [subscriber.id]

    preferences_url = _link(welcome, "preferences")
    saved = _post_form(http, preferences_url, name="Олена", newsletters=["daily"])
    assert saved.status_code == 200
    assert list(db.session.scalars(recipients_query(newsletters[1].id))) == []

    # The List-Unsubscribe URL the sending engine puts on every digest of this newsletter.
    unsubscribe_url = f"{live_server}/unsubscribe/" + app.extensions["herald_tokens"].unsubscribe(
        subscriber.id, newsletters[0].id)
    gmail = requests.post(unsubscribe_url, data="List-Unsubscribe=One-Click", allow_redirects=False,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert gmail.status_code == 200
    assert "Location" not in gmail.headers
    db.session.expire_all()
    assert list(db.session.scalars(recipients_query(newsletters[0].id))) == []
    assert len(smtp.messages) == 2  # the confirmation and the welcome, nothing else


def test_a_temporary_smtp_failure_is_retried_until_the_mail_goes(live_server, worker, smtp, newsletters):
    replies = iter(["451 4.3.0 Mailbox busy, try later", "421 4.7.0 Too busy"])
    smtp.handler.reply = lambda envelope: next(replies, None)
    http = requests.Session()
    _post_form(http, f"{live_server}/subscribe", email="retry@example.com", newsletters=["daily"])
    [received] = smtp.wait_for(1, timeout=40)
    assert received.recipients == ["retry@example.com"]
    job = db.session.scalars(select(MailJob)).one()
    db.session.refresh(job)
    assert (job.status, job.attempts) == ("sent", 3)


def test_a_mailbox_that_does_not_exist_is_suppressed(live_server, worker, smtp, newsletters):
    smtp.handler.reply = lambda envelope: "550 5.1.1 No such user"
    http = requests.Session()
    _post_form(http, f"{live_server}/subscribe", email="nobody@example.com", newsletters=["daily"])

    def failed():
        db.session.expire_all()
        job = db.session.scalars(select(MailJob)).one()
        return job.status == "failed" and job

    job = wait_until(failed, 20, message="the job to fail")
    assert job.attempts == 1
    suppression = db.session.scalars(select(Suppression)).one()
    assert (suppression.email_key, suppression.reason) == ("nobody@example.com", "hard_bounce")


def test_a_mail_whose_task_the_broker_lost_is_sent_by_the_tick(app, worker, smtp, newsletters):
    from newsletter import notifications
    from newsletter.subscribers import Context, signup

    # Sign up without enqueueing: exactly what a lost task message leaves behind.
    signup("lost@example.com", "", ["daily"], Context(source="/subscribe"))
    [received] = smtp.wait_for(1, timeout=30)
    assert received.recipients == ["lost@example.com"]
    assert notifications.due_mail_jobs(__import__("datetime").timedelta(0)) == []
