"""The newsroom's content and its editions: feeds, articles, CMS API keys, schedules, editions, renderings."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, Time, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.extensions import db
from newsletter.models.base import UTCDateTime, utcnow
from newsletter.models.subscribers import Newsletter, _enum


class ArticleSource(enum.StrEnum):
    FEED = "feed"
    API = "api"
    # Loaded by `flask demo-data` or by hand.
    MANUAL = "manual"


class EditionStatus(enum.StrEnum):
    # Chosen ahead of its time and still editable by staff.
    DRAFT = "draft"
    # Rendered once per audience; content can no longer change. The sending engine takes it from here.
    FROZEN = "frozen"
    SENDING = "sending"
    SENT = "sent"
    # Its time came and there was nothing new to send.
    SKIPPED = "skipped"
    # Its time passed while the scheduler was down for longer than the grace period.
    MISSED = "missed"
    CANCELLED = "cancelled"


# Editions whose articles count as used: an article in one of these is not offered again.
LIVE_EDITION_STATUSES = (EditionStatus.DRAFT, EditionStatus.FROZEN, EditionStatus.SENDING, EditionStatus.SENT)


class Audience(enum.StrEnum):
    """Who a rendering is for: a digest is rendered once per audience, never once per reader."""

    MEMBER = "member"
    NON_MEMBER = "non_member"


class Feed(db.Model):
    """An RSS or Atom feed we poll, with its conditional-GET validators and its last error."""

    __tablename__ = "feeds"
    __table_args__ = (Index("ix_feeds_active_next_fetch", "active", "next_fetch_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    interval_minutes: Mapped[int] = mapped_column(Integer, default=15)
    # Every article from this feed is for members (a members' feed); single items may also say so.
    members_only: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    etag: Mapped[str] = mapped_column(String(512), default="")
    last_modified: Mapped[str] = mapped_column(String(128), default="")
    next_fetch_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_fetched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Empty while the feed works; the latest failure otherwise. Failures in a row drive the backoff.
    last_error: Mapped[str] = mapped_column(Text, default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Feed {self.id} {self.url}>"


class Article(db.Model):
    """One piece of journalism; the same story from a feed and from the CMS is one row."""

    __tablename__ = "articles"
    __table_args__ = (Index("ix_articles_published_at", "published_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The source's stable id (RSS guid, Atom id, CMS id); null when the source gives none.
    guid: Mapped[str | None] = mapped_column(String(512), unique=True)
    # The canonical URL: no fragment, no tracking parameters. The fallback identity.
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    # Plain text.
    summary: Mapped[str] = mapped_column(Text, default="")
    # Sanitized HTML; empty when the source only gives a summary.
    body: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list] = mapped_column(JSON, default=list)
    # Tags and sections together, as the source spells them; compared without regard to case.
    tags: Mapped[list] = mapped_column(JSON, default=list)
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    image_url: Mapped[str] = mapped_column(String(2048), default="")
    image_caption: Mapped[str] = mapped_column(String(1000), default="")
    members_only: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[ArticleSource] = mapped_column(_enum(ArticleSource, "article_source"))
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Article {self.id} {self.title[:30]!r}>"


class ApiKey(db.Model):
    """A CMS's key for the articles API, kept as a SHA-256 hash; the prefix finds it, the hash proves it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Schedule(db.Model):
    """When a newsletter's digest is built and sent, and what goes into it."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_enabled_next_run", "enabled", "next_run_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    # Comma-separated three-letter weekdays, "mon,tue,...", in the schedule's time zone.
    days: Mapped[str] = mapped_column(String(32))
    local_time: Mapped[dt.time] = mapped_column(Time)
    timezone: Mapped[str] = mapped_column(String(64))
    article_limit: Mapped[int] = mapped_column(Integer, default=10)
    include_tags: Mapped[list] = mapped_column(JSON, default=list)
    exclude_tags: Mapped[list] = mapped_column(JSON, default=list)
    # A Jinja expression template, e.g. "{{ newsletter.name }}: {{ top.title }}"; empty for the default.
    subject_template: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The next occurrence not yet claimed, in UTC; null while disabled.
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    newsletter: Mapped[Newsletter] = relationship()

    @property
    def weekdays(self) -> list[str]:
        return [d for d in self.days.split(",") if d]


class Edition(db.Model):
    """One issue of a newsletter; one per schedule and run time, enforced by the database."""

    __tablename__ = "editions"
    __table_args__ = (
        # Two beat processes or a retried tick can race to claim a run: only one row can win.
        UniqueConstraint("schedule_id", "run_at"),
        Index("ix_editions_status_run_at", "status", "run_at"),
        Index("ix_editions_newsletter_run_at", "newsletter_id", "run_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"))
    # When it is meant to go, in UTC.
    run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[EditionStatus] = mapped_column(_enum(EditionStatus, "edition_status"), default=EditionStatus.DRAFT)
    # An editor's subject; empty means the schedule's subject template (or the default) decides.
    subject: Mapped[str] = mapped_column(String(255), default="")
    # Set when staff first change the draft; an untouched draft is refreshed with newer articles at freeze.
    curated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Why it was skipped, missed, cancelled or made late, in words for the operator.
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    frozen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    newsletter: Mapped[Newsletter] = relationship(lazy="joined")
    items: Mapped[list[EditionArticle]] = relationship(
        back_populates="edition", cascade="all, delete-orphan", order_by="EditionArticle.position"
    )

    def __repr__(self) -> str:
        return f"<Edition {self.id} {self.status.value}>"


class EditionArticle(db.Model):
    """An article's place in an edition."""

    __tablename__ = "edition_articles"
    __table_args__ = (Index("ix_edition_articles_article", "article_id"),)

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    edition: Mapped[Edition] = relationship(back_populates="items")
    article: Mapped[Article] = relationship(lazy="joined")


class EditionRendering(db.Model):
    """The final subject, HTML and text of a frozen edition for one audience, with per-reader slots unfilled."""

    __tablename__ = "edition_renderings"

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    audience: Mapped[Audience] = mapped_column(_enum(Audience, "audience"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255))
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
