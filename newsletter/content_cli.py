"""Flask commands for content: feeds, ingestion, schedules, editions and the CMS's API keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from newsletter import articles, digests, schedules
from newsletter.addresses import InvalidInput
from newsletter.models import Audience, Edition, EditionStatus, Schedule, utcnow

feeds_cli = AppGroup("feeds", help="RSS and Atom feeds we ingest.")
schedules_cli = AppGroup("schedules", help="When each newsletter's digest is made.")
editions_cli = AppGroup("editions", help="Editions: the next one, its articles and subject, and past ones.")
articles_cli = AppGroup("articles", help="Articles we have ingested.")
keys_cli = AppGroup("api-keys", help="Keys a CMS uses to push articles to /api/v1/articles.")


def register(app: Flask) -> None:
    app.cli.add_command(ingest)
    for group in (feeds_cli, schedules_cli, editions_cli, articles_cli, keys_cli):
        app.cli.add_command(group)


def _fail(exc: InvalidInput) -> None:
    raise click.ClickException(str(exc))


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="minutes") if value else "-"


# --- Feeds and ingestion ------------------------------------------------------------------------


@click.command("ingest")
@click.option("--feed", "feed_ids", type=int, multiple=True, help="Only this feed (id); may be repeated.")
def ingest(feed_ids: tuple[int, ...]) -> None:
    """Fetch every active feed now (or the ones named), whether or not it is due."""
    results = articles.ingest_feeds(feed_ids=list(feed_ids) or None)
    for r in results:
        detail = r.error or f"{r.created} new, {r.updated} updated, {r.skipped_entries} skipped"
        click.echo(f"feed {r.feed_id}\t{r.outcome.value}\t{detail}")
    click.echo(f"{len(results)} feed(s) fetched", err=True)


@feeds_cli.command("add")
@click.argument("url")
@click.option("--name", default="", help="A name for staff; by default the feed's own title.")
@click.option("--interval", type=int, help="Minutes between fetches (default FEED_INTERVAL_MINUTES).")
@click.option("--members-only", is_flag=True, help="Every article of this feed is for members.")
def feeds_add(url: str, name: str, interval: int | None, members_only: bool) -> None:
    """Add a feed; it is first fetched on the next tick."""
    try:
        feed = articles.add_feed(url, name=name, interval_minutes=interval, members_only=members_only)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"feed {feed.id}: {feed.url} every {feed.interval_minutes} min")


@feeds_cli.command("list")
@click.option("--errors", "only_errors", is_flag=True, help="Only feeds whose last fetch failed.")
def feeds_list(only_errors: bool) -> None:
    """List feeds with their last fetch, next fetch and last error."""
    count = 0
    for feed in articles.list_feeds():
        if only_errors and not feed.last_error:
            continue
        state = "active" if feed.active else "paused"
        error = f"\tERROR ({feed.failures} in a row): {feed.last_error}" if feed.last_error else ""
        click.echo(f"{feed.id}\t{state}\t{feed.name or '-'}\t{feed.url}\tlast ok {_when(feed.last_success_at)}"
                   f"\tnext {_when(feed.next_fetch_at)}{error}")
        count += 1
    click.echo(f"{count} feed(s)", err=True)


@feeds_cli.command("remove")
@click.argument("feed_id", type=int)
def feeds_remove(feed_id: int) -> None:
    """Stop polling a feed (its articles stay)."""
    try:
        articles.remove_feed(feed_id)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"feed {feed_id} removed")


@articles_cli.command("list")
@click.option("--limit", type=int, default=30, show_default=True)
def articles_list(limit: int) -> None:
    """List the newest articles, with the ids editors use to add them to an edition."""
    for a in articles.recent_articles(limit):
        flags = " [members]" if a.members_only else ""
        click.echo(f"{a.id}\t{_when(a.published_at)}\t{a.title}{flags}\t{', '.join(a.tags)}")


# --- Schedules ----------------------------------------------------------------------------------


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _print_schedule(s: Schedule) -> None:
    tags = ""
    if s.include_tags:
        tags += f"\tonly: {', '.join(s.include_tags)}"
    if s.exclude_tags:
        tags += f"\tnot: {', '.join(s.exclude_tags)}"
    state = "enabled" if s.enabled else "disabled"
    click.echo(f"{s.id}\t{s.newsletter.slug}\t{schedules.describe(s)}\tlimit {s.article_limit}\t{state}"
               f"\tnext {_when(s.next_run_at)}{tags}" + (f"\tsubject: {s.subject_template}" if s.subject_template
                                                       else ""))


@schedules_cli.command("create")
@click.option("--newsletter", required=True, help="Newsletter slug or id.")
@click.option("--days", default="daily", show_default=True, help="mon,wed,fri or daily, weekdays, weekends.")
@click.option("--time", "at", required=True, help="Local time, e.g. 07:00.")
@click.option("--timezone", "tz", required=True, help="IANA zone, e.g. Europe/Kyiv.")
@click.option("--limit", "article_limit", type=int, default=10, show_default=True, help="Most articles.")
@click.option("--include", multiple=True, help="Only articles with one of these tags or sections.")
@click.option("--exclude", multiple=True, help="Never articles with these tags or sections.")
@click.option("--subject", default="", help="Subject template, e.g. '{{ newsletter.name }}: {{ top.title }}'.")
@click.option("--disabled", is_flag=True, help="Create it switched off.")
def schedules_create(newsletter: str, days: str, at: str, tz: str, article_limit: int, include: tuple[str, ...],
                     exclude: tuple[str, ...], subject: str, disabled: bool) -> None:
    """Create a schedule for a newsletter."""
    try:
        s = schedules.create_schedule(newsletter, days, at, tz, article_limit=article_limit,
                                      include_tags=_split(include), exclude_tags=_split(exclude),
                                      subject_template=subject, enabled=not disabled)
    except InvalidInput as exc:
        _fail(exc)
    _print_schedule(s)


@schedules_cli.command("list")
@click.option("--newsletter", help="Only this newsletter (slug or id).")
def schedules_list(newsletter: str | None) -> None:
    """List schedules and their next run (UTC)."""
    try:
        found = schedules.list_schedules(newsletter)
    except InvalidInput as exc:
        _fail(exc)
    for s in found:
        _print_schedule(s)
    click.echo(f"{len(found)} schedule(s)", err=True)


@schedules_cli.command("edit")
@click.argument("schedule_id", type=int)
@click.option("--days")
@click.option("--time", "at")
@click.option("--timezone", "tz")
@click.option("--limit", "article_limit", type=int)
@click.option("--include", multiple=True, help="Replaces the include list; pass '' to clear it.")
@click.option("--exclude", multiple=True, help="Replaces the exclude list; pass '' to clear it.")
@click.option("--subject")
@click.option("--enable/--disable", "enabled", default=None)
def schedules_edit(schedule_id: int, days: str | None, at: str | None, tz: str | None, article_limit: int | None,
                   include: tuple[str, ...], exclude: tuple[str, ...], subject: str | None,
                   enabled: bool | None) -> None:
    """Change a schedule; a new day, time or zone cancels its pending draft and recomputes the next run."""
    changes = {
        "days": days, "at": at, "timezone": tz, "article_limit": article_limit, "subject_template": subject,
        "enabled": enabled,
        "include_tags": _split(include) if include else None,
        "exclude_tags": _split(exclude) if exclude else None,
    }
    try:
        s = schedules.update_schedule(schedule_id, **changes)
    except InvalidInput as exc:
        _fail(exc)
    _print_schedule(s)


# --- Editions -----------------------------------------------------------------------------------


def _write(renderings: dict[Audience, digests.Rendering], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for audience, rendering in renderings.items():
        for suffix, body in (("html", rendering.html), ("txt", rendering.text)):
            path = out / f"{audience.value}.{suffix}"
            path.write_text(body, encoding="utf-8")
            written.append(path)
    return written


@editions_cli.command("next")
@click.argument("newsletter")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Also write both audiences here.")
@click.option("--window-hours", type=float, help="Look further back than ARTICLE_WINDOW_HOURS (a preview only).")
def editions_next(newsletter: str, out: Path | None, window_hours: float | None) -> None:
    """Show a newsletter's next edition: run time, subject and articles; optionally render it to files."""
    try:
        found = digests.next_edition(newsletter, window_hours=window_hours)
    except InvalidInput as exc:
        _fail(exc)
    if found is None:
        raise click.ClickException(f"{newsletter} has no draft edition and no enabled schedule")
    if found.edition is not None:
        touched = "edited by staff" if found.edition.curated_at else "untouched: re-chosen at send time"
        click.echo(f"edition {found.edition.id} (draft, {touched})")
    else:
        click.echo(f"not drafted yet: what schedule {found.schedule.id} would choose now")
    click.echo(f"runs at {_when(found.run_at)} UTC" + (f" ({schedules.describe(found.schedule)})"
                                                       if found.schedule else ""))
    click.echo(f"subject: {found.subject or '(nothing new: it would be skipped)'}")
    for position, a in enumerate(found.articles):
        flags = " [members]" if a.members_only else ""
        click.echo(f"  {position}\tarticle {a.id}\t{_when(a.published_at)}\t{a.title}{flags}")
    if out is not None:
        if not found.renderings:
            raise click.ClickException("nothing to render: the edition has no articles")
        for path in _write(found.renderings, out):
            click.echo(f"wrote {path}")


@editions_cli.command("render")
@click.argument("edition_id", type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def editions_render(edition_id: int, out: Path) -> None:
    """Write an edition as each audience gets it (member.html, member.txt, non_member.html, non_member.txt)."""
    try:
        renderings = digests.edition_renderings(edition_id) or digests.render_edition(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    for path in _write(renderings, out):
        click.echo(f"wrote {path}")


@editions_cli.command("list")
@click.option("--newsletter", help="Only this newsletter (slug or id).")
@click.option("--status", type=click.Choice([s.value for s in EditionStatus]))
@click.option("--limit", type=int, default=30, show_default=True)
def editions_list(newsletter: str | None, status: str | None, limit: int) -> None:
    """List editions, newest first, with their status and note."""
    try:
        found = digests.list_editions(newsletter, EditionStatus(status) if status else None, limit)
    except InvalidInput as exc:
        _fail(exc)
    for e in found:
        click.echo(f"{e.id}\t{e.newsletter.slug}\t{_when(e.run_at)}\t{e.status.value}\t{len(e.items)} article(s)"
                   + (f"\t{e.note}" if e.note else ""))
    click.echo(f"{len(found)} edition(s)", err=True)


def _edit(action: Callable[..., Edition], *args: int | str | None) -> None:
    try:
        edition = action(*args)
    except InvalidInput as exc:
        _fail(exc)
    ids = ", ".join(str(item.article_id) for item in edition.items) or "none"
    click.echo(f"edition {edition.id}: articles {ids}" + (f"; subject: {edition.subject}" if edition.subject else ""))


@editions_cli.command("add")
@click.argument("edition_id", type=int)
@click.argument("article_id", type=int)
@click.option("--position", type=int, help="0 is the top; by default the end.")
def editions_add(edition_id: int, article_id: int, position: int | None) -> None:
    """Add an article to a draft edition."""
    _edit(digests.add_article, edition_id, article_id, position)


@editions_cli.command("remove")
@click.argument("edition_id", type=int)
@click.argument("article_id", type=int)
def editions_remove(edition_id: int, article_id: int) -> None:
    """Take an article out of a draft edition."""
    _edit(digests.remove_article, edition_id, article_id)


@editions_cli.command("move")
@click.argument("edition_id", type=int)
@click.argument("article_id", type=int)
@click.argument("position", type=int)
def editions_move(edition_id: int, article_id: int, position: int) -> None:
    """Move an article within a draft edition (position 0 is the top)."""
    _edit(digests.move_article, edition_id, article_id, position)


@editions_cli.command("subject")
@click.argument("edition_id", type=int)
@click.argument("subject")
def editions_subject(edition_id: int, subject: str) -> None:
    """Set a draft's subject line ('' goes back to the schedule's template)."""
    _edit(digests.set_subject, edition_id, subject)


@editions_cli.command("cancel")
@click.argument("edition_id", type=int)
def editions_cancel(edition_id: int) -> None:
    """Cancel a draft edition; its articles go to the next one."""
    _edit(digests.cancel_edition, edition_id)


# --- API keys -----------------------------------------------------------------------------------


@keys_cli.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create a key; the token is printed once and cannot be shown again."""
    try:
        key, token = articles.create_api_key(name)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"key {key.id} ({key.prefix}) for {key.name}:", err=True)
    click.echo(token)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys by prefix, with when they were last used."""
    for key in articles.list_api_keys():
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{key.prefix}\t{key.name}\t{state}\tlast used {_when(key.last_used_at)}")


@keys_cli.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke a key by its prefix or id; the CMS using it is refused at once."""
    try:
        revoked = articles.revoke_api_key(key, utcnow())
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"key {revoked.id} ({revoked.prefix}) revoked")
