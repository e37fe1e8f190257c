"""Editions rendered once per audience: within 100 KB, members and non-members each see their own, text carries all."""

from __future__ import annotations

import datetime as dt
import re
from html import escape

import pytest
from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import select

from newsletter import digests, schedules
from newsletter.addresses import InvalidInput
from newsletter.digests import SLOT_NAME, SLOT_PREFERENCES_URL, SLOT_UNSUBSCRIBE_URL, Audience
from newsletter.extensions import db as _db
from newsletter.models import Edition, EditionStatus, Newsletter
from tests.content_support import make_article

NOW = dt.datetime(2026, 6, 10, 4, 0, tzinfo=dt.UTC)  # 07:00 in Kyiv
LIMIT_BYTES = 100_000


def reader_values(html: bool) -> dict[str, str]:
    """Long, realistic per-reader values, as the sending engine would fill them."""
    name = "Олександра-Марія Коваленко-Шевченко <&> " * 2
    return {
        SLOT_NAME: escape(name) if html else name,
        SLOT_UNSUBSCRIBE_URL: "https://news.example.org/unsubscribe/" + "a" * 160,
        SLOT_PREFERENCES_URL: "https://news.example.org/preferences/" + "b" * 120,
    }


def frozen_edition(db, newsletter: str = "daily", limit: int = 10, **schedule_options) -> Edition:
    """Schedule a newsletter for 07:00 Kyiv and tick at that time: the edition is frozen."""
    from newsletter import maintenance

    schedules.create_schedule(newsletter, "daily", "07:00", "Europe/Kyiv", article_limit=limit,
                              now=NOW - dt.timedelta(hours=12), **schedule_options)
    maintenance.tick(now=NOW)
    db.session.expire_all()
    return db.session.scalars(select(Edition).order_by(Edition.id.desc())).first()


def members_body(n: int, paragraphs: int) -> str:
    return "".join(
        f"<p>MEMBERS-ONLY-BODY-{n} paragraph {p}: reporting from the front line near Pokrovsk, where the "
        f"brigade's medics work through the night. <a href=\"https://news.example.org/ref/{n}/{p}\">Source</a>.</p>"
        for p in range(paragraphs)
    )


def test_a_maximum_size_edition_stays_under_100_kb_for_both_audiences_and_text_carries_every_article(
        app, db, newsletters):
    limit = app.config["HERALD"].MAX_EDITION_ARTICLES
    made = []
    for n in range(limit):
        made.append(make_article(
            NOW - dt.timedelta(minutes=10 + n),
            title=f"{n:02d} " + ("Frontline & <diplomacy> " * 20)[:297],
            url=f"https://news.example.org/{n}/" + "long-slug-" * 97,
            summary=("Summary words that go on; " * 30)[:400],
            image_url=f"https://images.example.org/{n}/" + "p" * 960 + ".jpg",
            image_caption=("A caption with its photo credit (Photographer / Agency) " * 10)[:500],
            authors=[f"Author {a} " + "x" * 90 for a in range(10)],
            members_only=n % 2 == 0,
            body=members_body(n, 40) if n % 2 == 0 else "<p>Open story body.</p>" * 50,
        ))
    edition = frozen_edition(db, limit=limit)
    assert edition.status == EditionStatus.FROZEN and len(edition.items) == limit
    renderings = digests.edition_renderings(edition.id)
    assert set(renderings) == {Audience.MEMBER, Audience.NON_MEMBER}
    for audience, rendering in renderings.items():
        html = digests.fill_slots(rendering.html, reader_values(html=True))
        text = digests.fill_slots(rendering.text, reader_values(html=False))
        assert len(html.encode()) < LIMIT_BYTES, (audience, len(html.encode()))
        for article in made:
            assert article.title in text and article.url in text, (audience, article.id)
            assert escape(article.url) in html
        assert "@@HERALD_" not in html + text
    member, non_member = renderings[Audience.MEMBER], renderings[Audience.NON_MEMBER]
    assert "/membership" not in member.html + member.text
    assert "MEMBERS-ONLY-BODY" not in non_member.html + non_member.text


def test_members_read_members_only_stories_in_full_non_members_get_a_teaser_and_a_join_link(app, db, newsletters):
    for n in range(6):
        make_article(NOW - dt.timedelta(hours=1, minutes=n), members_only=n < 3, title=f"Story {n}",
                     body=members_body(n, 4) if n < 3 else "", summary=f"Teaser {n} of the story.")
    edition = frozen_edition(db)
    renderings = digests.edition_renderings(edition.id)
    member, non_member = renderings[Audience.MEMBER], renderings[Audience.NON_MEMBER]

    for n in range(3):
        assert f"MEMBERS-ONLY-BODY-{n} paragraph 3" in member.html
        assert f"MEMBERS-ONLY-BODY-{n} paragraph 3" in member.text
        assert f"Teaser {n} of the story." in non_member.html
    assert "MEMBERS-ONLY-BODY" not in non_member.html + non_member.text
    assert non_member.html.count("This story is for members.") == 3
    assert "http://127.0.0.1:" in non_member.html and "/membership" in non_member.html
    assert "Become a member" in non_member.text and "Thank you for being a member" not in non_member.html
    assert "Thank you for being a member" in member.html and "Thank you for being a member" in member.text
    assert "Become a member" not in member.html + member.text and "/membership" not in member.html
    # Links in bodies become "text (url)" in the text version.
    assert "Source (https://news.example.org/ref/0/0)" in " ".join(member.text.split())


def test_the_html_is_a_600px_table_with_inlined_css_dark_mode_preheader_alt_text_and_a_proper_footer(
        app, db, newsletters):
    make_article(NOW - dt.timedelta(hours=2), title="Grain corridor holds", image_url="https://img.example/a.jpg",
                 image_caption="Ships at Odesa (Photo: Agency)")
    make_article(NOW - dt.timedelta(hours=1), title="Power grid ready", body="", summary="Engineers rebuilt it.")
    edition = frozen_edition(db)
    for audience, r in digests.edition_renderings(edition.id).items():
        html = r.html
        assert 'role="presentation"' in html and "max-width:600px" in html and 'width="600"' in html
        assert '<meta name="color-scheme" content="light dark">' in html
        assert re.search(r"<style>@media \(prefers-color-scheme: ?dark\)", html)
        # The CSS is inlined into the rendered HTML; only the media queries stay in <style>.
        assert re.search(r'<h2 style="[^"]*font-size:20px', html) and ".cell{" not in html
        assert "Power grid ready — and 1 more story" in html.split("<h1", 1)[0]
        images = re.findall(r"<img [^>]*>", html)
        assert images and all(re.search(r'\salt="[^"]+"', img) for img in images)
        assert 'alt="Ships at Odesa (Photo: Agency)"' in html
        assert "Herald Newsroom, 1 Test Street, 01001 Kyiv, Ukraine" in html + r.text
        assert "because you subscribed to it" in html and "because you subscribed to it" in r.text
        for slot in (SLOT_UNSUBSCRIBE_URL, SLOT_PREFERENCES_URL, SLOT_NAME):
            assert slot in html and slot in r.text, (audience, slot)
        assert f'href="{SLOT_UNSUBSCRIBE_URL}"' in html and f'href="{SLOT_PREFERENCES_URL}"' in html
        assert "<script" not in html
        assert r.subject == "Daily digest: Power grid ready"
        assert f"/archive/daily/{edition.id}" in html and f"/archive/daily/{edition.id}" in r.text


def test_slots_are_filled_in_one_pass_and_a_missing_value_is_an_error():
    template = f"Hello {SLOT_NAME}: {SLOT_UNSUBSCRIBE_URL} {SLOT_PREFERENCES_URL}"
    filled = digests.fill_slots(template, {SLOT_NAME: SLOT_UNSUBSCRIBE_URL, SLOT_UNSUBSCRIBE_URL: "u",
                                           SLOT_PREFERENCES_URL: "p"})
    # A reader's name that looks like a slot stays their name.
    assert filled == f"Hello {SLOT_UNSUBSCRIBE_URL}: u p"
    with pytest.raises(KeyError, match="HERALD_PREFERENCES_URL"):
        digests.fill_slots(template, {SLOT_NAME: "", SLOT_UNSUBSCRIBE_URL: "u"})


def test_articles_are_chosen_new_to_the_newsletter_in_the_window_filtered_and_newest_first(app, db, newsletters):
    daily = next(n for n in newsletters if n.slug == "daily")
    weekly = next(n for n in newsletters if n.slug == "war-weekly")
    old = make_article(NOW - dt.timedelta(hours=49), tags=["War"])
    war = make_article(NOW - dt.timedelta(hours=3), tags=["war", "Front"])
    sport = make_article(NOW - dt.timedelta(hours=2), tags=["War", "Sport"])
    politics = make_article(NOW - dt.timedelta(hours=1), tags=["Politics"])
    future = make_article(NOW + dt.timedelta(hours=3), tags=["War"])

    assert [a.id for a in digests.choose_articles(daily.id, NOW, now=NOW)] == [politics.id, sport.id, war.id]
    filtered = schedules.create_schedule("war-weekly", "sat", "09:00", "Europe/Kyiv", include_tags=["WAR"],
                                         exclude_tags=["sport"], now=NOW)
    assert [a.id for a in digests.choose_articles(weekly.id, NOW, now=NOW, schedule=filtered)] == [war.id]
    assert [a.id for a in digests.choose_articles(daily.id, NOW, now=NOW, limit=1)] == [politics.id]
    assert old.id not in [a.id for a in digests.choose_articles(daily.id, NOW, now=NOW)]
    assert future.id not in [a.id for a in digests.choose_articles(daily.id, NOW, now=NOW)]

    edition = frozen_edition(db)
    assert [i.article_id for i in edition.items] == [politics.id, sport.id, war.id]
    # Used by the daily digest, still new to the weekly one; the story dated ahead waits for its time.
    tomorrow = NOW + dt.timedelta(days=1)
    assert [a.id for a in digests.choose_articles(daily.id, tomorrow, now=tomorrow)] == [future.id]
    assert [a.id for a in digests.choose_articles(weekly.id, NOW, now=NOW)] == [politics.id, sport.id, war.id]


def test_a_cancelled_draft_gives_its_articles_back_and_editing_is_checked(app, db, newsletters):
    story = make_article(NOW - dt.timedelta(hours=1))
    other = make_article(NOW - dt.timedelta(hours=2))
    schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=NOW - dt.timedelta(hours=12))
    from newsletter import maintenance

    maintenance.tick(now=NOW - dt.timedelta(minutes=45))
    draft = db.session.scalar(select(Edition))
    with pytest.raises(InvalidInput, match="already in edition"):
        digests.add_article(draft.id, story.id)
    with pytest.raises(InvalidInput, match="No article"):
        digests.add_article(draft.id, 999_999)
    digests.move_article(draft.id, other.id, 0)
    assert [i.article_id for i in db.session.get(Edition, draft.id).items] == [other.id, story.id]
    with pytest.raises(InvalidInput, match="200 characters"):
        digests.set_subject(draft.id, "x" * 201)
    digests.cancel_edition(draft.id)
    assert db.session.get(Edition, draft.id).status == EditionStatus.CANCELLED
    assert {a.id for a in digests.choose_articles(draft.newsletter_id, NOW, now=NOW)} == {story.id, other.id}
    with pytest.raises(digests.EditionNotEditable):
        digests.remove_article(draft.id, story.id)


def test_freezing_twice_changes_nothing_the_second_time(app, db, newsletters):
    make_article(NOW - dt.timedelta(hours=1))
    edition = frozen_edition(db)
    before = digests.edition_renderings(edition.id)
    assert digests.freeze_edition(edition.id, now=NOW + dt.timedelta(minutes=1)) == EditionStatus.FROZEN
    assert digests.edition_renderings(edition.id) == before
    # Frozen but not yet sending: listed again so a lost send task is issued again.
    assert digests.due_editions_to_send(now=NOW + dt.timedelta(minutes=5)) == [edition.id]


def test_the_subject_template_renders_in_a_sandbox(app, db, newsletters):
    make_article(NOW - dt.timedelta(hours=1), title="Top story")
    template = "{{ newsletter.name }} for {{ date }}: {{ top.title }} ({{ count }})"
    edition = frozen_edition(db, subject_template=template)
    subject = digests.edition_renderings(edition.id)[Audience.MEMBER].subject
    assert subject == "Daily digest for Wednesday, 10 June 2026: Top story (1)"


def test_a_hostile_subject_template_falls_back_to_the_default(app, db, newsletters):
    make_article(NOW - dt.timedelta(hours=1), title="Top story")
    edition = frozen_edition(db, subject_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    assert digests.edition_renderings(edition.id)[Audience.NON_MEMBER].subject == "Daily digest: Top story"


def test_a_newsletter_folder_overrides_the_default_template_file_by_file(app, db, newsletters, monkeypatch):
    db.session.add(Newsletter(slug="override-check", name="Override check", list_id="override.list-id.test"))
    db.session.commit()
    loader = ChoiceLoader([DictLoader({"digest/override-check/subject.txt": "Special: {{ items|length }} stories"}),
                           app.jinja_loader])
    monkeypatch.setattr(app, "jinja_loader", loader)
    make_article(NOW - dt.timedelta(hours=1))
    edition = frozen_edition(db, newsletter="override-check")
    rendering = digests.edition_renderings(edition.id)[Audience.NON_MEMBER]
    assert rendering.subject == "Special: 1 stories"
    assert "Override check" in rendering.html  # body.html came from the default folder


def test_html_to_text_keeps_paragraphs_lists_and_links():
    text = digests.html_to_text('<p>One <a href="https://e.org/x">link</a>.</p><ul><li>first</li><li>second</li></ul>'
                                "<p>Line<br>break</p>")
    assert text == "One link (https://e.org/x).\n\n- first\n- second\n\nLine\nbreak"


def sent(db, edition: Edition) -> Edition:
    """What the sending engine will do once it has mailed everyone."""
    edition.status, edition.sent_at = EditionStatus.SENT, NOW
    db.session.commit()
    return edition


def test_sent_editions_appear_in_the_public_archive_as_non_members_saw_them_with_no_reader_links(
        app, db, client, newsletters):
    make_article(NOW - dt.timedelta(hours=1), title='Guns & "butter"')
    make_article(NOW - dt.timedelta(hours=2), title="Members' story", members_only=True, body=members_body(7, 2))
    edition = frozen_edition(db)
    page = f"/archive/daily/{edition.id}"
    assert client.get(page).status_code == 404  # frozen, not sent yet
    sent(db, edition)

    listing = client.get("/archive")
    assert listing.status_code == 200 and page in listing.text
    assert page in client.get("/archive/daily").text
    response = client.get(page)
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    body = response.text
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox" srcdoc="&lt;!DOCTYPE html&gt;' in body
    assert "@@HERALD" not in body and "/unsubscribe/" not in body and "/preferences/" not in body
    assert "MEMBERS-ONLY-BODY" not in body and "Thank you for being a member" not in body
    assert "<h1>Daily digest: Guns &amp; &#34;butter&#34;</h1>" in body
    assert '"butter"' not in body
    assert client.get(f"/archive/war-weekly/{edition.id}").status_code == 404
    assert client.get("/archive/daily/999999").status_code == 404
    assert client.get("/archive/nope").status_code == 404


def test_editors_see_change_and_render_the_next_edition_from_the_cli(app, db, newsletters, tmp_path):
    runner = app.test_cli_runner()
    first = make_article(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), title="Earlier story")
    second = make_article(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), title="Later story")
    schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv")
    preview = runner.invoke(args=["editions", "next", "daily", "--out", str(tmp_path / "preview")])
    assert preview.exit_code == 0, preview.output
    assert "not drafted yet" in preview.output and "subject: Daily digest: Later story" in preview.output
    assert sorted(p.name for p in (tmp_path / "preview").iterdir()) == [
        "member.html", "member.txt", "non_member.html", "non_member.txt"]

    schedule_row = db.session.scalar(select(digests.Schedule))
    claim_time = schedule_row.next_run_at - dt.timedelta(minutes=30)
    schedules.claim_due_editions(now=claim_time)
    draft = db.session.scalar(select(Edition))
    shown = runner.invoke(args=["editions", "next", "daily"])
    assert f"edition {draft.id} (draft, untouched" in shown.output
    assert runner.invoke(args=["editions", "move", str(draft.id), str(first.id), "0"]).exit_code == 0
    assert runner.invoke(args=["editions", "subject", str(draft.id), "Morning, Kyiv"]).exit_code == 0
    removed = runner.invoke(args=["editions", "remove", str(draft.id), str(second.id)])
    assert removed.output.strip() == f"edition {draft.id}: articles {first.id}; subject: Morning, Kyiv"
    assert runner.invoke(args=["editions", "add", str(draft.id), str(second.id)]).exit_code == 0
    shown = runner.invoke(args=["editions", "next", "daily"]).output
    assert "edited by staff" in shown and "subject: Morning, Kyiv" in shown
    assert shown.index("Earlier story") < shown.index("Later story")
    rendered = runner.invoke(args=["editions", "render", str(draft.id), "--out", str(tmp_path / "draft")])
    assert rendered.exit_code == 0 and (tmp_path / "draft" / "member.txt").read_text().count("story") >= 2
    listed = runner.invoke(args=["editions", "list", "--newsletter", "daily", "--status", "draft"]).output
    assert f"{draft.id}\tdaily" in listed and "2 article(s)" in listed
    assert runner.invoke(args=["editions", "cancel", str(draft.id)]).exit_code == 0
    refused = runner.invoke(args=["editions", "add", str(draft.id), str(second.id)])
    assert refused.exit_code == 1 and "cancelled" in refused.output
    _db.session.rollback()
