"""Staff's editorial actions, each recorded in the audit log: newsletters, schedules, drafts, articles, feeds, keys."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from newsletter import articles, digests, schedules
from newsletter.addresses import InvalidInput, normalize_email
from newsletter.extensions import db
from newsletter.models import (
    ApiKey,
    Article,
    ArticleSource,
    AuditAction,
    Edition,
    EditionStatus,
    Feed,
    Newsletter,
    Schedule,
    utcnow,
)
from newsletter.staff import audit
from newsletter.staff.audit import Actor

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


# --- Newsletters --------------------------------------------------------------------------------


@dataclass
class NewsletterForm:
    slug: str
    name: str
    description: str = ""
    frequency: str = ""
    sender_name: str = ""
    sender_email: str = ""
    list_id: str = ""
    position: int = 0
    active: bool = True


def _clean_newsletter(form: NewsletterForm, base_host: str, newsletter_id: int | None) -> dict:
    slug = form.slug.strip().lower()
    if not SLUG_RE.fullmatch(slug):
        raise InvalidInput("The short name may use a-z, 0-9 and hyphens, like daily or war-weekly.", "slug")
    name = " ".join(form.name.split())
    if not name or len(name) > 120:
        raise InvalidInput("Give the newsletter a name of at most 120 characters.", "name")
    sender_email = form.sender_email.strip()
    if sender_email:
        try:
            sender_email = normalize_email(sender_email).email
        except InvalidInput:
            raise InvalidInput("The sender address is not a valid email address.", "sender_email") from None
    list_id = form.list_id.strip().lower() or f"{slug}.list-id.{base_host}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{2,250}", list_id) or "." not in list_id:
        raise InvalidInput("The List-Id is a dotted name like daily.list-id.news.example.com.", "list_id")
    for column, value, label, field in ((Newsletter.slug, slug, "short name", "slug"),
                                         (Newsletter.list_id, list_id, "List-Id", "list_id")):
        clash = db.session.scalar(select(Newsletter.id).where(column == value))
        if clash is not None and clash != newsletter_id:
            raise InvalidInput(f"Another newsletter already has that {label}.", field)
    return {
        "slug": slug, "name": name, "description": form.description.strip()[:2000],
        "frequency": " ".join(form.frequency.split())[:120], "sender_name": " ".join(form.sender_name.split())[:120],
        "sender_email": sender_email, "list_id": list_id, "position": form.position, "active": form.active,
    }


def create_newsletter(form: NewsletterForm, base_url: str, actor: Actor) -> Newsletter:
    """Create a newsletter readers can choose at signup."""
    values = _clean_newsletter(form, urlsplit(base_url).hostname or "localhost", None)
    newsletter = Newsletter(**values)
    db.session.add(newsletter)
    db.session.flush()
    audit.record(actor, AuditAction.NEWSLETTER_CREATED, f"newsletter {newsletter.id}", newsletter.name)
    db.session.commit()
    return newsletter


def update_newsletter(newsletter_id: int, form: NewsletterForm, base_url: str, actor: Actor) -> Newsletter:
    """Change a newsletter; its List-Id should stay stable for the list's life, so staff are warned in the form."""
    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is None:
        raise InvalidInput(f"No newsletter {newsletter_id}.", "newsletter")
    values = _clean_newsletter(form, urlsplit(base_url).hostname or "localhost", newsletter_id)
    changed = [k for k, v in values.items() if getattr(newsletter, k) != v]
    for key, value in values.items():
        setattr(newsletter, key, value)
    if changed:
        audit.record(actor, AuditAction.NEWSLETTER_CHANGED, f"newsletter {newsletter.id}",
                     f"{newsletter.name}: {', '.join(changed)}")
    db.session.commit()
    return newsletter


def list_newsletters() -> list[Newsletter]:
    return list(db.session.scalars(select(Newsletter).order_by(Newsletter.position, Newsletter.id)))


# --- Schedules ----------------------------------------------------------------------------------


def next_run_times(days: str, at: str, timezone: str, count: int = 5,
                   after: dt.datetime | None = None) -> list[dt.datetime]:
    """The next `count` runs of a schedule not yet saved, in UTC; raises InvalidInput like saving would."""
    day_list = schedules.parse_days(days)
    local = schedules.parse_local_time(at)
    zone = schedules.parse_timezone(timezone).key
    when = after or utcnow()
    out = []
    for _ in range(count):
        when = schedules.next_run_after(day_list, local, zone, when)
        out.append(when)
    return out


def create_schedule(actor: Actor, newsletter_id: int, **values) -> Schedule:
    """Create a schedule (see schedules.create_schedule) and record who did."""
    schedule = schedules.create_schedule(newsletter_id, **values)
    audit.record_now(actor, AuditAction.SCHEDULE_CREATED, f"schedule {schedule.id}",
                     f"{schedule.newsletter.name}: {schedules.describe(schedule)}")
    return schedule


def update_schedule(actor: Actor, schedule_id: int, **changes) -> Schedule:
    """Change a schedule (see schedules.update_schedule) and record who did."""
    schedule = schedules.update_schedule(schedule_id, **changes)
    audit.record_now(actor, AuditAction.SCHEDULE_CHANGED, f"schedule {schedule.id}",
                     f"{schedule.newsletter.name}: {schedules.describe(schedule)}"
                     + ("" if schedule.enabled else " (disabled)"))
    return schedule


# --- Drafts -------------------------------------------------------------------------------------


def draft_next_edition(schedule_id: int, actor: Actor, now: dt.datetime | None = None) -> Edition:
    """Make the draft of a schedule's next run now, ahead of the tick, so editors can review it early.

    It is the same edition the tick would make for that run (one per schedule and time, by the unique
    key): asking twice, or the tick arriving later, finds it made.
    """
    now = now or utcnow()
    schedule = db.session.get(Schedule, schedule_id)
    if schedule is None:
        raise InvalidInput(f"No schedule {schedule_id}.", "schedule")
    if not schedule.enabled or schedule.next_run_at is None:
        raise InvalidInput("That schedule is switched off: switch it on to draft its next edition.", "schedule")
    run_at = schedule.next_run_at
    values = {"newsletter_id": schedule.newsletter_id, "schedule_id": schedule.id, "run_at": run_at,
              "status": EditionStatus.DRAFT, "subject": "", "note": "", "created_at": now, "updated_at": now}
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    edition_id = db.session.scalar(
        insert(Edition).values(**values).on_conflict_do_nothing(index_elements=["schedule_id", "run_at"])
        .returning(Edition.id)
    )
    if edition_id is None:
        db.session.rollback()
        existing = db.session.scalar(select(Edition).where(Edition.schedule_id == schedule.id,
                                                            Edition.run_at == run_at))
        return existing
    digests.fill_draft(edition_id, now)
    audit.record(actor, AuditAction.EDITION_DRAFTED, f"edition {edition_id}",
                 f"{schedule.newsletter.name}: drafted ahead for {run_at:%Y-%m-%d %H:%M} UTC")
    db.session.commit()
    return db.session.get(Edition, edition_id)


def _edition_audit(actor: Actor, edition_id: int, summary: str) -> None:
    audit.record_now(actor, AuditAction.EDITION_CHANGED, f"edition {edition_id}", summary)


def set_edition_subject(edition_id: int, subject: str, actor: Actor) -> Edition:
    edition = digests.set_subject(edition_id, subject)
    _edition_audit(actor, edition_id, f"subject: {edition.subject or '(from the schedule)'}")
    return edition


def add_edition_article(edition_id: int, article_id: int, actor: Actor) -> Edition:
    edition = digests.add_article(edition_id, article_id)
    _edition_audit(actor, edition_id, f"added article {article_id}")
    return edition


def remove_edition_article(edition_id: int, article_id: int, actor: Actor) -> Edition:
    edition = digests.remove_article(edition_id, article_id)
    _edition_audit(actor, edition_id, f"removed article {article_id}")
    return edition


def move_edition_article(edition_id: int, article_id: int, position: int, actor: Actor) -> Edition:
    edition = digests.move_article(edition_id, article_id, position)
    _edition_audit(actor, edition_id, f"moved article {article_id} to position {position + 1}")
    return edition


def cancel_draft(edition_id: int, actor: Actor) -> Edition:
    edition = digests.cancel_edition(edition_id, f"cancelled by {actor.email}")
    audit.record_now(actor, AuditAction.EDITION_CANCELLED, f"edition {edition_id}", "draft cancelled")
    return edition


def candidate_articles(edition: Edition, limit: int = 40) -> list[Article]:
    """Recent articles an editor may add to a draft: not already in it, newest first."""
    inside = {item.article_id for item in edition.items}
    query = select(Article).order_by(Article.published_at.desc(), Article.id.desc()).limit(limit + len(inside))
    return [a for a in db.session.scalars(query) if a.id not in inside][:limit]


# --- Articles -----------------------------------------------------------------------------------


@dataclass
class ArticleFilter:
    q: str = ""
    members_only: bool | None = None
    source: ArticleSource | None = None
    feed_id: int | None = None


def search_articles(f: ArticleFilter, page: int = 1, per_page: int = 50) -> tuple[list[Article], int]:
    query = select(Article)
    if f.q:
        needle = f.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(func.lower(Article.title).like(f"%{needle}%", escape="\\"),
                                func.lower(Article.url).like(f"%{needle}%", escape="\\")))
    if f.members_only is not None:
        query = query.where(Article.members_only.is_(f.members_only))
    if f.source is not None:
        query = query.where(Article.source == f.source)
    if f.feed_id:
        query = query.where(Article.feed_id == f.feed_id)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(query.order_by(Article.published_at.desc(), Article.id.desc())
                              .offset((max(page, 1) - 1) * per_page).limit(per_page))
    return list(rows), total


def set_members_only(article_id: int, members_only: bool, actor: Actor) -> Article:
    """Mark an article for members only (non-members see its title and a teaser) or open it to everyone."""
    article = db.session.get(Article, article_id)
    if article is None:
        raise InvalidInput(f"No article {article_id}.", "article")
    if article.members_only != members_only:
        article.members_only = members_only
        article.updated_at = utcnow()
        audit.record(actor, AuditAction.ARTICLE_CHANGED, f"article {article_id}",
                     f"{'members only' if members_only else 'open to all'}: {article.title[:200]}")
    db.session.commit()
    return article


def add_article(data: articles.ArticleData, actor: Actor) -> int:
    """Add an article by hand (one the feeds do not carry); return its id."""
    saved = articles.save_article(data, ArticleSource.MANUAL)
    audit.record_now(actor, AuditAction.ARTICLE_ADDED, f"article {saved.article_id}",
                     ("added: " if saved.created else "updated: ") + data.title[:200])
    return saved.article_id


# --- Feeds and API keys -------------------------------------------------------------------------


def add_feed(actor: Actor, url: str, name: str, interval_minutes: int | None, members_only: bool) -> Feed:
    feed = articles.add_feed(url, name=name, interval_minutes=interval_minutes, members_only=members_only)
    audit.record_now(actor, AuditAction.FEED_ADDED, f"feed {feed.id}", feed.url)
    return feed


def update_feed(feed_id: int, actor: Actor, *, name: str, interval_minutes: int, members_only: bool,
                active: bool) -> Feed:
    """Change how a feed is polled; switching it back on fetches it on the next tick and clears its backoff."""
    feed = db.session.get(Feed, feed_id)
    if feed is None:
        raise InvalidInput(f"No feed {feed_id}.", "feed")
    if interval_minutes < 1:
        raise InvalidInput("The interval must be at least one minute.", "interval")
    changes = []
    for attr, value in (("name", " ".join(name.split())[:200]), ("interval_minutes", interval_minutes),
                        ("members_only", members_only), ("active", active)):
        if getattr(feed, attr) != value:
            changes.append(attr)
            setattr(feed, attr, value)
    if "active" in changes and active:
        feed.next_fetch_at = utcnow()
    if changes:
        audit.record(actor, AuditAction.FEED_CHANGED, f"feed {feed.id}", f"{feed.url}: {', '.join(changes)}")
    db.session.commit()
    return feed


def remove_feed(feed_id: int, actor: Actor) -> None:
    feed = db.session.get(Feed, feed_id)
    url = feed.url if feed else str(feed_id)
    articles.remove_feed(feed_id)
    audit.record_now(actor, AuditAction.FEED_REMOVED, f"feed {feed_id}", url)


def create_api_key(name: str, actor: Actor) -> tuple[ApiKey, str]:
    """Create a CMS key; the token is returned once, for the page to show, and never stored."""
    key, token = articles.create_api_key(name)
    audit.record_now(actor, AuditAction.API_KEY_CREATED, f"api key {key.id}", f"{key.name} ({key.prefix})")
    return key, token


def revoke_api_key(key_id: int, actor: Actor) -> ApiKey:
    key = articles.revoke_api_key(str(key_id))
    audit.record_now(actor, AuditAction.API_KEY_REVOKED, f"api key {key.id}", f"{key.name} ({key.prefix})")
    return key
