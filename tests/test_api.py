"""The CMS pushes articles to /api/v1/articles with a bearer key: valid pushes land, bad ones change nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from newsletter import articles
from newsletter.models import ApiKey, Article
from tests.content_support import FeedServer, Route, fixture

URL = "/api/v1/articles"
STORY = {
    "guid": "cms-4711",
    "url": "https://kyivindependent.com/us-says-north-korean-troops-join-combat-alongside-russia/",
    "title": "US says North Korean troops join combat alongside Russia",
    "summary": "North Korea has dispatched 10,000 troops to Russia, a Pentagon spokesperson said.",
    "body": "<p>North Korea has dispatched 10,000 troops to Russia.</p><script>alert(1)</script>",
    "authors": ["Martin Fornusek", "The Kyiv Independent news desk"],
    "sections": ["News Feed"],
    "tags": ["North Korea", "War"],
    "published_at": "2024-11-13T10:00:00+02:00",
    "image_url": "https://assets.kyivindependent.com/content/images/2024/11/north-korean-soldiers.jpg",
    "image_caption": "Korean People's Army soldiers in Pyongyang (Ed Jones / AFP via Getty Images)",
    "members_only": False,
}


@pytest.fixture
def token(app, db):
    _key, secret = articles.create_api_key("Ghost CMS")
    return secret


def push(client, payload, token: str | None, *, raw: bytes | None = None, content_type: str = "application/json"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(payload).encode()
    return client.post(URL, data=data, headers=headers, content_type=content_type)


def stored(db) -> list[Article]:
    db.session.expire_all()
    return list(db.session.scalars(select(Article).order_by(Article.id)))


def test_a_valid_push_creates_the_article_then_updates_it_without_a_csrf_token(client, db, token):
    # CSRF protection is on in tests; a machine with a key needs no form token.
    created = push(client, STORY, token)
    assert created.status_code == 201, created.json
    assert created.json["created"] is True
    [article] = stored(db)
    assert article.title == STORY["title"] and article.guid == "cms-4711"
    assert article.tags == ["News Feed", "North Korea", "War"]
    assert article.published_at == dt.datetime(2024, 11, 13, 8, 0, tzinfo=dt.UTC)
    assert "<script" not in article.body and "North Korea has dispatched" in article.body

    edited = push(client, STORY | {"title": "US confirms North Korean troops in combat", "members_only": True}, token)
    assert edited.status_code == 200 and edited.json == {"id": article.id, "created": False, "changed": True}
    [article] = stored(db)
    assert article.title == "US confirms North Korean troops in combat" and article.members_only

    same = push(client, STORY | {"title": "US confirms North Korean troops in combat", "members_only": True}, token)
    assert same.status_code == 200 and same.json["changed"] is False


def test_the_same_story_from_a_feed_and_from_the_api_is_one_article(client, db, token, app):
    server = FeedServer().start()
    try:
        server.routes["/kyiv.rss"] = Route(fixture("kyiv.rss"))
        feed = articles.add_feed(server.url("/kyiv.rss"))
        articles.fetch_feed(feed.id)
    finally:
        server.stop()
    before = {a.url: a.id for a in stored(db)}
    # The CMS knows the story by its own id, not the feed's guid: the canonical URL finds it.
    response = push(client, STORY, token)
    assert response.status_code == 200 and response.json["id"] == before[STORY["url"]]
    assert len(stored(db)) == 2
    article = db.session.get(Article, response.json["id"])
    assert article.guid == "ki-2024-11-13-north-korea"
    assert article.summary == STORY["summary"]


def test_bad_pushes_get_a_4xx_naming_the_problem_and_write_nothing(client, db, token):
    push(client, STORY, token)
    original = stored(db)[0].title
    cases = [
        ({"raw": b'{"title": "unterminated'}, 400, None, "not valid JSON"),
        ({"raw": b"[1, 2, 3]"}, 400, None, "JSON object"),
        ({"payload": STORY | {"title": "   "}}, 422, "title", "must not be empty"),
        ({"payload": {k: v for k, v in STORY.items() if k != "title"}}, 422, "title", "required"),
        ({"payload": STORY | {"title": 42}}, 422, "title", "string"),
        ({"payload": STORY | {"published_at": "yesterday"}}, 422, "published_at", "ISO 8601"),
        ({"payload": STORY | {"published_at": "2024-11-13T10:00:00"}}, 422, "published_at", "UTC offset"),
        ({"payload": STORY | {"url": "javascript:alert(1)"}}, 422, "url", "http"),
        ({"payload": STORY | {"members_only": "yes"}}, 422, "members_only", "true or false"),
        ({"payload": STORY | {"tags": "War"} | {"authors": [1, 2]}}, 422, "authors", "list of strings"),
        ({"payload": STORY | {"image_url": "data:image/png;base64,AAAA"}}, 422, "image_url", "http"),
        ({"payload": STORY | {"publishedAt": "2024-11-13T10:00:00Z"}}, 422, "publishedAt", "Unknown field"),
        ({"payload": STORY | {"title": "x" * 301}}, 422, "title", "longer than 300"),
    ]
    for case, status, field, words in cases:
        response = push(client, case.get("payload"), token, raw=case.get("raw"))
        assert response.status_code == status, (case, response.json)
        assert response.json["field"] == field, (case, response.json)
        assert words in response.json["error"], (case, response.json)
        articles_now = stored(db)
        assert len(articles_now) == 1 and articles_now[0].title == original, case


def test_wrong_missing_or_revoked_keys_are_refused_with_401(client, db, token):
    cases = [None, "hrld_00000000_" + "x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), "Basic abc"]
    for bad in cases:
        headers = {"Authorization": bad if bad and bad.startswith("Basic") else f"Bearer {bad}"} if bad else {}
        response = client.post(URL, data=json.dumps(STORY), headers=headers, content_type="application/json")
        assert response.status_code == 401, bad
        assert response.json["field"] == "authorization"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    key = db.session.scalar(select(ApiKey))
    articles.revoke_api_key(key.prefix)
    revoked = push(client, STORY, token)
    assert revoked.status_code == 401 and "revoked" in revoked.json["error"]
    assert db.session.scalar(select(func.count(Article.id))) == 0


def test_keys_are_stored_hashed_and_found_by_their_visible_prefix(app, db, token):
    key = db.session.scalar(select(ApiKey))
    assert token.startswith(f"hrld_{key.prefix}_")
    assert token not in key.token_hash and len(key.token_hash) == 64


def test_non_json_and_oversized_bodies_get_json_errors(client, db, token):
    form = client.post(URL, data={"title": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert form.status_code == 415 and form.json["field"] == "content-type"
    huge = push(client, None, token, raw=b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert huge.status_code == 413 and "error" in huge.json
    assert db.session.scalar(select(func.count(Article.id))) == 0


def test_api_keys_are_created_listed_and_revoked_from_the_cli(app, db, client):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["api-keys", "create", "Ghost CMS"])
    assert created.exit_code == 0
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("hrld_")
    assert push(client, STORY, secret).status_code == 201
    prefix = secret.split("_")[1]
    listed = runner.invoke(args=["api-keys", "list"]).output
    assert prefix in listed and "active" in listed and secret not in listed
    assert runner.invoke(args=["api-keys", "revoke", prefix]).exit_code == 0
    assert "revoked" in runner.invoke(args=["api-keys", "list"]).output
    assert push(client, STORY, secret).status_code == 401
    assert runner.invoke(args=["api-keys", "revoke", "nope"]).exit_code == 1


def test_a_feed_of_summaries_never_erases_the_body_the_cms_sent(client, db, token):
    pushed = STORY | {"guid": "cms-grid", "url": "https://news.example.org/business/power-grid-winter",
                      "title": "Kyiv's power grid prepares for winter", "body": "<p>The full story.</p>"}
    assert push(client, pushed, token).status_code == 201
    server = FeedServer().start()
    try:
        server.routes["/atom.xml"] = Route(fixture("atom.xml"), content_type="application/atom+xml")
        articles.fetch_feed(articles.add_feed(server.url("/atom.xml")).id)
    finally:
        server.stop()
    grid = next(a for a in stored(db) if a.url == pushed["url"])
    assert grid.body == "<p>The full story.</p>"
    assert grid.summary == "Engineers have rebuilt substations hit in the spring."
