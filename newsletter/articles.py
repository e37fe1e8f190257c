"""Ingest articles from RSS/Atom feeds and from the CMS: fetch politely, sanitize, upsert by guid or URL."""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import hashlib
import html
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import nh3
import requests
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import ApiKey, Article, ArticleSource, Feed, utcnow

log = logging.getLogger(__name__)

MAX_TITLE = 300
MAX_SUMMARY = 400
MAX_CAPTION = 500
MAX_URL = 1000
MAX_GUID = 512
MAX_AUTHORS = 10
MAX_TAGS = 30
MAX_LABEL = 100
# Sanitized bodies beyond this are dropped (the summary stays): no digest could carry them anyway.
MAX_BODY = 200_000
MAX_BACKOFF = dt.timedelta(hours=24)
# A claimed feed whose task never ran is due again after this long.
FEED_LEASE = dt.timedelta(minutes=10)
MEMBERS_ONLY_TAGS = {"members-only", "members only", "membersonly", "premium"}
TRACKING_PARAMS = {"fbclid", "gclid", "mc_cid", "mc_eid", "igshid", "ref_src", "_hsenc", "_hsmi"}

# Tags kept in article bodies: text structure, links, images and simple tables; nothing that runs or styles.
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "em", "figcaption", "figure",
    "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p", "pre", "q", "s", "small", "strong", "sub",
    "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
# Removed with everything inside them, not just unwrapped.
REMOVED_WITH_CONTENT = {"script", "style", "iframe", "noscript", "object", "template", "svg", "math", "select"}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
}
URL_SCHEMES = {"http", "https", "mailto"}
_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\salt=)([^>]*)>")
_LEADING_FIGURE = re.compile(
    r'^\s*<figure>\s*<img[^>]*?src="([^"]*)"[^>]*>\s*(?:<figcaption>(.*?)</figcaption>)?\s*</figure>', re.S
)


class FetchOutcome(enum.StrEnum):
    UPDATED = "updated"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"
    SKIPPED = "skipped"


class BadApiKey(Exception):
    """The bearer token is missing, unknown, wrong or revoked; the message says which."""


class FeedError(Exception):
    """A feed could not be fetched or read; recorded on the feed, never raised past it."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ArticleData:
    """An article as a source gives it. None means "the source does not say": the stored value stays."""

    title: str
    url: str
    guid: str | None = None
    summary: str | None = None
    body: str | None = None
    authors: list[str] | None = None
    tags: list[str] | None = None
    published_at: dt.datetime | None = None
    image_url: str | None = None
    image_caption: str | None = None
    members_only: bool | None = None


@dataclass
class Saved:
    """What an upsert did."""

    article_id: int
    created: bool
    changed: bool


@dataclass
class FetchResult:
    """What one fetch of one feed did."""

    feed_id: int
    outcome: FetchOutcome
    created: int = 0
    updated: int = 0
    skipped_entries: int = 0
    error: str = ""
    article_ids: list[int] = field(default_factory=list)


def _config():
    return current_app.config["HERALD"]


# --- Cleaning -----------------------------------------------------------------------------------


def canonical_url(raw: str, base: str | None = None) -> str:
    """Return the URL that identifies a story: absolute http(s), no fragment, no tracking parameters."""
    value = (raw or "").strip()
    if base:
        value = urljoin(base, value)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput("The URL must be an absolute http:// or https:// address.", "url")
    host = parts.hostname.lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in {("http", 80), ("https", 443)} else f"{host}:{port}"
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS
    ]
    url = urlunsplit((scheme, netloc, parts.path or "/", urlencode(query), ""))
    if len(url) > MAX_URL:
        raise InvalidInput(f"The URL is longer than {MAX_URL} characters.", "url")
    return url


def _http_url(raw: str | None, base: str | None = None) -> str:
    """An absolute http(s) URL for an image, or "" when it is missing, relative to nothing, or too long."""
    value = (raw or "").strip()
    if base:
        value = urljoin(base, value)
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or len(value) > MAX_URL:
        return ""
    return value


def _attribute_filter(base: str | None):
    def check(tag: str, attribute: str, value: str) -> str | None:
        if attribute in {"href", "src", "cite"}:
            absolute = urljoin(base, value.strip()) if base else value.strip()
            scheme = urlsplit(absolute).scheme.lower()
            if scheme not in URL_SCHEMES or (scheme != "mailto" and not urlsplit(absolute).hostname):
                return None
            return absolute
        if attribute in {"colspan", "rowspan", "start"}:
            return value if value.isdigit() and len(value) < 4 else None
        return value

    return check


def sanitize_html(raw: str, base_url: str | None = None) -> str:
    """Return third-party HTML with only structure, links and images; scripts, styles and handlers gone."""
    if not raw:
        return ""
    cleaned = nh3.clean(
        raw,
        tags=ALLOWED_TAGS,
        clean_content_tags=REMOVED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_attribute_filter(base_url),
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    # Every image needs alt text for screen readers; an unexplained one is decorative.
    return _IMG_WITHOUT_ALT.sub(r'<img alt=""\1>', cleaned).strip()


def plain_text(raw: str | None) -> str:
    """Return the text of an HTML fragment on one line: no tags, entities decoded, whitespace collapsed."""
    if not raw:
        return ""
    text = nh3.clean(raw, tags=set(), clean_content_tags=REMOVED_WITH_CONTENT)
    return " ".join(html.unescape(text).split())


def shorten(text: str, limit: int) -> str:
    """Cut text at a word boundary to at most `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-") + "…"


def _labels(values: list[str] | None, limit: int) -> list[str] | None:
    if values is None:
        return None
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        label = shorten(" ".join(str(value).split()), MAX_LABEL)
        if label and label.casefold() not in seen:
            seen.add(label.casefold())
            out.append(label)
    return out[:limit]


def clean_article(data: ArticleData, base_url: str | None = None) -> ArticleData:
    """Validate and normalize an article from any source, or raise InvalidInput naming the field."""
    title = shorten(plain_text(data.title), MAX_TITLE)
    if not title:
        raise InvalidInput("The article has no title.", "title")
    url = canonical_url(data.url, base_url)
    guid = (data.guid or "").strip() or None
    if guid is not None and len(guid) > MAX_GUID:
        raise InvalidInput(f"The guid is longer than {MAX_GUID} characters.", "guid")
    body = None if data.body is None else sanitize_html(data.body, url)
    image_url = None if data.image_url is None else _http_url(data.image_url, url)
    caption = data.image_caption
    if body:
        # Feeds often open the body with the picture we already show above it: keep its caption, drop it.
        lead = _LEADING_FIGURE.match(body)
        if lead and (not image_url or html.unescape(lead.group(1)) == image_url):
            image_url = image_url or html.unescape(lead.group(1))
            caption = caption or plain_text(lead.group(2) or "")
            body = body[lead.end():].strip()
    if body is not None and len(body) > MAX_BODY:
        log.warning("dropping a body of %d characters from %s", len(body), url)
        body = ""
    summary = None if data.summary is None else plain_text(data.summary)
    if not summary and body:
        summary = plain_text(body)
    published = data.published_at
    if published is not None and published.tzinfo is None:
        raise InvalidInput("The publication time needs a time zone.", "published_at")
    return ArticleData(
        title=title,
        url=url,
        guid=guid,
        summary=None if summary is None else shorten(summary, MAX_SUMMARY),
        body=body,
        authors=_labels(data.authors, MAX_AUTHORS),
        tags=_labels(data.tags, MAX_TAGS),
        published_at=published.astimezone(dt.UTC) if published else None,
        image_url=image_url,
        image_caption=None if caption is None else shorten(plain_text(caption), MAX_CAPTION),
        members_only=data.members_only,
    )


# --- Upsert -------------------------------------------------------------------------------------


def _find(guid: str | None, url: str) -> Article | None:
    if guid:
        found = db.session.scalar(select(Article).where(Article.guid == guid))
        if found is not None:
            return found
    return db.session.scalar(select(Article).where(Article.url == url))


def _taken(column, value, article_id: int) -> bool:
    return db.session.scalar(select(Article.id).where(column == value, Article.id != article_id)) is not None


def _apply(article: Article, data: ArticleData) -> bool:
    """Copy what the source says onto the article; return whether anything changed."""
    changed = False

    def put(name: str, value) -> None:
        nonlocal changed
        if value is not None and getattr(article, name) != value:
            setattr(article, name, value)
            changed = True

    put("title", data.title)
    put("summary", data.summary)
    # A source without a body (a feed of summaries) must not erase the body the CMS sent.
    put("body", data.body or None)
    put("authors", data.authors or None)
    put("tags", data.tags or None)
    put("published_at", data.published_at)
    put("image_url", data.image_url or None)
    put("image_caption", data.image_caption or None)
    put("members_only", data.members_only)
    if data.url != article.url and not _taken(Article.url, data.url, article.id):
        put("url", data.url)
    if article.guid is None and data.guid and not _taken(Article.guid, data.guid, article.id):
        # The first source's guid stays; a second source's differing guid still finds it by URL.
        put("guid", data.guid)
    return changed


def upsert_article(data: ArticleData, source: ArticleSource, feed_id: int | None = None,
                   now: dt.datetime | None = None) -> Saved:
    """Insert or update a cleaned article by guid, then canonical URL; the caller commits."""
    now = now or utcnow()
    existing = _find(data.guid, data.url)
    if existing is None:
        article = Article(
            guid=data.guid, url=data.url, title=data.title, summary=data.summary or "", body=data.body or "",
            authors=data.authors or [], tags=data.tags or [], published_at=data.published_at or now,
            image_url=data.image_url or "", image_caption=data.image_caption or "",
            members_only=bool(data.members_only), source=source, feed_id=feed_id, created_at=now, updated_at=now,
        )
        try:
            with db.session.begin_nested():
                db.session.add(article)
            return Saved(article.id, created=True, changed=True)
        except IntegrityError:
            # The same story arrived by another path in the same instant: update that row instead.
            existing = _find(data.guid, data.url)
            if existing is None:
                raise
    changed = _apply(existing, data)
    if changed:
        existing.updated_at = now
    db.session.flush()
    return Saved(existing.id, created=False, changed=changed)


def save_article(data: ArticleData, source: ArticleSource, now: dt.datetime | None = None) -> Saved:
    """Validate and store one article (the CMS push, the demo loader); all of it or nothing."""
    try:
        saved = upsert_article(clean_article(data), source, now=now)
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    return saved


def recent_articles(limit: int = 50) -> list[Article]:
    """Return the newest articles, for editors choosing what to add to an edition."""
    return list(db.session.scalars(select(Article).order_by(Article.published_at.desc(), Article.id.desc())
                                   .limit(limit)))


# --- The CMS payload ----------------------------------------------------------------------------

PAYLOAD_FIELDS = {
    "guid", "url", "title", "summary", "body", "authors", "tags", "sections", "published_at",
    "image_url", "image_caption", "members_only",
}


def _string(payload: dict, name: str, required: bool = False, limit: int | None = None) -> str | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"'{name}' is required.", name)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string.", name)
    if required and not value.strip():
        raise InvalidInput(f"'{name}' must not be empty.", name)
    if limit is not None and len(value) > limit:
        raise InvalidInput(f"'{name}' is longer than {limit} characters.", name)
    return value


def _string_list(payload: dict, name: str) -> list[str] | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"'{name}' must be a list of strings.", name)
    return value


def parse_time(value: str, name: str = "published_at") -> dt.datetime:
    """Read an ISO 8601 time with a UTC offset ("Z" allowed), or raise InvalidInput."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"'{name}' is not an ISO 8601 date and time, e.g. 2026-11-13T10:00:00+02:00.",
                           name) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"'{name}' needs a UTC offset, e.g. 2026-11-13T10:00:00+02:00.", name)
    return parsed


def article_from_payload(payload: object) -> ArticleData:
    """Turn a CMS's JSON object into a clean ArticleData, or raise InvalidInput naming the wrong field."""
    if not isinstance(payload, dict):
        raise InvalidInput("The body must be a JSON object.", "")
    unknown = sorted(set(payload) - PAYLOAD_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown field '{unknown[0]}'.", str(unknown[0]))
    members_only = payload.get("members_only")
    if members_only is not None and not isinstance(members_only, bool):
        raise InvalidInput("'members_only' must be true or false.", "members_only")
    published = _string(payload, "published_at")
    tags = _string_list(payload, "tags")
    sections = _string_list(payload, "sections")
    data = ArticleData(
        title=_string(payload, "title", required=True, limit=MAX_TITLE),
        url=_string(payload, "url", required=True, limit=MAX_URL),
        guid=_string(payload, "guid", limit=MAX_GUID),
        summary=_string(payload, "summary", limit=20_000),
        body=_string(payload, "body", limit=MAX_BODY),
        authors=_string_list(payload, "authors"),
        tags=None if tags is None and sections is None else (sections or []) + (tags or []),
        published_at=parse_time(published) if published is not None else None,
        image_url=_string(payload, "image_url", limit=MAX_URL),
        image_caption=_string(payload, "image_caption", limit=2_000),
        members_only=members_only,
    )
    if data.image_url and not _http_url(data.image_url):
        raise InvalidInput("'image_url' must be an absolute http:// or https:// address.", "image_url")
    return clean_article(data)


# --- API keys -----------------------------------------------------------------------------------

API_KEY_PREFIX = "hrld_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(name: str) -> tuple[ApiKey, str]:
    """Create a key for a CMS; return it and the token, which is shown once and never stored."""
    name = " ".join((name or "").split())
    if not name:
        raise InvalidInput("Give the key a name, e.g. the CMS it is for.", "name")
    prefix = secrets.token_hex(4)
    token = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(name=name[:120], prefix=prefix, token_hash=_hash(token))
    db.session.add(key)
    db.session.commit()
    return key, token


def revoke_api_key(prefix_or_id: str, now: dt.datetime | None = None) -> ApiKey:
    """Revoke a key by its visible prefix or id; revoking twice is harmless."""
    key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix_or_id))
    if key is None and prefix_or_id.isdigit():
        key = db.session.get(ApiKey, int(prefix_or_id))
    if key is None:
        raise InvalidInput(f"No API key {prefix_or_id!r}.", "key")
    key.revoked_at = key.revoked_at or now or utcnow()
    db.session.commit()
    return key


def list_api_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.id)))


def check_api_key(token: str, now: dt.datetime | None = None) -> ApiKey:
    """Return the live key a bearer token belongs to, or raise BadApiKey saying what is wrong."""
    match = re.fullmatch(rf"{API_KEY_PREFIX}([0-9a-f]{{8}})_[A-Za-z0-9_-]{{20,}}", token or "")
    key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1))) if match else None
    # Compare hashes in constant time, so response timing says nothing about a guessed token.
    if key is None or not secrets.compare_digest(key.token_hash, _hash(token)):
        raise BadApiKey("The API key is not valid.")
    if key.revoked_at is not None:
        raise BadApiKey("The API key has been revoked.")
    key.last_used_at = now or utcnow()
    return key


# --- Feeds --------------------------------------------------------------------------------------


def add_feed(url: str, name: str = "", interval_minutes: int | None = None, members_only: bool = False) -> Feed:
    """Add a feed to poll, first fetched on the next tick."""
    try:
        clean = canonical_url(url)
    except InvalidInput as exc:
        raise InvalidInput(str(exc), "url") from None
    # Keep the query string as given: for a feed, parameters may select the feed itself.
    url = url.strip() if urlsplit(url.strip()).query else clean
    interval = interval_minutes or _config().FEED_INTERVAL_MINUTES
    if interval < 1:
        raise InvalidInput("The interval must be at least one minute.", "interval")
    if db.session.scalar(select(Feed.id).where(Feed.url == url)) is not None:
        raise InvalidInput("That feed is already there.", "url")
    feed = Feed(url=url, name=" ".join(name.split())[:200], interval_minutes=interval, members_only=members_only)
    db.session.add(feed)
    db.session.commit()
    return feed


def remove_feed(feed_id: int) -> None:
    """Stop polling a feed; its articles stay."""
    feed = db.session.get(Feed, feed_id)
    if feed is None:
        raise InvalidInput(f"No feed {feed_id}.", "feed")
    db.session.delete(feed)
    db.session.commit()


def list_feeds() -> list[Feed]:
    return list(db.session.scalars(select(Feed).order_by(Feed.id)))


def claim_due_feeds(now: dt.datetime | None = None, limit: int = 100) -> list[int]:
    """Claim feeds whose time has come by moving their next fetch a lease ahead; return their ids.

    A second tick running at once finds them claimed; a claimed feed whose task was lost is due
    again when the lease runs out.
    """
    now = now or utcnow()
    due = list(db.session.scalars(
        select(Feed.id).where(Feed.active, Feed.next_fetch_at <= now).order_by(Feed.next_fetch_at).limit(limit)
    ))
    claimed = []
    for feed_id in due:
        result = db.session.execute(
            update(Feed).where(Feed.id == feed_id, Feed.next_fetch_at <= now).values(next_fetch_at=now + FEED_LEASE)
        )
        if result.rowcount == 1:
            claimed.append(feed_id)
    db.session.commit()
    return claimed


def _download(feed: Feed) -> tuple[int, dict[str, str], bytes, str]:
    """GET the feed conditionally, reading at most FEED_MAX_BYTES; return (status, headers, body, final URL)."""
    config = _config()
    headers = {
        "User-Agent": f"Herald/1.0 (+{config.BASE_URL})",
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
    }
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    timeout = config.FEED_TIMEOUT
    limit = config.FEED_MAX_BYTES
    started = time.monotonic()
    try:
        with requests.get(feed.url, headers=headers, timeout=(timeout, timeout), stream=True) as response:
            status = response.status_code
            if status == 304:
                return status, dict(response.headers), b"", response.url
            if status >= 400:
                raise FeedError(f"HTTP {status} {response.reason}".strip(), _retry_after(response.headers))
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise FeedError(f"feed is {declared} bytes, more than the {limit} we read")
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise FeedError(f"feed is larger than the {limit} bytes we read")
                # The timeout bounds each wait for bytes; this bounds a server that drips them forever.
                if time.monotonic() - started > 3 * timeout:
                    raise FeedError(f"feed took longer than {3 * timeout:g} seconds to download")
                chunks.append(chunk)
            return status, dict(response.headers), b"".join(chunks), response.url
    except requests.Timeout:
        raise FeedError(f"timed out after {timeout:g} seconds") from None
    except requests.RequestException as exc:
        raise FeedError(f"could not fetch: {type(exc).__name__}: {exc}"[:1000]) from None


def _retry_after(headers) -> float | None:
    value = (headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max((when - utcnow()).total_seconds(), 0.0) if when.tzinfo else None


def _parse(body: bytes, url: str, content_type: str) -> feedparser.FeedParserDict:
    # Relative links in an item are resolved against the item's own URL when it is sanitized, as readers do.
    parsed = feedparser.parse(body, response_headers={"content-location": url, "content-type": content_type},
                              resolve_relative_uris=False)
    if not parsed.get("version"):
        reason = parsed.get("bozo_exception") or "no RSS or Atom document found"
        raise FeedError(f"not a valid RSS or Atom feed: {reason}"[:1000])
    if parsed.get("bozo") and not parsed.entries:
        raise FeedError(f"malformed feed: {parsed.get('bozo_exception')}"[:1000])
    return parsed


def _entry_time(entry) -> dt.datetime | None:
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not stamp:
        return None
    # feedparser gives UTC struct_times; timegm reads them as such.
    return dt.datetime.fromtimestamp(calendar.timegm(stamp), dt.UTC)


def _entry_image(entry) -> str | None:
    for media in entry.get("media_content", []) + entry.get("media_thumbnail", []):
        kind = media.get("medium") or media.get("type") or "image"
        if media.get("url") and kind.startswith("image"):
            return media["url"]
    for link in entry.get("links", []):
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/"):
            return link.get("href")
    return None


def _entry_article(entry, feed: Feed) -> ArticleData:
    body = None
    for content in entry.get("content", []):
        if content.get("type") in {"text/html", "application/xhtml+xml", "text/plain"} and content.get("value"):
            body = content["value"] if content["type"] != "text/plain" else f"<p>{html.escape(content['value'])}</p>"
            break
    tags = [t.get("term") or t.get("label") or "" for t in entry.get("tags", [])]
    flagged = any(t.strip().casefold() in MEMBERS_ONLY_TAGS for t in tags)
    authors = [a.get("name", "") for a in entry.get("authors", []) if a.get("name")]
    return ArticleData(
        title=entry.get("title", ""),
        url=entry.get("link", ""),
        guid=entry.get("id") or None,
        summary=entry.get("summary"),
        body=body,
        authors=authors or None,
        tags=[t for t in tags if t.strip().casefold() not in MEMBERS_ONLY_TAGS] or None,
        published_at=_entry_time(entry),
        image_url=_entry_image(entry),
        members_only=True if (feed.members_only or flagged) else None,
    )


def _backoff(feed: Feed, retry_after: float | None) -> dt.timedelta:
    delay = min(dt.timedelta(minutes=feed.interval_minutes) * 2 ** min(feed.failures, 16), MAX_BACKOFF)
    if retry_after:
        delay = max(delay, min(dt.timedelta(seconds=retry_after), MAX_BACKOFF))
    return delay


def _record_failure(feed_id: int, message: str, now: dt.datetime, retry_after: float | None = None) -> FetchResult:
    db.session.rollback()
    feed = db.session.get(Feed, feed_id)
    feed.failures += 1
    feed.last_error = message[:2000]
    feed.last_fetched_at = now
    feed.next_fetch_at = now + _backoff(feed, retry_after)
    db.session.commit()
    log.warning("feed %s failed (%d in a row): %s", feed_id, feed.failures, message)
    return FetchResult(feed_id, FetchOutcome.FAILED, error=feed.last_error)


def fetch_feed(feed_id: int, now: dt.datetime | None = None) -> FetchResult:
    """Fetch one feed and upsert its entries; a failure is recorded on the feed with a backoff, never raised."""
    now = now or utcnow()
    feed = db.session.get(Feed, feed_id)
    if feed is None or not feed.active:
        return FetchResult(feed_id, FetchOutcome.SKIPPED)
    try:
        status, headers, body, final_url = _download(feed)
        if status == 304:
            feed.last_fetched_at = feed.last_success_at = now
            feed.failures, feed.last_error = 0, ""
            feed.next_fetch_at = now + dt.timedelta(minutes=feed.interval_minutes)
            db.session.commit()
            return FetchResult(feed_id, FetchOutcome.NOT_MODIFIED)
        parsed = _parse(body, final_url, headers.get("Content-Type", ""))
        result = FetchResult(feed_id, FetchOutcome.UPDATED)
        for entry in parsed.entries:
            try:
                data = clean_article(_entry_article(entry, feed), final_url)
            except InvalidInput as exc:
                result.skipped_entries += 1
                log.info("feed %s: skipped an entry: %s", feed_id, exc)
                continue
            saved = upsert_article(data, ArticleSource.FEED, feed_id=feed.id, now=now)
            result.article_ids.append(saved.article_id)
            result.created += saved.created
            result.updated += saved.changed and not saved.created
        # Validators are kept only once the content is stored: a 304 must never hide entries we lost.
        feed.etag = (headers.get("ETag") or "")[:512]
        feed.last_modified = (headers.get("Last-Modified") or "")[:128]
        feed.name = feed.name or shorten(plain_text(parsed.feed.get("title", "")), 200)
        feed.last_fetched_at = feed.last_success_at = now
        feed.failures, feed.last_error = 0, ""
        feed.next_fetch_at = now + dt.timedelta(minutes=feed.interval_minutes)
        db.session.commit()
    except FeedError as exc:
        return _record_failure(feed_id, str(exc), now, exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - one feed's odd data must not stop the others; recorded and logged
        log.exception("feed %s: unexpected error", feed_id)
        return _record_failure(feed_id, f"unexpected error: {type(exc).__name__}: {exc}", now)
    log.info("feed %s: %d new, %d updated", feed_id, result.created, result.updated)
    return result


def ingest_feeds(now: dt.datetime | None = None, feed_ids: list[int] | None = None) -> list[FetchResult]:
    """Fetch the given feeds (default: every active feed) now, one after another."""
    if feed_ids is None:
        feed_ids = list(db.session.scalars(select(Feed.id).where(Feed.active).order_by(Feed.id)))
    return [fetch_feed(feed_id, now) for feed_id in feed_ids]
