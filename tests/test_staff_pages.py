"""The console's pages, in process: dashboard, subscribers, content, schedules, editions and memberships."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from sqlalchemy import func, select

from newsletter import jobs, mail
from newsletter.extensions import db
from newsletter.models import (
    ApiKey,
    Article,
    AuditEvent,
    ConsentEvent,
    Edition,
    EditionStatus,
    Feed,
    Newsletter,
    Schedule,
    StaffRole,
    Subscriber,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from newsletter.staff import editorial, exports, money, parts, stats
from newsletter.staff.audit import CLI
from newsletter.web.staff import charts
from tests.staff_support import add_article, add_subscriber, post, signed_in


@pytest.fixture
def daily(newsletters):
    return newsletters[0]


@pytest.fixture
def enqueued(monkeypatch):
    """Tasks the console or the engine enqueue, recorded instead of sent to the broker."""
    calls: list[tuple] = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **options: calls.append((name, *args)) or True)
    return calls


def _body(response) -> str:
    return response.get_data(as_text=True)


# --- Dashboard ----------------------------------------------------------------------------------


def test_the_dashboard_counts_subscribers_by_state_and_draws_their_history(app, daily):
    add_subscriber("confirmed@example.org", [daily.id], days_ago=10)
    add_subscriber("pending@example.org", [daily.id], status="pending", days_ago=2)
    add_subscriber("left@example.org", [daily.id], status="unsubscribed", days_ago=20, left_days_ago=5)
    counts = stats.audience_counts()
    assert (counts.confirmed, counts.pending, counts.unsubscribed) == (1, 1, 1)
    history = stats.audience_history(30)
    # Ten days ago both confirmed ones were on the list; twenty-one days ago, neither yet.
    assert [history.values["confirmed"][i] for i in (-1, -11, -12, -22)] == [1, 2, 1, 0]
    # The one who left counted as confirmed until they left, five days ago.
    assert history.values["unsubscribed"][-1] == 1 and history.values["unsubscribed"][-7] == 0
    assert history.values["pending"][-1] == 1 and history.values["pending"][-4] == 0

    page = signed_in(app, StaffRole.VIEWER).get("/staff/")
    text = _body(page)
    assert page.status_code == 200
    assert re.search(r'<svg viewBox="0 0 640 240" role="img" aria-labelledby="chart-subscribers-last-30-days-t', text)
    assert "<title id=\"chart-subscribers-last-30-days-t\">Subscribers, last 30 days</title>" in text
    assert "Show the figures as a table" in text  # the same figures, readable without the picture


def test_the_dashboard_says_plainly_when_there_is_no_membership_data(app, monkeypatch):
    monkeypatch.setattr(parts, "billing_ready", lambda: False)
    text = _body(signed_in(app, StaffRole.VIEWER).get("/staff/"))
    assert "No membership data yet" in text
    assert "MRR" not in text


def test_the_dashboard_flags_a_failing_feed_a_stuck_edition_and_a_bounce_spike(app, daily):
    db.session.add(Feed(url="https://feeds.example.org/broken.xml", name="Broken", failures=4,
                        last_error="HTTP 503"))
    db.session.add(Edition(newsletter_id=daily.id, run_at=utcnow() - dt.timedelta(hours=1),
                           status=EditionStatus.FROZEN))
    from newsletter import subscribers

    for i in range(12):
        subscribers.suppress(f"gone{i}@example.org", "hard_bounce", commit=False)
    db.session.commit()
    messages = [a.message for a in stats.attention()]
    assert any("Broken" in m and "4 times in a row" in m for m in messages)
    assert any("has not started sending" in m for m in messages)
    assert any("12 addresses bounced or complained" in m for m in messages)
    text = _body(signed_in(app, StaffRole.VIEWER).get("/staff/"))
    assert "Needs attention" in text and "HTTP 503" in text


def test_chart_axes_land_on_whole_numbers_for_counts():
    assert charts.nice_max(49) == 60 and charts.nice_max(3) == 4 and charts.nice_max(1234) == 1600
    chart = charts.Chart("Test <chart>", "A & B", ["1 Nov", "2 Nov"], [charts.Series("A", [1, 2])])
    svg = str(chart.svg())
    assert "<title id=\"chart-test-chart-t\">Test &lt;chart&gt;</title>" in svg and "A &amp; B" in svg


# --- Subscribers --------------------------------------------------------------------------------


def test_subscribers_are_found_by_address_name_status_and_newsletter(app, newsletters):
    daily, weekly = newsletters
    add_subscriber("olena.koval@example.org", [daily.id], name="Олена")
    add_subscriber("taras@example.org", [weekly.id], status="pending", name="Taras")
    add_subscriber("maria@example.org", [daily.id], status="unsubscribed")
    client = signed_in(app, StaffRole.VIEWER)

    def found(query: str) -> list[str]:
        return _listed(client.get(f"/staff/subscribers?{query}"))

    assert found("") == ["maria@example.org", "taras@example.org", "olena.koval@example.org"]
    assert found("q=Olena.Koval%40ex") == ["olena.koval@example.org"]
    assert found("q=%D0%BE%D0%BB%D0%B5%D0%BD%D0%B0") == ["olena.koval@example.org"]  # the name, in Cyrillic
    assert found("status=pending") == ["taras@example.org"]
    assert found(f"newsletter={daily.id}&status=unsubscribed") == ["maria@example.org"]
    assert found(f"newsletter={weekly.id}") == ["taras@example.org"]
    assert found("q=100%25") == []  # a LIKE wildcard is searched for, not obeyed


def _listed(response) -> list[str]:
    return re.findall(r'href="/staff/subscribers/\d+">([^<]+)</a>', _body(response))


def test_a_subscriber_page_shows_the_consent_record_subscriptions_and_deliveries(app, client, daily):
    from tests.helpers import signup

    signup(client, email="olena@example.org", name="Олена", newsletters=["daily"])
    person = db.session.scalars(select(Subscriber)).one()
    text = _body(signed_in(app, StaffRole.VIEWER).get(f"/staff/subscribers/{person.id}"))
    assert "Consent record" in text and "signup" in text and "/subscribe" in text and "127.0.0.1" in text
    assert "Daily digest" in text and "pending" in text
    assert "Deliveries" in text


def test_an_editor_unsubscribes_or_suppresses_a_reader_on_request_and_it_is_recorded(app, daily):
    sid = add_subscriber("olena@example.org", [daily.id])
    editor = signed_in(app, StaffRole.EDITOR)
    assert post(editor, f"/staff/subscribers/{sid}/unsubscribe").status_code == 303
    person = db.session.get(Subscriber, sid, populate_existing=True)
    assert [s.status for s in person.subscriptions] == [SubscriptionStatus.UNSUBSCRIBED]
    withdraw = db.session.scalar(select(ConsentEvent).where(ConsentEvent.kind == "withdraw"))
    assert withdraw.channel == "staff"
    assert post(editor, f"/staff/subscribers/{sid}/suppress", {"detail": "asked by phone"}).status_code == 303
    assert db.session.scalar(select(Suppression.detail)).startswith("asked by phone")
    actions = list(db.session.scalars(select(AuditEvent.action)))
    assert actions == ["subscriber_unsubscribed", "subscriber_suppressed"]


def test_the_csv_export_streams_every_match_and_defuses_spreadsheet_formulas(app, newsletters):
    daily, weekly = newsletters
    add_subscriber("formula@example.org", [daily.id], name="=HYPERLINK(\"http://evil\",\"x\")")
    add_subscriber("plus@example.org", [daily.id, weekly.id], name="+1 555")
    add_subscriber("at@example.org", [weekly.id], status="pending", name="@SUM(A1)")
    add_subscriber("dash@example.org", [daily.id], name="-2+3")
    editor = signed_in(app, StaffRole.EDITOR)
    response = editor.get(f"/staff/subscribers/export.csv?newsletter={daily.id}")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert [r["email"] for r in rows] == ["formula@example.org", "plus@example.org", "dash@example.org"]
    names = {r["email"]: r["name"] for r in rows}
    assert names == {"formula@example.org": "'=HYPERLINK(\"http://evil\",\"x\")", "plus@example.org": "'+1 555",
                     "dash@example.org": "'-2+3"}
    assert rows[1]["subscribed"] == "daily war-weekly"
    assert db.session.scalar(select(AuditEvent.action)) == "subscribers_exported"


def test_every_formula_start_is_quoted_and_nothing_else_is():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert exports.safe_cell(f"{start}cmd") == f"'{start}cmd"
    assert exports.safe_cell("Олена") == "Олена" and exports.safe_cell(None) == "" and exports.safe_cell(3) == "3"


def test_the_export_reads_rows_in_batches_not_all_at_once(app, daily, monkeypatch):
    for i in range(7):
        add_subscriber(f"reader{i}@example.org", [daily.id])
    monkeypatch.setattr(exports, "BATCH", 3)
    lines = list(exports.export_lines(exports.audience.SubscriberFilter()))
    assert len(lines) == 8 and lines[0].startswith("email,name")


# --- Articles, feeds, keys ----------------------------------------------------------------------


def test_an_editor_adds_an_article_by_hand_and_marks_another_members_only(app):
    other = add_article("Zelensky meets EU leaders")
    editor = signed_in(app, StaffRole.EDITOR)
    response = post(editor, "/staff/articles/new", {
        "title": "Inside the front line near Pokrovsk", "url": "https://news.example.org/pokrovsk?utm_source=x",
        "summary": "Reporting from the east.", "authors": "Olena Koval, Taras Shevchenko", "tags": "War, Donetsk",
        "published_at": "2026-11-20T08:30", "members_only": "yes"})
    assert response.status_code == 303
    article = db.session.scalar(select(Article).where(Article.title.like("Inside%")))
    assert article.url == "https://news.example.org/pokrovsk" and article.members_only
    assert article.authors == ["Olena Koval", "Taras Shevchenko"]
    assert article.published_at == dt.datetime(2026, 11, 20, 6, 30, tzinfo=dt.UTC)  # 08:30 in Kyiv
    assert post(editor, f"/staff/articles/{other}/members-only", {"members_only": "yes"}).status_code == 303
    assert db.session.get(Article, other, populate_existing=True).members_only
    listing = _body(editor.get("/staff/articles?members=yes"))
    assert "Zelensky meets EU leaders" in listing and "Inside the front line" in listing
    assert "Zelensky" not in _body(editor.get("/staff/articles?members=no"))
    bad = post(editor, "/staff/articles/new", {"title": "", "url": "https://news.example.org/x"})
    assert bad.status_code == 400 and "no title" in _body(bad)


def test_an_admin_adds_and_edits_a_feed_and_everyone_sees_its_last_error(app):
    admin = signed_in(app, StaffRole.ADMIN)
    assert post(admin, "/staff/feeds/new", {"url": "https://feeds.example.org/all.xml", "name": "All stories",
                                            "interval": "10"}).status_code == 303
    feed = db.session.scalars(select(Feed)).one()
    feed.last_error, feed.failures = "HTTP 500 from the server", 2
    db.session.commit()
    viewer = signed_in(app, StaffRole.VIEWER)
    assert "HTTP 500 from the server" in _body(viewer.get("/staff/feeds"))
    assert "HTTP 500 from the server" in _body(viewer.get(f"/staff/feeds/{feed.id}"))
    assert post(admin, f"/staff/feeds/{feed.id}", {"name": "Everything", "interval": "30", "active": "yes",
                                                   "members_only": "yes"}).status_code == 303
    feed = db.session.get(Feed, feed.id, populate_existing=True)
    assert (feed.name, feed.interval_minutes, feed.members_only) == ("Everything", 30, True)
    duplicate = post(admin, "/staff/feeds/new", {"url": "https://feeds.example.org/all.xml"})
    assert duplicate.status_code == 400 and "already there" in _body(duplicate)
    assert post(admin, f"/staff/feeds/{feed.id}/remove").status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Feed)) == 0


def test_an_api_key_is_shown_once_and_works_until_revoked(app, client):
    admin = signed_in(app, StaffRole.ADMIN)
    created = post(admin, "/staff/api-keys", {"name": "WordPress"})
    token = re.search(r'id="new-key">(hrld_[^<]+)<', _body(created)).group(1)
    key = db.session.scalars(select(ApiKey)).one()
    assert token not in _body(admin.get("/staff/api-keys")) and key.prefix in _body(admin.get("/staff/api-keys"))
    payload = {"title": "From the CMS", "url": "https://news.example.org/cms-story"}
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/articles", json=payload, headers=bearer).status_code == 201
    assert post(admin, f"/staff/api-keys/{key.id}/revoke").status_code == 303
    refused = client.post("/api/v1/articles", json=payload, headers=bearer)
    assert refused.status_code == 401


# --- Newsletters and schedules ------------------------------------------------------------------


def test_the_schedule_form_offers_every_zone_with_kyiv_first_and_previews_five_runs_without_saving(app, daily):
    editor = signed_in(app, StaffRole.EDITOR)
    form = _body(editor.get(f"/staff/schedules/new?newsletter={daily.id}"))
    zones = re.findall(r'<option value="([A-Za-z_/+-]+)"(?: selected)?>', form.split('id="timezone"')[1])
    assert zones[0] == "Europe/Kyiv" and "America/New_York" in zones and "Pacific/Apia" in zones and len(zones) > 300
    preview = post(editor, "/staff/schedules/new", {
        "newsletter": str(daily.id), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "time": "07:00",
        "timezone": "Europe/Kyiv", "article_limit": "10", "enabled": "yes", "action": "preview"})
    text = _body(preview)
    runs = re.findall(r"<li><strong>([^<]+)</strong>", text.split('id="next-runs"')[1])
    assert len(runs) == 5 and all(r.endswith("07:00 EET") for r in runs)
    assert db.session.scalar(select(func.count()).select_from(Schedule)) == 0  # nothing saved yet
    saved = post(editor, "/staff/schedules/new", {
        "newsletter": str(daily.id), "days": ["mon", "wed", "fri"], "time": "07:00", "timezone": "Europe/Kyiv",
        "article_limit": "8", "include_tags": "War, Politics", "enabled": "yes", "action": "save"})
    assert saved.status_code == 303
    schedule = db.session.scalars(select(Schedule)).one()
    assert (schedule.days, schedule.timezone, schedule.article_limit) == ("mon,wed,fri", "Europe/Kyiv", 8)
    assert schedule.include_tags == ["War", "Politics"]
    local = schedule.next_run_at.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert local.strftime("%H:%M") == "07:00" and local.strftime("%a") in {"Mon", "Wed", "Fri"}


def test_schedule_times_follow_summer_time_in_the_preview(app):
    runs = editorial.next_run_times("sun", "07:00", "Europe/Kyiv", count=2,
                                    after=dt.datetime(2026, 3, 20, tzinfo=dt.UTC))
    # 22 March is winter time (UTC+2), 29 March summer time (UTC+3): 07:00 both times on the wall clock.
    assert [r.strftime("%d %H:%M") for r in runs] == ["22 05:00", "29 04:00"]


def test_a_bad_schedule_is_shown_back_with_the_reason(app, daily):
    editor = signed_in(app, StaffRole.EDITOR)
    response = post(editor, "/staff/schedules/new", {"newsletter": str(daily.id), "time": "25:00",
                                                     "timezone": "Europe/Kyiv", "action": "preview"})
    assert response.status_code == 400 and "Choose at least one day" in _body(response)
    response = post(editor, "/staff/schedules/new", {"newsletter": str(daily.id), "days": ["mon"], "time": "07:00",
                                                     "timezone": "Mars/Olympus", "action": "save"})
    assert response.status_code == 400 and "not an IANA time zone" in _body(response)


def test_an_editor_changes_a_schedule_and_an_admin_creates_a_newsletter(app, daily):
    editor = signed_in(app, StaffRole.EDITOR)
    schedule = editorial.create_schedule(CLI, daily.id, days="daily", at="07:00", timezone="Europe/Kyiv")
    assert post(editor, f"/staff/schedules/{schedule.id}", {"days": ["sat"], "time": "09:30", "timezone": "UTC",
                                                            "article_limit": "5", "enabled": "yes"}).status_code == 303
    schedule = db.session.get(Schedule, schedule.id, populate_existing=True)
    assert (schedule.days, schedule.local_time.strftime("%H:%M"), schedule.timezone) == ("sat", "09:30", "UTC")
    admin = signed_in(app, StaffRole.ADMIN)
    created = post(admin, "/staff/newsletters/new", {"name": "Culture weekly", "slug": "culture",
                                                     "description": "Books, film, music.", "active": "yes"})
    assert created.status_code == 303
    made = db.session.scalar(select(Newsletter).where(Newsletter.slug == "culture"))
    assert made.list_id == "culture.list-id.127.0.0.1" and made.active
    clash = post(admin, "/staff/newsletters/new", {"name": "Again", "slug": "culture"})
    assert clash.status_code == 400 and "already has that short name" in _body(clash)


# --- Editions -----------------------------------------------------------------------------------


@pytest.fixture
def draft(daily):
    add_article("Russia strikes Kyiv's energy grid overnight", hours_ago=1)
    add_article("Inside the front line near Pokrovsk", hours_ago=2, members_only=True)
    schedule = editorial.create_schedule(CLI, daily.id, days="daily", at="07:00", timezone="Europe/Kyiv")
    return editorial.draft_next_edition(schedule.id, CLI)


def test_drafting_the_next_edition_early_is_the_edition_the_tick_would_make(app, daily, draft):
    assert draft.status == EditionStatus.DRAFT and len(draft.items) == 2
    schedule = db.session.scalars(select(Schedule)).one()
    assert draft.run_at == schedule.next_run_at
    again = editorial.draft_next_edition(schedule.id, CLI)
    assert again.id == draft.id
    from newsletter import schedules

    claimed = schedules.claim_due_editions(schedule.next_run_at - dt.timedelta(minutes=30))
    assert claimed.drafted == [] and db.session.scalar(select(func.count()).select_from(Edition)) == 1


def test_the_preview_shows_each_audience_in_a_sandboxed_frame_and_as_text(app, draft):
    viewer = signed_in(app, StaffRole.VIEWER)
    html = _body(viewer.get(f"/staff/editions/{draft.id}"))
    frame = re.search(r'<iframe class="preview"[^>]*>', html).group(0)
    assert 'sandbox=""' in frame and "srcdoc=" in frame
    assert "Become a member" in html  # the non-member copy invites readers to join
    member = _body(viewer.get(f"/staff/editions/{draft.id}?audience=member"))
    assert "Become a member" not in member and "the full story for members" in member
    text = _body(viewer.get(f"/staff/editions/{draft.id}?audience=member&format=text"))
    assert '<pre class="text-preview"' in text and "Inside the front line near Pokrovsk" in text
    assert "@@HERALD_" not in html + member + text
    assert "Send now" not in html  # a viewer gets no send control


def test_an_editor_changes_the_draft_articles_and_subject(app, draft):
    editor = signed_in(app, StaffRole.EDITOR)
    first, second = (item.article_id for item in draft.items)
    extra = add_article("Explainer: the new aid package", hours_ago=3)
    assert post(editor, f"/staff/editions/{draft.id}/articles", {"article_id": str(extra)}).status_code == 303
    assert post(editor, f"/staff/editions/{draft.id}/articles/{extra}/move", {"direction": "up"}).status_code == 303
    assert post(editor, f"/staff/editions/{draft.id}/articles/{first}/remove").status_code == 303
    assert post(editor, f"/staff/editions/{draft.id}/subject", {"subject": "Kyiv in the dark"}).status_code == 303
    edition = db.session.get(Edition, draft.id, populate_existing=True)
    assert [i.article_id for i in edition.items] == [extra, second]
    assert edition.subject == "Kyiv in the dark" and edition.curated_at is not None
    assert "Kyiv in the dark" in _body(editor.get(f"/staff/editions/{draft.id}"))
    assert post(editor, f"/staff/editions/{draft.id}/cancel").status_code == 303
    assert db.session.get(Edition, draft.id, populate_existing=True).status == EditionStatus.CANCELLED
    refused = post(editor, f"/staff/editions/{draft.id}/subject", {"subject": "Too late"}, follow_redirects=True)
    assert "only a draft can change" in _body(refused)


def test_send_now_asks_first_then_fans_out_and_the_progress_page_follows_it(app, daily, draft, enqueued):
    reader = add_subscriber("reader@example.org", [daily.id])
    editor = signed_in(app, StaffRole.EDITOR)
    confirm = _body(editor.get(f"/staff/editions/{draft.id}/send"))
    assert re.search(r'id="recipients">1<', confirm)
    response = post(editor, f"/staff/editions/{draft.id}/send")
    assert response.headers["Location"] == f"/staff/editions/{draft.id}/progress"
    edition = db.session.get(Edition, draft.id, populate_existing=True)
    assert edition.status == EditionStatus.SENDING
    assert abs((edition.run_at - utcnow()).total_seconds()) < 60  # dated when it really went
    progress = _body(editor.get(f"/staff/editions/{draft.id}/progress"))
    assert '<meta http-equiv="refresh" content="2">' in progress
    assert '<progress id="send-progress" max="1" value="0"' in progress
    from newsletter import sending

    mail.MemoryTransport.clear()
    while sending.deliver_batch(draft.id, mail.MemoryTransport()).claimed:
        pass
    assert [m.recipient for m in mail.MemoryTransport.outbox] == ["reader@example.org"]
    done = _body(editor.get(f"/staff/editions/{draft.id}/progress"))
    assert "http-equiv" not in done and 'value="1"' in done and "Finished" in done
    assert editor.get(f"/staff/editions/{draft.id}/progress.json").json["percent"] == 100
    # The schedule's own slot is drafted again with what is published from now on.
    schedule = db.session.scalars(select(Schedule)).one()
    assert schedule.next_run_at > utcnow() and reader


def test_pause_resume_cancel_and_retry_go_through_the_engine_and_the_audit_log(app, daily, enqueued, monkeypatch):
    from newsletter import sending

    monkeypatch.setattr(app.config["HERALD"], "SEND_BATCH_SIZE", 1)
    for i in range(3):
        add_subscriber(f"reader{i}@example.org", [daily.id])
    add_article("Russia strikes Kyiv's energy grid overnight", hours_ago=1)
    schedule = editorial.create_schedule(CLI, daily.id, days="daily", at="07:00", timezone="Europe/Kyiv")
    edition_id = editorial.draft_next_edition(schedule.id, CLI).id
    editor = signed_in(app, StaffRole.EDITOR)
    post(editor, f"/staff/editions/{edition_id}/send")
    assert post(editor, f"/staff/editions/{edition_id}/pause").status_code == 303
    assert "Resume" in _body(editor.get(f"/staff/editions/{edition_id}/progress"))
    assert not sending.deliver_batch(edition_id, mail.MemoryTransport()).claimed
    post(editor, f"/staff/editions/{edition_id}/resume")
    refusing = _Refusing()
    while sending.deliver_batch(edition_id, refusing).claimed:
        pass
    assert sending.progress(edition_id).counts.get(sending.DeliveryStatus.FAILED) == 3
    assert "Retry 3 failed" in _body(editor.get(f"/staff/editions/{edition_id}/progress"))
    assert post(editor, f"/staff/editions/{edition_id}/retry").status_code == 303
    mail.MemoryTransport.clear()
    while sending.deliver_batch(edition_id, mail.MemoryTransport()).claimed:
        pass
    assert len(mail.MemoryTransport.outbox) == 3
    actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-4:] == ["edition_sent", "edition_paused", "edition_resumed", "edition_retried"]


class _Refusing(mail.MemoryTransport):
    """A server that refuses every message for good, but not as a missing mailbox."""

    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        raise mail.PermanentMailError("550 5.7.1 message refused by policy", 550, "5.7.1", "data")


def test_a_test_copy_goes_to_the_editor_only(app, draft, enqueued):
    editor = signed_in(app, StaffRole.EDITOR, email="editor@herald-news.example.org")
    mail.MemoryTransport.clear()
    response = post(editor, f"/staff/editions/{draft.id}/test", {"audience": "member",
                                                                "address": "someone.else@example.org"})
    assert response.status_code == 303
    [sent] = mail.MemoryTransport.outbox
    assert sent.recipient == "editor@herald-news.example.org"
    assert db.session.get(Edition, draft.id).status == EditionStatus.DRAFT


def test_without_the_sending_engine_editions_are_prepared_but_not_sent(app, draft, monkeypatch):
    monkeypatch.setattr(parts, "sending_ready", lambda: False)
    editor = signed_in(app, StaffRole.EDITOR)
    page = _body(editor.get(f"/staff/editions/{draft.id}"))
    assert "sending engine is not installed" in page
    refused = post(editor, f"/staff/editions/{draft.id}/send", follow_redirects=True)
    assert "sending engine is not installed" in _body(refused)
    assert db.session.get(Edition, draft.id, populate_existing=True).status == EditionStatus.DRAFT


# --- Memberships --------------------------------------------------------------------------------


@pytest.fixture
def billing(app):
    if not money.ready():
        pytest.skip("the memberships module is not installed")
    from newsletter.models import billing as models

    return models


def test_memberships_by_tier_and_status_mrr_per_currency_and_the_stripe_log(app, daily, billing):
    tier = billing.Tier(slug="supporter", name="Supporter", currency="eur", monthly_lookup_key="sup_m",
                        yearly_lookup_key="sup_y", monthly_amount=500, yearly_amount=4800)
    db.session.add(tier)
    db.session.flush()
    people = [add_subscriber(f"member{i}@example.org", [daily.id]) for i in range(4)]
    plans = [("active", "month", 500, "eur"), ("active", "year", 4800, "eur"), ("past_due", "month", 1000, "usd"),
             ("canceled", "month", 500, "eur")]
    for sid, (status, interval, amount, currency) in zip(people, plans, strict=True):
        db.session.add(billing.Membership(subscriber_id=sid, stripe_subscription_id=f"sub_{sid}", tier_id=tier.id,
                                          interval=interval, amount=amount, currency=currency,
                                          status=billing.MembershipStatus(status), started_at=utcnow()))
    db.session.add(billing.StripeEvent(id="evt_1", type="customer.subscription.updated", object_id="sub_1",
                                       created_at=utcnow(), payload={}, processed_at=utcnow(),
                                       changes={"membership": {"status": ["active", "past_due"]}}))
    db.session.commit()
    revenue = {r.currency: (r.monthly, r.members) for r in money.monthly_recurring_revenue()}
    assert revenue == {"EUR": (9.0, 2), "USD": (10.0, 1)}  # 5 a month + 48 a year / 12
    viewer = signed_in(app, StaffRole.VIEWER)
    page = _body(viewer.get("/staff/memberships"))
    assert "Supporter" in page and "past due" in page and "MRR EUR" in page
    assert "membership status: active → past_due" in page
    log = _body(viewer.get("/staff/memberships/events?type=customer.subscription.updated"))
    assert "evt_1" in log
    members = _listed(viewer.get("/staff/subscribers?member=yes"))
    assert sorted(members) == ["member0@example.org", "member1@example.org", "member2@example.org"]
    assert "Members, last 30 days" in _body(viewer.get("/staff/"))


def test_an_admin_creates_and_changes_a_tier_and_stripe_sells_it(app, billing, fake_stripe):
    admin = signed_in(app, StaffRole.ADMIN)
    bad = post(admin, "/staff/tiers", {"slug": "supporter", "name": "Supporter", "currency": "eur",
                                       "monthly": "five", "yearly": "50"})
    assert bad.status_code == 400 and "is not an amount" in _body(bad)
    saved = post(admin, "/staff/tiers", {"slug": "supporter", "name": "Supporter", "currency": "eur",
                                         "monthly": "4.50", "yearly": "45", "benefits": "Keeps reporters at the front",
                                         "active": "yes", "sync": "yes"}, follow_redirects=True)
    assert "Stripe now sells it at these amounts" in _body(saved)
    tier = db.session.scalars(select(billing.Tier)).one()
    assert (tier.monthly_amount, tier.yearly_amount, tier.active) == (450, 4500, True)
    assert 'value="4.5"' in _body(admin.get("/staff/tiers?slug=supporter"))
    post(admin, "/staff/tiers", {"slug": "supporter", "name": "Supporter", "currency": "eur", "monthly": "5",
                                 "yearly": "50"})
    tier = db.session.get(billing.Tier, tier.id, populate_existing=True)
    assert (tier.monthly_amount, tier.active) == (500, False)
    actions = list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["tier_saved", "tier_prices_synced", "tier_saved"]
