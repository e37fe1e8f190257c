"""The console in a real browser (Debian's chromium) against the running app, a real worker and a real SMTP server."""

from __future__ import annotations

import re

import pytest
import redis
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import Edition, EditionStatus, Schedule, StaffRole
from newsletter.staff import editorial
from newsletter.staff.audit import CLI
from tests.conftest import REDIS_URL, herald_env
from tests.staff_support import (
    add_article,
    add_subscriber,
    browser_sign_in,
    console_page,
    make_staff,
    serious_violations,
)
from tests.support import SMTPServer, start_worker

pytestmark = pytest.mark.browser

READERS = 40


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def worker(app, smtp, tmp_path):
    redis.Redis.from_url(REDIS_URL).flushdb()
    proc = start_worker(herald_env(MAIL_URL=smtp.url), tmp_path, name="console-worker")
    yield proc
    proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


def _draft(daily_id: int) -> Edition:
    add_article("Russia strikes Kyiv's energy grid overnight", hours_ago=1)
    add_article("Inside the front line near Pokrovsk", hours_ago=2, members_only=True)
    schedule = editorial.create_schedule(CLI, daily_id, days="daily", at="07:00", timezone="Europe/Kyiv")
    return editorial.draft_next_edition(schedule.id, CLI)


@pytest.mark.worker
def test_an_editor_schedules_previews_and_sends_an_edition_and_watches_it_reach_the_end(
        app, live_server, newsletters, worker, smtp):
    daily = newsletters[0]
    smtp.clear()
    for i in range(READERS):
        add_subscriber(f"reader{i}@example.org", [daily.id], name=f"Читач {i}")
    add_article("Russia strikes Kyiv's energy grid overnight", hours_ago=1)
    add_article("Inside the front line near Pokrovsk", hours_ago=2, members_only=True)
    make_staff(StaffRole.EDITOR, email="editor@herald-news.example.org", name="Olena Editor")

    with console_page() as page:
        browser_sign_in(page, live_server, "editor@herald-news.example.org")
        page.get_by_role("heading", name="Dashboard").wait_for()

        # A 07:00 Europe/Kyiv schedule, its next runs seen before saving.
        page.get_by_role("link", name="Newsletters & schedules").click()
        page.get_by_role("region", name="Daily digest").get_by_role("link", name="Add a schedule").click()
        page.locator("#time").fill("07:00")
        assert page.get_by_label("Time zone").input_value() == "Europe/Kyiv"
        page.get_by_role("button", name="Preview times").click()
        runs = page.locator("#next-runs li strong").all_inner_texts()
        assert len(runs) == 5 and all(r.endswith("07:00 EET") or r.endswith("07:00 EEST") for r in runs)
        page.get_by_role("button", name="Save schedule").click()
        page.get_by_text("Schedule saved: daily 07:00 Europe/Kyiv").wait_for()

        # Preview the next edition as a non-member and as a member, then send it now.
        page.get_by_role("link", name="Editions").click()
        page.get_by_role("button", name="Draft it now").first.click()
        page.get_by_role("heading", name=re.compile("Preview")).wait_for()
        frame = page.frame_locator("iframe.preview")
        frame.get_by_text("Russia strikes Kyiv's energy grid overnight").first.wait_for()
        assert "Become a member" in frame.locator("body").inner_text()
        page.get_by_role("link", name="Member · HTML", exact=True).click()
        assert "Become a member" not in page.frame_locator("iframe.preview").locator("body").inner_text()
        page.get_by_role("link", name="Send now…").click()
        assert page.locator("#recipients").inner_text() == str(READERS)
        page.get_by_role("button", name=re.compile("Yes, send")).click()

        # The progress bar (the page refreshes itself while sending) reaches the end.
        page.get_by_role("heading", name="Delivery progress").wait_for()
        page.get_by_text("Finished: every delivery of this edition is handled.").wait_for(timeout=60_000)
        bar = page.locator("#send-progress")
        assert bar.get_attribute("value") == bar.get_attribute("max") == str(READERS)
        page.screenshot(path=str(worker.log_path.parent / "progress.png"))

    received = smtp.wait_for(READERS)
    assert sorted(m.recipients[0] for m in received) == sorted(f"reader{i}@example.org" for i in range(READERS))
    edition = db.session.scalars(select(Edition).where(Edition.status == EditionStatus.SENT)).one()
    assert edition.newsletter_id == daily.id
    schedule = db.session.scalars(select(Schedule)).one()
    assert schedule.next_run_at is not None


def test_a_viewer_has_no_send_control_and_a_forged_send_is_refused(app, live_server, newsletters):
    draft = _draft(newsletters[0].id)
    make_staff(StaffRole.VIEWER, email="viewer@herald-news.example.org")
    with console_page() as page:
        browser_sign_in(page, live_server, "viewer@herald-news.example.org")
        page.goto(f"{live_server}/staff/editions/{draft.id}")
        page.get_by_role("heading", name=re.compile("Preview")).wait_for()
        assert page.get_by_role("link", name="Send now…").count() == 0
        assert page.get_by_role("button", name=re.compile("Send")).count() == 0
        token = page.locator("input[name=csrf_token]").first.get_attribute("value")
        # The viewer's own session and a valid CSRF token: only the role stands in the way.
        forged = page.request.post(f"{live_server}/staff/editions/{draft.id}/send", form={"csrf_token": token},
                                   max_redirects=0)
        assert forged.status == 403
        assert page.request.get(f"{live_server}/staff/editions/{draft.id}/send", max_redirects=0).status == 403
    assert db.session.get(Edition, draft.id, populate_existing=True).status == EditionStatus.DRAFT


def test_five_wrong_passwords_slow_further_tries_even_with_the_right_one(app, live_server):
    make_staff(StaffRole.EDITOR, email="editor@herald-news.example.org")
    with console_page() as page:
        for attempt in range(1, 6):
            browser_sign_in(page, live_server, "editor@herald-news.example.org", f"wrong password {attempt}")
            expected = "Too many failed sign-ins" if attempt == 5 else "don't match an account"
            page.get_by_role("alert").get_by_text(expected).wait_for()
        browser_sign_in(page, live_server, "editor@herald-news.example.org")
        page.get_by_role("alert").get_by_text("Too many failed sign-ins. Try again in 15 minutes.").wait_for()
        assert page.url.endswith("/staff/sign-in")
        page.goto(f"{live_server}/staff/")
        assert "/staff/sign-in" in page.url


def test_the_console_and_the_signup_page_have_no_serious_accessibility_violations(app, live_server, newsletters):
    draft = _draft(newsletters[0].id)
    for i in range(5):
        add_subscriber(f"reader{i}@example.org", [newsletters[0].id], days_ago=i * 3)
    make_staff(StaffRole.ADMIN, email="admin@herald-news.example.org")
    pages = {
        "signup": "/subscribe",
        "dashboard": "/staff/",
        "subscribers": "/staff/subscribers",
        "schedule form": f"/staff/schedules/new?newsletter={newsletters[0].id}",
        "edition preview": f"/staff/editions/{draft.id}",
        "edition text preview": f"/staff/editions/{draft.id}?audience=member&format=text",
    }
    found = {}
    with console_page(bypass_csp=True) as page:
        browser_sign_in(page, live_server, "admin@herald-news.example.org")
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for name, path in pages.items():
                page.goto(f"{live_server}{path}")
                violations = serious_violations(page)
                if violations:
                    found[f"{name} ({scheme})"] = violations
    assert found == {}
