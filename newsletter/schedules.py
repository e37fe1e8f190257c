"""Which schedules are due: the next run in the schedule's own time zone, DST-correct, claimed exactly once."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from jinja2 import TemplateSyntaxError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from newsletter import digests
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Edition, EditionStatus, Newsletter, Schedule, utcnow

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_WORDS = {
    "daily": DAYS, "every day": DAYS, "*": DAYS,
    "weekdays": DAYS[:5], "weekends": DAYS[5:],
}
# Enough for a weekly schedule after months of downtime without one tick running for long.
MAX_CLAIMS_PER_SCHEDULE = 60


def _config():
    return current_app.config["HERALD"]


# --- Parsing what staff type --------------------------------------------------------------------


def parse_days(value: str | Iterable[str]) -> str:
    """Return days as "mon,wed,fri" in weekday order from "mon,wed,fri", "daily", "weekdays" or "weekends"."""
    raw = value if isinstance(value, str) else ",".join(value)
    words = raw.strip().lower()
    if words in DAY_WORDS:
        return ",".join(DAY_WORDS[words])
    chosen = set()
    for part in re.split(r"[,\s]+", words):
        if not part:
            continue
        day = next((d for d, name in zip(DAYS, DAY_NAMES, strict=True) if part in (d, name)), None)
        if day is None:
            raise InvalidInput(f"{part[:20]!r} is not a day; use mon, tue, wed, thu, fri, sat, sun or daily.", "days")
        chosen.add(day)
    if not chosen:
        raise InvalidInput("Choose at least one day.", "days")
    return ",".join(d for d in DAYS if d in chosen)


def parse_local_time(value: str | dt.time) -> dt.time:
    """Return a wall-clock time from "07:00" or "7:00"."""
    if isinstance(value, dt.time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value or "")
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise InvalidInput(f"{value!r} is not a time of day like 07:00.", "time")
    return dt.time(int(match.group(1)), int(match.group(2)))


def parse_timezone(name: str) -> ZoneInfo:
    """Return the IANA zone called `name`, e.g. Europe/Kyiv."""
    try:
        if not name or name != name.strip() or name.startswith(("/", ".")):
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{name!r} is not an IANA time zone like Europe/Kyiv.", "timezone") from None


def _tags(values: Iterable[str] | None) -> list[str]:
    return [t for t in (" ".join(v.split()) for v in values or ()) if t]


# --- Time ---------------------------------------------------------------------------------------


def _exists(naive: dt.datetime, tz: ZoneInfo) -> bool:
    back = naive.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)
    return back.replace(tzinfo=None) == naive


def local_occurrence(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """Return, in UTC, the moment the wall clock in `tz` shows `at` on `day`.

    A time repeated when clocks go back means its first occurrence (fold=0). A time skipped when
    clocks go forward means the first valid minute after it: 02:30 on a 02:00->03:00 day runs at 03:00.
    """
    naive = dt.datetime.combine(day, at)
    probe = naive
    # A gap is an hour in practice; a whole day (Samoa, 2011) is the most history has seen.
    for _ in range(24 * 60 + 1):
        if _exists(probe, tz):
            return probe.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
        probe += dt.timedelta(minutes=1)
    raise ValueError(f"no valid local time after {naive} in {tz}")


def next_run_after(days: str, at: dt.time, timezone: str, after: dt.datetime) -> dt.datetime:
    """Return the first run strictly after `after` (aware), in UTC."""
    tz = parse_timezone(timezone)
    wanted = {DAYS.index(d) for d in parse_days(days).split(",")}
    start = after.astimezone(tz).date()
    # From the day before: a skipped late-evening time can be pushed past midnight into `start`.
    for offset in range(-1, 9):
        day = start + dt.timedelta(days=offset)
        if day.weekday() not in wanted:
            continue
        when = local_occurrence(day, at, tz)
        if when > after:
            return when
    raise AssertionError("a weekly pattern always recurs within eight days")


def schedule_next_run(schedule: Schedule, after: dt.datetime) -> dt.datetime:
    return next_run_after(schedule.days, schedule.local_time, schedule.timezone, after)


# --- Services -----------------------------------------------------------------------------------


def _newsletter(ref: str | int) -> Newsletter:
    query = select(Newsletter).where(
        Newsletter.id == int(ref) if str(ref).isdigit() else Newsletter.slug == str(ref)
    )
    newsletter = db.session.scalar(query)
    if newsletter is None:
        raise InvalidInput(f"No newsletter {ref!r}.", "newsletter")
    return newsletter


def _check_limit(limit: int) -> int:
    cap = _config().MAX_EDITION_ARTICLES
    if not 1 <= limit <= cap:
        raise InvalidInput(f"The article limit must be between 1 and {cap}.", "article_limit")
    return limit


def _check_subject(template: str) -> str:
    template = " ".join((template or "").split())
    if len(template) > 255:
        raise InvalidInput("The subject template is longer than 255 characters.", "subject_template")
    try:
        digests.subject_environment().parse(template)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"The subject template does not parse: {exc.message}", "subject_template") from None
    return template


def create_schedule(newsletter: str | int, days: str | Iterable[str], at: str | dt.time, timezone: str, *,
                    article_limit: int = 10, include_tags: Iterable[str] = (), exclude_tags: Iterable[str] = (),
                    subject_template: str = "", enabled: bool = True, now: dt.datetime | None = None) -> Schedule:
    """Create a schedule for a newsletter (by slug or id) and compute its first run."""
    now = now or utcnow()
    schedule = Schedule(
        newsletter_id=_newsletter(newsletter).id,
        days=parse_days(days),
        local_time=parse_local_time(at),
        timezone=parse_timezone(timezone).key,
        article_limit=_check_limit(article_limit),
        include_tags=_tags(include_tags),
        exclude_tags=_tags(exclude_tags),
        subject_template=_check_subject(subject_template),
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    schedule.next_run_at = schedule_next_run(schedule, now) if enabled else None
    db.session.add(schedule)
    db.session.commit()
    return schedule


def update_schedule(schedule_id: int, *, now: dt.datetime | None = None, **changes) -> Schedule:
    """Change a schedule; a new time, day or zone (or disabling it) cancels its pending draft."""
    now = now or utcnow()
    schedule = db.session.get(Schedule, schedule_id)
    if schedule is None:
        raise InvalidInput(f"No schedule {schedule_id}.", "schedule")
    parsers = {
        "days": parse_days, "at": parse_local_time, "timezone": lambda v: parse_timezone(v).key,
        "article_limit": _check_limit, "include_tags": _tags, "exclude_tags": _tags,
        "subject_template": _check_subject, "enabled": bool,
    }
    unknown = set(changes) - set(parsers)
    if unknown:
        raise InvalidInput(f"Unknown schedule setting {sorted(unknown)[0]!r}.", sorted(unknown)[0])
    values = {name: parsers[name](value) for name, value in changes.items() if value is not None}
    if "at" in values:
        values["local_time"] = values.pop("at")
    timing = {"days", "local_time", "timezone", "enabled"}
    retimed = any(getattr(schedule, k) != v for k, v in values.items() if k in timing)
    for name, value in values.items():
        setattr(schedule, name, value)
    schedule.updated_at = now
    if retimed:
        cancelled = digests.cancel_drafts(schedule.id, "the schedule changed", now)
        schedule.next_run_at = schedule_next_run(schedule, now) if schedule.enabled else None
        if cancelled:
            log.info("schedule %s changed: cancelled draft editions %s", schedule.id, cancelled)
    db.session.commit()
    return schedule


def list_schedules(newsletter: str | int | None = None) -> list[Schedule]:
    query = select(Schedule).order_by(Schedule.newsletter_id, Schedule.id)
    if newsletter is not None:
        query = query.where(Schedule.newsletter_id == _newsletter(newsletter).id)
    return list(db.session.scalars(query))


def describe(schedule: Schedule) -> str:
    """Say when a schedule runs, e.g. "mon,tue,wed,thu,fri,sat,sun 07:00 Europe/Kyiv"."""
    days = "daily" if schedule.days == ",".join(DAYS) else schedule.days
    return f"{days} {schedule.local_time:%H:%M} {schedule.timezone}"


# --- Claiming editions --------------------------------------------------------------------------


@dataclass
class Claimed:
    """What one pass over the due schedules did."""

    drafted: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _insert_edition(schedule: Schedule, run_at: dt.datetime, status: EditionStatus, note: str,
                    now: dt.datetime) -> int | None:
    """Insert the edition for (schedule, run_at) unless one exists; return its id only if this call made it."""
    values = {
        "newsletter_id": schedule.newsletter_id, "schedule_id": schedule.id, "run_at": run_at, "status": status,
        "subject": "", "note": note[:500], "created_at": now, "updated_at": now,
    }
    dialect = db.session.get_bind().dialect.name
    if dialect in {"postgresql", "sqlite"}:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Edition).values(**values)
            .on_conflict_do_nothing(index_elements=["schedule_id", "run_at"])
            .returning(Edition.id)
        )
        return db.session.scalar(statement)
    edition = Edition(**values)
    try:
        with db.session.begin_nested():
            db.session.add(edition)
    except IntegrityError:
        return None
    return edition.id


def _claim_schedule(schedule_id: int, now: dt.datetime, horizon: dt.datetime, grace: dt.timedelta,
                    claimed: Claimed) -> None:
    # SKIP LOCKED: a second beat passes over a schedule the first is claiming. Once the first commits,
    # next_run_at has moved on and the WHERE no longer matches. SQLite ignores FOR UPDATE; there the
    # unique (schedule_id, run_at) key alone keeps it to one edition.
    schedule = db.session.scalar(
        select(Schedule)
        .where(Schedule.id == schedule_id, Schedule.enabled, Schedule.next_run_at <= horizon)
        .with_for_update(skip_locked=True)
    )
    if schedule is None:
        db.session.rollback()
        return
    for _ in range(MAX_CLAIMS_PER_SCHEDULE):
        run_at = schedule.next_run_at
        if run_at is None or run_at > horizon:
            break
        late = now - run_at
        if late > grace:
            note = f"missed: the scheduler was not running until {_hours(late)} after its time"
            edition_id = _insert_edition(schedule, run_at, EditionStatus.MISSED, note, now)
            if edition_id is not None:
                claimed.missed.append(edition_id)
                log.warning("schedule %s: edition for %s missed (%s late)", schedule.id, run_at, late)
        else:
            note = f"made {_hours(late)} late, after the scheduler was not running" if late > dt.timedelta(0) else ""
            edition_id = _insert_edition(schedule, run_at, EditionStatus.DRAFT, note, now)
            if edition_id is not None:
                digests.fill_draft(edition_id, now)
                claimed.drafted.append(edition_id)
        schedule.next_run_at = schedule_next_run(schedule, run_at)
    db.session.commit()


def _hours(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def claim_due_editions(now: dt.datetime | None = None, limit: int = 500) -> Claimed:
    """Make the editions whose draft time has come: a draft within the grace period, a missed record after it.

    Each schedule is claimed in its own transaction, so one broken schedule never stops the others.
    """
    now = now or utcnow()
    config = _config()
    horizon = now + dt.timedelta(minutes=config.EDITION_LEAD_MINUTES)
    grace = dt.timedelta(hours=config.EDITION_GRACE_HOURS)
    due = list(db.session.scalars(
        select(Schedule.id).where(Schedule.enabled, Schedule.next_run_at <= horizon)
        .order_by(Schedule.next_run_at).limit(limit)
    ))
    db.session.commit()
    claimed = Claimed()
    for schedule_id in due:
        try:
            _claim_schedule(schedule_id, now, horizon, grace, claimed)
        except Exception:  # noqa: BLE001 - one schedule's fault (a bad template, say) must not stop the rest
            db.session.rollback()
            claimed.failed.append(schedule_id)
            log.exception("schedule %s could not be claimed", schedule_id)
    return claimed
