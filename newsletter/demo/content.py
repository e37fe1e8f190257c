"""Demo content: the sample Kyiv Independent article as an Article, and a schedule for each demo newsletter."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from newsletter import articles, schedules
from newsletter.extensions import db
from newsletter.models import ArticleSource, Newsletter, Schedule

HERE = Path(__file__).resolve().parent
SAMPLE_ARTICLE = HERE / "article-2024-11-13.txt"
SITE = "https://kyivindependent.com"
NEWSROOM_TZ = ZoneInfo("Europe/Kyiv")

SCHEDULES = [
    {"newsletter": "daily", "days": "daily", "at": "07:00", "timezone": "Europe/Kyiv", "article_limit": 10},
    {"newsletter": "war-weekly", "days": "sat", "at": "09:00", "timezone": "Europe/Kyiv", "article_limit": 12,
     "include_tags": ["War"], "subject_template": "{{ newsletter.name }}, week to {{ date }}"},
]

_BYLINE = re.compile(r"^by (?P<by>.+?) (?P<when>[A-Z][a-z]+ \d{1,2}, \d{4} \d{1,2}:\d{2} [AP]M)\b")
# A "read also" card pasted into the page: its headline, a cut-off excerpt, and the site's name glued
# to its author. It points at another story, so it is not part of this one.
_CARD = re.compile(r"^The Kyiv Independent[A-Z]")


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def parse_sample_article(text: str) -> articles.ArticleData:
    """Read the saved page: date banner, tags line, title, byline with time, caption, paragraphs, authors."""
    lines = text.splitlines()
    date_match = re.search(r"\bdate (\d{4}-\d{2}-\d{2})\b", lines[0])
    tags = [t.strip() for t in lines[1].split(",") if t.strip()]
    title = lines[2].strip()
    rest = [line.rstrip() for line in lines[3:]]
    while rest and not rest[0]:
        rest.pop(0)
    byline = _BYLINE.match(rest.pop(0))
    caption = rest.pop(0).strip()
    authors_at = next((i for i, line in enumerate(rest) if line.startswith("Authors:")), len(rest))
    authors_line = rest[authors_at] if authors_at < len(rest) else ""
    authors = [a.strip() for a in authors_line.removeprefix("Authors:").split(",") if a.strip()]
    blocks, block = [], []
    for line in rest[:authors_at] + [""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            blocks.append(block)
            block = []
    paragraphs = [" ".join(b) for b in blocks if not any(_CARD.match(line) for line in b)]
    if byline:
        local = dt.datetime.strptime(byline.group("when"), "%B %d, %Y %I:%M %p")
    else:
        local = dt.datetime.fromisoformat(date_match.group(1)) if date_match else dt.datetime(2024, 11, 13)
    return articles.ArticleData(
        title=title,
        url=f"{SITE}/{slugify(title)}/",
        summary=paragraphs[0] if paragraphs else "",
        body="".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs),
        authors=authors or ([byline.group("by")] if byline else []),
        tags=tags,
        published_at=local.replace(tzinfo=NEWSROOM_TZ),
        image_caption=caption,
        members_only=False,
    )


def load_sample_article(path: Path = SAMPLE_ARTICLE) -> articles.Saved:
    """Store the sample article (idempotent: a second load updates the same row)."""
    return articles.save_article(parse_sample_article(path.read_text(encoding="utf-8")), ArticleSource.MANUAL)


def load_schedules() -> list[Schedule]:
    """Give each demo newsletter its schedule unless it already has one."""
    made = []
    for spec in SCHEDULES:
        newsletter = db.session.scalar(select(Newsletter).where(Newsletter.slug == spec["newsletter"]))
        if newsletter is None:
            continue
        if db.session.scalar(select(Schedule.id).where(Schedule.newsletter_id == newsletter.id)) is not None:
            continue
        params = {k: v for k, v in spec.items() if k not in {"newsletter", "days", "at", "timezone"}}
        made.append(schedules.create_schedule(newsletter.id, spec["days"], spec["at"], spec["timezone"], **params))
    return made
