"""Feeds in: fetched from a real local HTTP server, conditionally, within limits; articles sanitized and upserted."""

from __future__ import annotations

import datetime as dt

import feedparser
import pytest
from sqlalchemy import func, select

from newsletter import articles, jobs, maintenance
from newsletter.addresses import InvalidInput
from newsletter.demo import content as demo_content
from newsletter.models import Article, Feed
from tests.content_support import FeedServer, Route, fixture, http_date

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
SAMPLE_URL = "https://kyivindependent.com/us-says-north-korean-troops-join-combat-alongside-russia/"


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def fast_feeds(app, monkeypatch):
    """Feeds time out after half a second and may be at most 200 KB, so failure tests stay quick."""
    config = app.config["HERALD"]
    monkeypatch.setattr(config, "FEED_TIMEOUT", 0.5)
    monkeypatch.setattr(config, "FEED_MAX_BYTES", 200_000)
    return config


def count_articles(db) -> int:
    return db.session.scalar(select(func.count(Article.id)))


def add(server: FeedServer, path: str, route: Route, **options) -> Feed:
    server.routes[path] = route
    return articles.add_feed(server.url(path), **options)


def test_feed_articles_keep_their_parts_and_the_sample_article_arrives_whole(app, db, server):
    feed = add(server, "/kyiv.rss", Route(fixture("kyiv.rss")))
    result = articles.fetch_feed(feed.id, now=NOW)
    assert result.outcome == articles.FetchOutcome.UPDATED and result.created == 2
    story = db.session.scalar(select(Article).where(Article.guid == "ki-2024-11-13-north-korea"))
    # Tracking parameters are not part of a story's identity.
    assert story.url == SAMPLE_URL
    assert story.title == "US says North Korean troops join combat alongside Russia"
    assert story.authors == ["Martin Fornusek", "The Kyiv Independent news desk"]
    assert story.tags[:3] == ["News Feed", "North Korea", "United States"] and "Kursk Oblast" in story.tags
    assert story.published_at == dt.datetime(2024, 11, 13, 8, 0, tzinfo=dt.UTC)
    assert story.image_url.endswith("/north-korean-soldiers.jpg")
    # The picture leading the body becomes the image with its caption, credit included.
    assert story.image_caption.startswith("Korean People's Army (KPA) soldiers")
    assert story.image_caption.endswith("(Ed Jones / AFP via Getty Images)")
    assert "<figure>" not in story.body and story.body.count("<p>") == 8
    assert story.summary.startswith("North Korea has dispatched 10,000 troops")
    assert not story.members_only
    members = db.session.scalar(select(Article).where(Article.guid == "ki-members-0001"))
    assert members.members_only and members.tags == ["War"]
    feed = db.session.get(Feed, feed.id)
    assert feed.name == "The Kyiv Independent" and feed.last_error == "" and feed.failures == 0
    assert feed.next_fetch_at == NOW + dt.timedelta(minutes=feed.interval_minutes)


def test_unchanged_feed_is_asked_conditionally_gets_304_and_is_not_parsed_again(app, db, server, monkeypatch):
    modified = http_date(dt.datetime(2024, 11, 13, 8, 5, tzinfo=dt.UTC))
    feed = add(server, "/kyiv.rss", Route(fixture("kyiv.rss"), etag='"v1"', last_modified=modified))
    parses = []
    real_parse = feedparser.parse
    monkeypatch.setattr(articles.feedparser, "parse", lambda *a, **k: parses.append(1) or real_parse(*a, **k))

    assert articles.fetch_feed(feed.id, now=NOW).outcome == articles.FetchOutcome.UPDATED
    second = articles.fetch_feed(feed.id, now=NOW + dt.timedelta(minutes=15))

    assert second.outcome == articles.FetchOutcome.NOT_MODIFIED
    first_request, second_request = server.seen("/kyiv.rss")
    assert "if-none-match" not in first_request.headers
    assert second_request.headers["if-none-match"] == '"v1"'
    assert second_request.headers["if-modified-since"] == modified
    assert len(parses) == 1
    assert count_articles(db) == 2


def test_an_edited_item_is_updated_in_place_not_duplicated(app, db, server):
    feed = add(server, "/kyiv.rss", Route(fixture("kyiv.rss"), etag='"v1"'))
    articles.fetch_feed(feed.id, now=NOW)
    before = db.session.scalar(select(Article).where(Article.guid == "ki-2024-11-13-north-korea"))
    article_id, created = before.id, before.created_at

    server.routes["/kyiv.rss"] = Route(fixture("kyiv-edited.rss"), etag='"v2"')
    later = NOW + dt.timedelta(minutes=15)
    result = articles.fetch_feed(feed.id, now=later)

    assert result.created == 0 and result.updated == 1
    assert count_articles(db) == 2
    db.session.expire_all()
    after = db.session.get(Article, article_id)
    assert after.title.endswith("(updated)")
    assert "more than 10,000 troops" in after.body
    assert after.created_at == created and after.updated_at == later


def test_broken_feeds_are_recorded_with_a_backoff_and_never_stop_the_others(app, db, server, fast_feeds):
    broken = {
        "malformed": add(server, "/malformed.xml", Route(fixture("malformed.xml"))),
        "slow": add(server, "/slow.rss", Route(fixture("kyiv.rss"), delay=2.0)),
        "failing": add(server, "/failing.rss", Route(b"upstream exploded", status=500, content_type="text/plain")),
        "streamed huge": add(server, "/huge.rss", Route(stream_bytes=2_000_000)),
        "declared huge": add(server, "/declared.rss", Route(b"<rss/>", declared_length=50_000_000)),
        "not a feed": add(server, "/page.html", Route(b"<html><body>Hello</body></html>", content_type="text/html")),
    }
    good = add(server, "/atom.xml", Route(fixture("atom.xml"), content_type="application/atom+xml"))
    started = dt.datetime.now(dt.UTC)

    results = {r.feed_id: r for r in articles.ingest_feeds(now=NOW)}

    # Broken feeds cost their timeout at most: the whole run stays quick.
    assert dt.datetime.now(dt.UTC) - started < dt.timedelta(seconds=5)
    assert results[good.id].outcome == articles.FetchOutcome.UPDATED and results[good.id].created == 2
    expected = {
        "malformed": "malformed", "slow": "timed out", "failing": "HTTP 500", "streamed huge": "larger than",
        "declared huge": "more than the", "not a feed": "not a valid RSS or Atom feed",
    }
    db.session.expire_all()
    for name, feed in broken.items():
        stored = db.session.get(Feed, feed.id)
        assert results[feed.id].outcome == articles.FetchOutcome.FAILED, name
        assert expected[name] in stored.last_error, (name, stored.last_error)
        assert stored.failures == 1
        # Backed off: not tried again at the ordinary interval.
        assert stored.next_fetch_at == NOW + 2 * dt.timedelta(minutes=stored.interval_minutes)
    assert count_articles(db) == 2


def test_a_feed_failing_again_waits_longer_and_recovers_cleanly(app, db, server):
    feed = add(server, "/flaky.rss", Route(b"down", status=503, content_type="text/plain"), interval_minutes=10)
    articles.fetch_feed(feed.id, now=NOW)
    articles.fetch_feed(feed.id, now=NOW)
    stored = db.session.get(Feed, feed.id)
    assert stored.failures == 2 and stored.next_fetch_at == NOW + dt.timedelta(minutes=40)

    server.routes["/flaky.rss"] = Route(fixture("kyiv.rss"))
    assert articles.fetch_feed(feed.id, now=NOW).outcome == articles.FetchOutcome.UPDATED
    stored = db.session.get(Feed, feed.id)
    assert (stored.failures, stored.last_error) == (0, "")
    assert stored.next_fetch_at == NOW + dt.timedelta(minutes=10)


def test_a_busy_server_asking_to_retry_later_is_left_alone_that_long(app, db, server):
    busy = Route(b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "7200"})
    feed = add(server, "/busy.rss", busy, interval_minutes=5)
    articles.fetch_feed(feed.id, now=NOW)
    stored = db.session.get(Feed, feed.id)
    assert stored.last_error.startswith("HTTP 429")
    assert stored.next_fetch_at == NOW + dt.timedelta(hours=2)


def test_hostile_html_is_stripped_and_relative_links_made_absolute(app, db, server):
    feed = add(server, "/hostile.rss", Route(fixture("hostile.rss")))
    articles.fetch_feed(feed.id, now=NOW)
    story = db.session.scalar(select(Article))
    body = story.body.lower()
    for poison in ("<script", "<style", "<iframe", "<form", "<input", "<svg", "onclick", "onerror", "onmouseover",
                   "javascript:", "data:image", "position:fixed", "document.cookie", "display: none"):
        assert poison not in body, poison
    assert "Shelling resumed <b>overnight</b> in Kharkiv." in story.body
    assert 'href="https://wire.example.net/stories/kharkiv-background"' in story.body
    assert 'src="https://wire.example.net/images/kharkiv.jpg"' in story.body
    assert 'alt=""' in story.body and 'rel="noopener noreferrer"' in story.body
    assert "Residents <i>sheltered</i> in the metro." in story.body
    # Titles and summaries are plain text: markup is gone, not escaped into view.
    assert "<" not in story.title and "alert" not in story.title
    assert story.summary == "Shelling resumed overnight."


def test_atom_entries_are_read_with_html_titles_flattened(app, db, server):
    feed = add(server, "/atom.xml", Route(fixture("atom.xml"), content_type="application/atom+xml"))
    articles.fetch_feed(feed.id, now=NOW)
    grain = db.session.scalar(select(Article).where(Article.guid == "tag:news.example.org,2024:grain-corridor"))
    assert grain.title == "Grain corridor holds despite attacks on Odesa ports"
    assert grain.authors == ["Dinara Khalilova"] and grain.tags == ["Business", "Economy"]
    assert grain.published_at == dt.datetime(2024, 11, 14, 5, 15, tzinfo=dt.UTC)
    assert 'href="https://news.example.org/business/ports"' in grain.body
    grid = db.session.scalar(select(Article).where(Article.guid == "tag:news.example.org,2024:power-grid"))
    assert grid.body == "" and grid.summary == "Engineers have rebuilt substations hit in the spring."


def test_the_tick_claims_each_due_feed_once_and_hands_it_to_a_task(app, db, server, monkeypatch):
    sent = []
    monkeypatch.setattr(jobs, "enqueue", lambda name, *args, **kw: sent.append((name, args)) or True)
    due = add(server, "/kyiv.rss", Route(fixture("kyiv.rss")))
    later = add(server, "/atom.xml", Route(fixture("atom.xml")))
    db.session.get(Feed, later.id).next_fetch_at = NOW + dt.timedelta(minutes=5)
    db.session.get(Feed, due.id).next_fetch_at = NOW - dt.timedelta(minutes=1)
    db.session.commit()

    first = maintenance.tick(now=NOW)
    second = maintenance.tick(now=NOW + dt.timedelta(seconds=30))

    assert first["feeds_enqueued"] == 1 and second["feeds_enqueued"] == 0
    assert [s for s in sent if s[0] == jobs.FETCH_FEED] == [(jobs.FETCH_FEED, (due.id,))]
    # A task the broker lost: once the lease runs out, the feed is due again.
    third = maintenance.tick(now=NOW + articles.FEED_LEASE + dt.timedelta(seconds=1))
    assert third["feeds_enqueued"] == 2


def test_canonical_urls_drop_fragments_tracking_and_default_ports():
    assert articles.canonical_url("HTTPS://Example.ORG:443/a/b?utm_source=x&id=3&fbclid=y#top") == (
        "https://example.org/a/b?id=3"
    )
    assert articles.canonical_url("http://example.org") == "http://example.org/"
    assert articles.canonical_url("/path", base="https://site.example/feed/") == "https://site.example/path"
    for bad in ("javascript:alert(1)", "ftp://example.org/x", "not a url", ""):
        with pytest.raises(InvalidInput):
            articles.canonical_url(bad)


def test_feed_admin_rejects_duplicates_and_bad_urls(app, db):
    articles.add_feed("https://news.example.org/feed/")
    with pytest.raises(InvalidInput, match="already"):
        articles.add_feed("https://news.example.org/feed/")
    with pytest.raises(InvalidInput):
        articles.add_feed("file:///etc/passwd")


def test_the_sample_article_is_parsed_from_the_saved_page():
    data = demo_content.parse_sample_article(demo_content.SAMPLE_ARTICLE.read_text())
    assert data.title == "US says North Korean troops join combat alongside Russia"
    assert data.authors == ["Martin Fornusek", "The Kyiv Independent news desk"]
    assert data.tags == ["News Feed", "North Korea", "United States", "Ukraine", "Russia", "War", "Kursk Oblast"]
    assert data.published_at.astimezone(dt.UTC) == dt.datetime(2024, 11, 13, 8, 0, tzinfo=dt.UTC)
    assert data.image_caption.endswith("(Ed Jones / AFP via Getty Images)")
    assert data.body.count("<p>") == 8
    assert data.body.startswith("<p>North Korea has dispatched 10,000 troops")
    # The "read also" card for another story is not part of this one.
    assert "Kateryna Hodunova" not in data.body and "50,000-people-strong" not in data.body


def test_demo_data_loads_the_sample_article_and_schedules_once(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo-data"])
    second = runner.invoke(args=["demo-data"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "the sample article (new)" in first.output and "already there" in second.output
    assert count_articles(db) == 1
    listed = runner.invoke(args=["schedules", "list"]).output
    assert "daily\tdaily 07:00 Europe/Kyiv" in listed and "war-weekly\tsat 09:00 Europe/Kyiv" in listed


def test_cli_adds_lists_and_ingests_feeds_showing_errors(app, db, server, fast_feeds):
    server.routes["/kyiv.rss"] = Route(fixture("kyiv.rss"))
    server.routes["/down.rss"] = Route(b"no", status=500, content_type="text/plain")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["feeds", "add", server.url("/kyiv.rss"), "--interval", "30"]).exit_code == 0
    assert runner.invoke(args=["feeds", "add", server.url("/down.rss")]).exit_code == 0
    assert runner.invoke(args=["feeds", "add", "nonsense"]).exit_code == 1

    ingested = runner.invoke(args=["ingest"])
    assert ingested.exit_code == 0
    assert "updated\t2 new" in ingested.output and "failed\tHTTP 500" in ingested.output
    errors = runner.invoke(args=["feeds", "list", "--errors"]).output
    assert "down.rss" in errors and "ERROR (1 in a row): HTTP 500" in errors and "kyiv.rss" not in errors
    listed = runner.invoke(args=["articles", "list"]).output
    assert "US says North Korean troops" in listed and "[members]" in listed
