"""Editions: choose articles ahead of time, let editors change them, then freeze and render once per audience."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import css_inline
from flask import current_app, render_template
from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import delete, exists, select, update

from newsletter.addresses import InvalidInput
from newsletter.articles import shorten
from newsletter.extensions import db
from newsletter.models import (
    Article,
    Audience,
    Edition,
    EditionArticle,
    EditionRendering,
    EditionStatus,
    Newsletter,
    Schedule,
    utcnow,
)
from newsletter.models.content import LIVE_EDITION_STATUSES

log = logging.getLogger(__name__)

# Per-reader values, left in the rendering for the sending engine to fill (a contract with sending.py).
SLOT_NAME = "@@HERALD_NAME@@"
SLOT_UNSUBSCRIBE_URL = "@@HERALD_UNSUBSCRIBE_URL@@"
SLOT_PREFERENCES_URL = "@@HERALD_PREFERENCES_URL@@"
SLOTS = (SLOT_NAME, SLOT_UNSUBSCRIBE_URL, SLOT_PREFERENCES_URL)
_SLOT_RE = re.compile("|".join(re.escape(s) for s in SLOTS))

# Gmail clips HTML beyond ~102 KB; this leaves room for the filled slots and still stays under 100 KB.
HTML_BUDGET = 90_000
TEXT_WIDTH = 76
# How much of an article an item shows, from most to least; the budget lowers the last items first.
FULL, TEASER, SUMMARY, TITLE = 3, 2, 1, 0
_INLINER = css_inline.CSSInliner(keep_at_rules=True, minify_css=True, load_remote_stylesheets=False)


def _config():
    return current_app.config["HERALD"]


def fill_slots(s: str, values: dict[str, str]) -> str:
    """Replace every slot marker in one pass (a filled value is never scanned again); a missing one is an error.

    `values` is keyed by the markers; callers HTML-escape the name for the HTML part.
    """

    def value(match: re.Match) -> str:
        try:
            return values[match.group(0)]
        except KeyError:
            raise KeyError(f"no value for the slot {match.group(0)}") from None

    return _SLOT_RE.sub(value, s)


@dataclass(frozen=True)
class Rendering:
    """One audience's finished edition, per-reader slots still unfilled."""

    subject: str
    html: str
    text: str


# --- Text ---------------------------------------------------------------------------------------

_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "figure", "figcaption",
           "table", "tr", "pre", "hr"}
_PARAGRAPH = "\x00"


class _TextMaker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in _BLOCKS:
            self.parts.append(_PARAGRAPH)
        if tag == "li":
            self.parts.append("\n- ")
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "a":
            self.links.append((attributes.get("href") or "", len(self.parts)))
        elif tag == "img" and attributes.get("alt"):
            self.parts.append(f"[{attributes['alt']}]")
        elif tag in {"td", "th"}:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.parts[start:]).strip()
            if href.startswith(("http://", "https://")) and href != label:
                self.parts.append(f" ({href})")
        if tag in _BLOCKS:
            self.parts.append(_PARAGRAPH)

    def handle_data(self, data):
        self.parts.append(data)


def html_to_text(fragment: str, width: int = TEXT_WIDTH) -> str:
    """Return readable plain text for sanitized HTML: paragraphs, list dashes, links in brackets, wrapped."""
    maker = _TextMaker()
    maker.feed(fragment or "")
    maker.close()
    paragraphs = []
    for block in "".join(maker.parts).split(_PARAGRAPH):
        lines = [" ".join(line.split()) for line in block.split("\n")]
        lines = [textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) for line in lines if line]
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "") -> str:
    """Wrap one paragraph for the text version; URLs are never broken."""
    return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


# --- Choosing articles --------------------------------------------------------------------------


def _folded(tags: Iterable[str]) -> set[str]:
    return {t.casefold() for t in tags}


def choose_articles(newsletter_id: int, run_at: dt.datetime, *, now: dt.datetime | None = None,
                    schedule: Schedule | None = None, exclude_edition_id: int | None = None,
                    window_hours: float | None = None, limit: int | None = None) -> list[Article]:
    """Return an edition's articles: new to this newsletter, published in the window, filtered, newest first."""
    now = now or utcnow()
    config = _config()
    window = dt.timedelta(hours=config.ARTICLE_WINDOW_HOURS if window_hours is None else window_hours)
    used = (
        select(EditionArticle.article_id)
        .join(Edition, Edition.id == EditionArticle.edition_id)
        .where(
            EditionArticle.article_id == Article.id,
            Edition.newsletter_id == newsletter_id,
            Edition.status.in_(LIVE_EDITION_STATUSES),
        )
    )
    if exclude_edition_id is not None:
        used = used.where(Edition.id != exclude_edition_id)
    candidates = db.session.scalars(
        select(Article)
        .where(Article.published_at > run_at - window, Article.published_at <= max(run_at, now), ~exists(used))
        .order_by(Article.published_at.desc(), Article.id.desc())
        .limit(2000)
    )
    include = _folded(schedule.include_tags) if schedule else set()
    exclude = _folded(schedule.exclude_tags) if schedule else set()
    cap = config.MAX_EDITION_ARTICLES
    limit = min(limit or (schedule.article_limit if schedule else cap), cap)
    chosen = []
    for article in candidates:
        tags = _folded(article.tags or [])
        if (include and not tags & include) or tags & exclude:
            continue
        chosen.append(article)
        if len(chosen) >= limit:
            break
    return chosen


def _lock_newsletter(newsletter_id: int) -> None:
    # Two claims or freezes for one newsletter choosing at once would both see the same unused
    # articles; on PostgreSQL the newsletter's row lock makes them take turns (SQLite writes one at a time).
    db.session.execute(select(Newsletter.id).where(Newsletter.id == newsletter_id).with_for_update())


def _set_items(edition: Edition, articles: list[Article]) -> None:
    db.session.execute(delete(EditionArticle).where(EditionArticle.edition_id == edition.id))
    db.session.add_all(
        EditionArticle(edition_id=edition.id, article_id=a.id, position=i) for i, a in enumerate(articles)
    )
    db.session.flush()
    db.session.expire(edition, ["items"])


def _refresh(edition: Edition, now: dt.datetime) -> None:
    """Choose the edition's articles afresh, newsletter locked; the caller commits."""
    _lock_newsletter(edition.newsletter_id)
    schedule = db.session.get(Schedule, edition.schedule_id) if edition.schedule_id else None
    articles = choose_articles(edition.newsletter_id, edition.run_at, now=now, schedule=schedule,
                               exclude_edition_id=edition.id)
    _set_items(edition, articles)


def fill_draft(edition_id: int, now: dt.datetime | None = None) -> list[int]:
    """Choose the articles of a freshly claimed draft; the caller commits. Return the article ids."""
    now = now or utcnow()
    edition = db.session.get(Edition, edition_id)
    _refresh(edition, now)
    return [item.article_id for item in edition.items]


# --- Editing a draft ----------------------------------------------------------------------------


class EditionNotEditable(InvalidInput):
    """The edition is no longer a draft: it is frozen, sent, skipped, missed or cancelled."""


def _take_draft(edition_id: int, now: dt.datetime, curate: bool = True) -> Edition:
    """Lock a draft for a change, or raise: the guarded UPDATE takes the row (PostgreSQL) or the write lock
    (SQLite) before anything is read, so an edit and the freeze can never interleave."""
    result = db.session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.status == EditionStatus.DRAFT).values(updated_at=now)
    )
    edition = db.session.get(Edition, edition_id, populate_existing=True)
    if result.rowcount == 1 and curate and edition.curated_at is None:
        edition.curated_at = now
    if result.rowcount != 1:
        db.session.rollback()
        if edition is None:
            raise InvalidInput(f"No edition {edition_id}.", "edition")
        raise EditionNotEditable(f"Edition {edition_id} is {edition.status.value}; only a draft can change.",
                                 "edition")
    return edition


def add_article(edition_id: int, article_id: int, position: int | None = None,
                now: dt.datetime | None = None) -> Edition:
    """Put an article into a draft, at `position` (0 is the top) or at the end."""
    now = now or utcnow()
    edition = _take_draft(edition_id, now)
    article = db.session.get(Article, article_id)
    ids = [item.article_id for item in edition.items]
    if article is None:
        db.session.rollback()
        raise InvalidInput(f"No article {article_id}.", "article")
    if article_id in ids:
        db.session.rollback()
        raise InvalidInput(f"Article {article_id} is already in edition {edition_id}.", "article")
    if len(ids) >= _config().MAX_EDITION_ARTICLES:
        db.session.rollback()
        raise InvalidInput(f"An edition holds at most {_config().MAX_EDITION_ARTICLES} articles.", "article")
    ids.insert(len(ids) if position is None else max(0, position), article_id)
    return _reorder(edition, ids)


def remove_article(edition_id: int, article_id: int, now: dt.datetime | None = None) -> Edition:
    """Take an article out of a draft."""
    edition = _take_draft(edition_id, now or utcnow())
    ids = [item.article_id for item in edition.items]
    if article_id not in ids:
        db.session.rollback()
        raise InvalidInput(f"Article {article_id} is not in edition {edition_id}.", "article")
    ids.remove(article_id)
    return _reorder(edition, ids)


def move_article(edition_id: int, article_id: int, position: int, now: dt.datetime | None = None) -> Edition:
    """Move an article within a draft to `position` (0 is the top)."""
    edition = _take_draft(edition_id, now or utcnow())
    ids = [item.article_id for item in edition.items]
    if article_id not in ids:
        db.session.rollback()
        raise InvalidInput(f"Article {article_id} is not in edition {edition_id}.", "article")
    ids.remove(article_id)
    ids.insert(max(0, position), article_id)
    return _reorder(edition, ids)


def _reorder(edition: Edition, ids: list[int]) -> Edition:
    db.session.execute(delete(EditionArticle).where(EditionArticle.edition_id == edition.id))
    db.session.add_all(EditionArticle(edition_id=edition.id, article_id=a, position=i) for i, a in enumerate(ids))
    db.session.commit()
    return edition


def set_subject(edition_id: int, subject: str, now: dt.datetime | None = None) -> Edition:
    """Give a draft its own subject line; an empty one goes back to the schedule's template."""
    subject = " ".join((subject or "").split())
    if len(subject) > 200:
        raise InvalidInput("A subject line of more than 200 characters is cut off by every mail app.", "subject")
    edition = _take_draft(edition_id, now or utcnow())
    edition.subject = subject
    db.session.commit()
    return edition


def cancel_edition(edition_id: int, note: str = "cancelled by staff", now: dt.datetime | None = None) -> Edition:
    """Cancel a draft: it will not be sent, and its articles are offered to the next edition."""
    edition = _take_draft(edition_id, now or utcnow(), curate=False)
    edition.status, edition.note = EditionStatus.CANCELLED, note[:500]
    db.session.commit()
    return edition


def cancel_drafts(schedule_id: int, note: str, now: dt.datetime) -> list[int]:
    """Cancel a schedule's drafts (its timing changed); the caller commits."""
    ids = list(db.session.scalars(
        update(Edition)
        .where(Edition.schedule_id == schedule_id, Edition.status == EditionStatus.DRAFT)
        .values(status=EditionStatus.CANCELLED, note=note[:500], updated_at=now)
        .returning(Edition.id)
    ))
    return ids


# --- Rendering ----------------------------------------------------------------------------------


@functools.cache
def subject_environment() -> SandboxedEnvironment:
    """The sandbox staff's subject templates run in: no attribute tricks reach Python."""
    return SandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)


@dataclass
class DigestContent:
    """Everything a digest is rendered from; an edition or a preview of one."""

    newsletter: Newsletter
    articles: list[Article]
    run_at: dt.datetime
    timezone: str = "UTC"
    subject: str = ""
    subject_template: str = ""
    edition_id: int | None = None


@dataclass
class DigestItem:
    """One article as one audience sees it."""

    article: Article
    number: int
    locked: bool
    show_body: bool
    show_image: bool
    show_summary: bool
    byline: str
    date_label: str
    image_alt: str
    body_text: str = ""


def _byline(authors: list[str]) -> str:
    if not authors:
        return ""
    if len(authors) == 1:
        return f"By {authors[0]}"
    return f"By {', '.join(authors[:-1])} and {authors[-1]}"


def _date(when: dt.datetime, tz: ZoneInfo, with_weekday: bool = False) -> str:
    local = when.astimezone(tz)
    return f"{local:%A}, {local.day} {local:%B %Y}" if with_weekday else f"{local.day} {local:%B %Y}"


def _items(content: DigestContent, audience: Audience, levels: list[int], tz: ZoneInfo) -> list[DigestItem]:
    items = []
    for number, (article, level) in enumerate(zip(content.articles, levels, strict=True), start=1):
        locked = article.members_only and audience == Audience.NON_MEMBER
        show_body = bool(article.members_only and not locked and article.body and level >= FULL)
        items.append(DigestItem(
            article=article,
            number=number,
            locked=locked,
            show_body=show_body,
            show_image=bool(article.image_url) and level >= TEASER,
            show_summary=bool(article.summary) and level >= SUMMARY,
            byline=_byline(article.authors or []),
            date_label=_date(article.published_at, tz),
            image_alt=shorten(article.image_caption or article.title, 200),
            body_text=html_to_text(article.body) if show_body else "",
        ))
    return items


def _subject(content: DigestContent) -> str:
    if content.subject:
        return content.subject
    if not content.subject_template or not content.articles:
        return ""
    tz = ZoneInfo(content.timezone)
    context = {
        "newsletter": {"name": content.newsletter.name, "slug": content.newsletter.slug},
        "date": _date(content.run_at, tz, with_weekday=True),
        "top": {"title": content.articles[0].title},
        "count": len(content.articles),
    }
    try:
        return subject_environment().from_string(content.subject_template).render(context)
    except TemplateError as exc:
        # Staff wrote it; a mistake or a sandbox refusal must not stop the edition.
        log.warning("subject template of %s failed (%s); using the default", content.newsletter.slug, exc)
        return ""


def _templates(newsletter: Newsletter, name: str) -> list[str]:
    # A newsletter's own folder wins, file by file; the default fills in the rest.
    return [f"digest/{newsletter.slug}/{name}", f"digest/default/{name}"]


def _context(content: DigestContent, audience: Audience, items: list[DigestItem], custom_subject: str) -> dict:
    config = _config()
    base = config.BASE_URL.rstrip("/")
    tz = ZoneInfo(content.timezone)
    top = content.articles[0].title if content.articles else ""
    more = len(content.articles) - 1
    preheader = f"{top} — and {more} more {'story' if more == 1 else 'stories'}" if more > 0 else top
    web_url = f"{base}/archive/{content.newsletter.slug}/{content.edition_id}" if content.edition_id else ""
    return {
        "newsletter": content.newsletter,
        "items": items,
        "audience": audience.value,
        "is_member": audience == Audience.MEMBER,
        "custom_subject": custom_subject,
        "date_label": _date(content.run_at, tz, with_weekday=True),
        "preheader": preheader,
        "newsroom": config.NEWSROOM_NAME,
        "postal_address": config.POSTAL_ADDRESS,
        "base_url": base,
        "site_name": urlsplit(base).hostname or base,
        "membership_url": f"{base}/membership",
        "web_url": web_url,
        "name_slot": SLOT_NAME,
        "unsubscribe_url": SLOT_UNSUBSCRIBE_URL,
        "preferences_url": SLOT_PREFERENCES_URL,
        "wrap": wrap,
    }


def _render_once(content: DigestContent, audience: Audience, levels: list[int], custom_subject: str) -> Rendering:
    tz = ZoneInfo(content.timezone)
    context = _context(content, audience, _items(content, audience, levels, tz), custom_subject)
    subject = " ".join(render_template(_templates(content.newsletter, "subject.txt"), **context).split())
    context["subject"] = subject
    # Inline the rendered HTML, never the template: what the data adds gets styled too.
    html = _INLINER.inline(render_template(_templates(content.newsletter, "body.html"), **context))
    text = render_template(_templates(content.newsletter, "body.txt"), **context)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return Rendering(subject=subject[:255], html=html, text=text)


def _levels(count: int, steps: int) -> list[int]:
    """Article levels after `steps` cuts: first every body, then every image, then every summary, last item first."""
    levels = [FULL] * count
    for step in range(steps):
        levels[count - 1 - step % count] -= 1
    return levels


def render_digest(content: DigestContent) -> dict[Audience, Rendering]:
    """Render once per audience, each within the HTML budget (members' full stories give way first)."""
    custom_subject = _subject(content)
    out = {}
    for audience in Audience:
        count = len(content.articles)
        first = _render_once(content, audience, [FULL] * count, custom_subject)
        if len(first.html.encode()) <= HTML_BUDGET or count == 0:
            out[audience] = first
            continue
        # Size only shrinks as cuts are added, so a binary search finds the fewest cuts that fit.
        low, high = 1, 3 * count
        best = _render_once(content, audience, _levels(count, high), custom_subject)
        if len(best.html.encode()) > HTML_BUDGET:
            log.warning("edition of %s is %d bytes even with titles only", content.newsletter.slug,
                        len(best.html.encode()))
        while low < high:
            middle = (low + high) // 2
            attempt = _render_once(content, audience, _levels(count, middle), custom_subject)
            if len(attempt.html.encode()) <= HTML_BUDGET:
                high, best = middle, attempt
            else:
                low = middle + 1
        out[audience] = best
    return out


def _edition_content(edition: Edition) -> DigestContent:
    schedule = db.session.get(Schedule, edition.schedule_id) if edition.schedule_id else None
    return DigestContent(
        newsletter=edition.newsletter,
        articles=[item.article for item in edition.items],
        run_at=edition.run_at,
        timezone=schedule.timezone if schedule else "UTC",
        subject=edition.subject,
        subject_template=schedule.subject_template if schedule else "",
        edition_id=edition.id,
    )


def render_edition(edition_id: int) -> dict[Audience, Rendering]:
    """Render an edition as it stands, without storing anything (a preview for staff)."""
    edition = db.session.get(Edition, edition_id)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    return render_digest(_edition_content(edition))


# --- Freezing and the tick ----------------------------------------------------------------------


def freeze_edition(edition_id: int, now: dt.datetime | None = None) -> EditionStatus:
    """Freeze a draft: store its final rendering per audience and return FROZEN, or SKIPPED when it is empty.

    Safe to call twice or concurrently: an edition that is no longer a draft is left alone and its
    status returned. A draft no editor touched is refreshed first, so it carries the latest articles.
    """
    now = now or utcnow()
    edition = _take_draft_for_freeze(edition_id, now)
    if edition is None:
        current = db.session.get(Edition, edition_id, populate_existing=True)
        db.session.commit()
        if current is None:
            raise InvalidInput(f"No edition {edition_id}.", "edition")
        return current.status
    try:
        if edition.curated_at is None:
            _refresh(edition, now)
        if not edition.items:
            edition.status, edition.note = EditionStatus.SKIPPED, "nothing new to send"
            db.session.commit()
            log.info("edition %s skipped: nothing new", edition_id)
            return edition.status
        for audience, rendering in render_digest(_edition_content(edition)).items():
            db.session.add(EditionRendering(edition_id=edition.id, audience=audience, subject=rendering.subject,
                                            html=rendering.html, text=rendering.text, created_at=now))
        edition.status, edition.frozen_at = EditionStatus.FROZEN, now
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    log.info("edition %s frozen with %d articles", edition_id, len(edition.items))
    return EditionStatus.FROZEN


def _take_draft_for_freeze(edition_id: int, now: dt.datetime) -> Edition | None:
    result = db.session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.status == EditionStatus.DRAFT).values(updated_at=now)
    )
    if result.rowcount != 1:
        return None
    return db.session.get(Edition, edition_id, populate_existing=True)


def edition_renderings(edition_id: int) -> dict[Audience, Rendering]:
    """Return a frozen edition's stored renderings by audience (empty before it is frozen)."""
    rows = db.session.scalars(select(EditionRendering).where(EditionRendering.edition_id == edition_id))
    return {row.audience: Rendering(row.subject, row.html, row.text) for row in rows}


def _grace() -> dt.timedelta:
    return dt.timedelta(hours=_config().EDITION_GRACE_HOURS)


def due_editions_to_send(now: dt.datetime | None = None) -> list[int]:
    """Return editions whose time has come, oldest first: drafts to freeze, and frozen ones not yet sending.

    A frozen edition is listed again until sending starts, so a send task the broker lost is issued
    again; freeze_edition leaves a frozen edition as it is.
    """
    now = now or utcnow()
    return list(db.session.scalars(
        select(Edition.id)
        .where(
            Edition.status.in_((EditionStatus.DRAFT, EditionStatus.FROZEN)),
            Edition.run_at <= now,
            Edition.run_at >= now - _grace(),
        )
        .order_by(Edition.run_at, Edition.id)
    ))


def mark_missed_editions(now: dt.datetime | None = None) -> list[int]:
    """Record as missed the drafts and unsent frozen editions whose time passed more than the grace period ago."""
    now = now or utcnow()
    ids = list(db.session.scalars(
        update(Edition)
        .where(
            Edition.status.in_((EditionStatus.DRAFT, EditionStatus.FROZEN)),
            Edition.run_at < now - _grace(),
        )
        .values(status=EditionStatus.MISSED, updated_at=now,
                note="missed: not sent within the grace period after its time")
        .returning(Edition.id)
    ))
    db.session.commit()
    if ids:
        log.warning("editions %s missed their time", ids)
    return ids


def freeze_due_editions(now: dt.datetime | None = None) -> dict[str, int]:
    """Freeze (or skip) every draft whose time has come; one failure never stops the others."""
    now = now or utcnow()
    counts = {"editions_frozen": 0, "editions_skipped": 0, "editions_failed": 0}
    for edition_id in due_editions_to_send(now):
        try:
            before = db.session.scalar(select(Edition.status).where(Edition.id == edition_id))
            status = freeze_edition(edition_id, now)
        except Exception:  # noqa: BLE001 - a template error in one newsletter must not stop the others
            log.exception("edition %s could not be frozen", edition_id)
            counts["editions_failed"] += 1
            continue
        if before == EditionStatus.DRAFT and status == EditionStatus.FROZEN:
            counts["editions_frozen"] += 1
        elif status == EditionStatus.SKIPPED:
            counts["editions_skipped"] += 1
    return counts


# --- Reading editions ---------------------------------------------------------------------------


def find_newsletter(ref: str | int) -> Newsletter:
    """Return a newsletter by slug or id, or raise InvalidInput."""
    ref = str(ref)
    newsletter = db.session.scalar(
        select(Newsletter).where(Newsletter.id == int(ref) if ref.isdigit() else Newsletter.slug == ref)
    )
    if newsletter is None:
        raise InvalidInput(f"No newsletter {ref!r}.", "newsletter")
    return newsletter


@dataclass
class NextEdition:
    """The next edition of a newsletter: its draft if one is made, otherwise what its schedule would pick now."""

    newsletter: Newsletter
    run_at: dt.datetime
    articles: list[Article]
    subject: str
    schedule: Schedule | None = None
    edition: Edition | None = None
    renderings: dict[Audience, Rendering] = field(default_factory=dict)


def next_edition(newsletter_ref: str | int, now: dt.datetime | None = None,
                 window_hours: float | None = None) -> NextEdition | None:
    """Show the next edition of a newsletter, rendered for both audiences; None without drafts or schedules."""
    now = now or utcnow()
    newsletter = find_newsletter(newsletter_ref)
    draft = db.session.scalar(
        select(Edition).where(Edition.newsletter_id == newsletter.id, Edition.status == EditionStatus.DRAFT)
        .order_by(Edition.run_at).limit(1)
    )
    if draft is not None:
        content = _edition_content(draft)
        schedule = db.session.get(Schedule, draft.schedule_id) if draft.schedule_id else None
    else:
        schedule = db.session.scalar(
            select(Schedule).where(Schedule.newsletter_id == newsletter.id, Schedule.enabled,
                                   Schedule.next_run_at.is_not(None))
            .order_by(Schedule.next_run_at).limit(1)
        )
        if schedule is None:
            return None
        articles = choose_articles(newsletter.id, schedule.next_run_at, now=now, schedule=schedule,
                                   window_hours=window_hours)
        content = DigestContent(newsletter=newsletter, articles=articles, run_at=schedule.next_run_at,
                                timezone=schedule.timezone, subject_template=schedule.subject_template)
    renderings = render_digest(content) if content.articles else {}
    subject = renderings[Audience.NON_MEMBER].subject if renderings else ""
    return NextEdition(newsletter=newsletter, run_at=content.run_at, articles=content.articles, subject=subject,
                       schedule=schedule, edition=draft, renderings=renderings)


def list_editions(newsletter_ref: str | int | None = None, status: EditionStatus | None = None,
                  limit: int = 50) -> list[Edition]:
    query = select(Edition).order_by(Edition.run_at.desc(), Edition.id.desc()).limit(limit)
    if newsletter_ref is not None:
        query = query.where(Edition.newsletter_id == find_newsletter(newsletter_ref).id)
    if status is not None:
        query = query.where(Edition.status == status)
    return list(db.session.scalars(query))


# Editions readers may see on the web: what went out, or is going out now.
ARCHIVED_STATUSES = (EditionStatus.SENDING, EditionStatus.SENT)


def archived_editions(newsletter_id: int, limit: int = 100) -> list[Edition]:
    """Return a newsletter's editions that went out, newest first."""
    return list(db.session.scalars(
        select(Edition).where(Edition.newsletter_id == newsletter_id, Edition.status.in_(ARCHIVED_STATUSES))
        .order_by(Edition.run_at.desc()).limit(limit)
    ))


def archived_edition(slug: str, edition_id: int) -> tuple[Edition, Rendering] | None:
    """Return a sent edition and its non-member rendering with the reader's slots neutralised, or None."""
    edition = db.session.get(Edition, edition_id)
    if edition is None or edition.newsletter.slug != slug or edition.status not in ARCHIVED_STATUSES:
        return None
    rendering = edition_renderings(edition_id).get(Audience.NON_MEMBER)
    if rendering is None:
        return None
    signup = f"{_config().BASE_URL.rstrip('/')}/n/{edition.newsletter.slug}"
    # No reader's links and no name: the web copy belongs to nobody.
    neutral = {SLOT_NAME: "", SLOT_UNSUBSCRIBE_URL: signup, SLOT_PREFERENCES_URL: signup}
    html, text = fill_slots(rendering.html, neutral), fill_slots(rendering.text, neutral)
    return edition, Rendering(rendering.subject, html, text)
