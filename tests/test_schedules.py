"""Schedules: the next run in local time across DST, claimed exactly once, late within grace, missed after it."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from newsletter import digests, maintenance, schedules
from newsletter.addresses import InvalidInput
from newsletter.models import Edition, EditionRendering, EditionStatus, Schedule
from tests.content_support import make_article


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def runs(days: str, at: str, tz: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    out = []
    for _ in range(count):
        after = schedules.next_run_after(days, schedules.parse_local_time(at), tz, after)
        out.append(after)
    return out


def editions(db, schedule_id: int | None = None) -> list[Edition]:
    db.session.expire_all()
    query = select(Edition).order_by(Edition.run_at)
    if schedule_id is not None:
        query = query.where(Edition.schedule_id == schedule_id)
    return list(db.session.scalars(query))


# --- Time ------------------------------------------------------------------------------------------


def test_kyiv_seven_oclock_stays_seven_oclock_across_both_2026_clock_changes():
    spring = runs("daily", "07:00", "Europe/Kyiv", utc(2026, 3, 27, 12), 3)
    assert spring == [utc(2026, 3, 28, 5), utc(2026, 3, 29, 4), utc(2026, 3, 30, 4)]
    autumn = runs("daily", "07:00", "Europe/Kyiv", utc(2026, 10, 24, 0), 3)
    assert autumn == [utc(2026, 10, 24, 4), utc(2026, 10, 25, 5), utc(2026, 10, 26, 5)]


def test_new_york_half_past_two_runs_at_three_on_the_day_that_hour_does_not_exist():
    spring = runs("daily", "02:30", "America/New_York", utc(2026, 3, 7, 0), 3)
    # 2026-03-08: clocks jump from 02:00 to 03:00, so 02:30 runs at the first valid minute, 03:00 EDT.
    assert spring == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]
    autumn = runs("daily", "02:30", "America/New_York", utc(2026, 10, 31, 0), 3)
    # 02:30 happens once on 2026-11-01 (the repeated hour is 01:00-02:00).
    assert autumn == [utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]


def test_new_york_half_past_one_runs_once_on_the_day_that_hour_happens_twice():
    autumn = runs("daily", "01:30", "America/New_York", utc(2026, 10, 31, 0), 3)
    # 2026-11-01 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST): only the first counts.
    assert autumn == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    between = schedules.next_run_after("daily", dt.time(1, 30), "America/New_York", utc(2026, 11, 1, 6, 0))
    assert between == utc(2026, 11, 2, 6, 30)
    spring = runs("daily", "01:30", "America/New_York", utc(2026, 3, 7, 12), 2)
    assert spring == [utc(2026, 3, 8, 6, 30), utc(2026, 3, 9, 5, 30)]


def test_weekly_schedules_skip_to_the_chosen_day():
    saturdays = runs("sat", "09:00", "Europe/Kyiv", utc(2026, 11, 25, 12), 2)
    assert saturdays == [utc(2026, 11, 28, 7), utc(2026, 12, 5, 7)]
    assert schedules.parse_days("Monday, wed fri") == "mon,wed,fri"
    assert schedules.parse_days("weekends") == "sat,sun"


@pytest.mark.parametrize(("field", "kwargs"), [
    ("timezone", {"timezone": "Europe/Atlantis"}),
    ("timezone", {"timezone": "../../etc/passwd"}),
    ("days", {"days": "someday"}),
    ("days", {"days": ""}),
    ("time", {"at": "25:00"}),
    ("time", {"at": "seven"}),
    ("article_limit", {"article_limit": 0}),
    ("article_limit", {"article_limit": 1000}),
    ("subject_template", {"subject_template": "{{ top.title"}),
    ("newsletter", {"newsletter": "nope"}),
])
def test_schedule_input_is_checked_and_the_wrong_field_named(app, db, newsletters, field, kwargs):
    args = {"newsletter": "daily", "days": "daily", "at": "07:00", "timezone": "Europe/Kyiv"} | kwargs
    with pytest.raises(InvalidInput) as caught:
        schedules.create_schedule(args.pop("newsletter"), args.pop("days"), args.pop("at"), args.pop("timezone"),
                                  **args)
    assert caught.value.field == field


# --- The tick: drafts, freezing, lateness -----------------------------------------------------------


def test_a_draft_is_made_an_hour_ahead_stays_editable_and_is_frozen_at_its_time(app, db, newsletters):
    created = utc(2026, 3, 7, 12)
    schedule = schedules.create_schedule("daily", "daily", "02:30", "America/New_York", now=created)
    assert schedule.next_run_at == utc(2026, 3, 8, 7, 0)
    older = make_article(utc(2026, 3, 7, 20))
    newer = make_article(utc(2026, 3, 8, 3))

    assert maintenance.tick(now=utc(2026, 3, 8, 5, 30))["editions_drafted"] == 0
    assert maintenance.tick(now=utc(2026, 3, 8, 6, 0))["editions_drafted"] == 1
    [draft] = editions(db)
    assert draft.status == EditionStatus.DRAFT and draft.run_at == utc(2026, 3, 8, 7, 0)
    assert [i.article_id for i in draft.items] == [newer.id, older.id]

    digests.remove_article(draft.id, older.id, now=utc(2026, 3, 8, 6, 10))
    digests.set_subject(draft.id, "Your Sunday briefing", now=utc(2026, 3, 8, 6, 11))
    assert maintenance.tick(now=utc(2026, 3, 8, 6, 59))["editions_frozen"] == 0

    report = maintenance.tick(now=utc(2026, 3, 8, 7, 0))
    assert report["editions_frozen"] == 1
    [frozen] = editions(db)
    assert frozen.status == EditionStatus.FROZEN and [i.article_id for i in frozen.items] == [newer.id]
    renderings = digests.edition_renderings(frozen.id)
    assert {r.subject for r in renderings.values()} == {"Your Sunday briefing"}
    assert db.session.get(Schedule, schedule.id).next_run_at == utc(2026, 3, 9, 6, 30)
    with pytest.raises(digests.EditionNotEditable):
        digests.add_article(frozen.id, older.id)


def test_a_draft_nobody_touched_picks_up_stories_published_before_its_time(app, db, newsletters):
    schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 1, 12))
    run_at = utc(2026, 6, 2, 4)
    first = make_article(run_at - dt.timedelta(hours=5))
    maintenance.tick(now=run_at - dt.timedelta(minutes=60))
    late_story = make_article(run_at - dt.timedelta(minutes=20))
    maintenance.tick(now=run_at)
    [edition] = editions(db)
    assert [i.article_id for i in edition.items] == [late_story.id, first.id]


def test_an_edition_with_nothing_new_is_skipped_and_renders_nothing(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 1))
    report = maintenance.tick(now=schedule.next_run_at)
    assert report["editions_skipped"] == 1
    [edition] = editions(db)
    assert edition.status == EditionStatus.SKIPPED and edition.note == "nothing new to send"
    assert db.session.scalar(select(func.count()).select_from(EditionRendering)) == 0


def test_after_two_hours_down_the_edition_is_made_late(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    due = schedule.next_run_at
    assert due == utc(2026, 6, 10, 4)
    story = make_article(due - dt.timedelta(hours=3))

    report = maintenance.tick(now=due + dt.timedelta(hours=2))

    assert report["editions_drafted"] == 1 and report["editions_frozen"] == 1
    [edition] = editions(db)
    assert edition.status == EditionStatus.FROZEN and edition.run_at == due
    assert "2 h 00 min late" in edition.note
    assert [i.article_id for i in edition.items] == [story.id]
    assert db.session.get(Schedule, schedule.id).next_run_at == due + dt.timedelta(days=1)


def test_after_ten_hours_down_the_edition_is_recorded_missed_and_its_stories_wait(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    due = schedule.next_run_at
    story = make_article(due - dt.timedelta(hours=3))

    report = maintenance.tick(now=due + dt.timedelta(hours=10))

    assert report["editions_missed"] == 1 and report["editions_frozen"] == 0
    [missed] = editions(db)
    assert missed.status == EditionStatus.MISSED and missed.items == [] and "missed" in missed.note
    assert db.session.get(Schedule, schedule.id).next_run_at == due + dt.timedelta(days=1)
    # The next edition still carries the story nobody received.
    maintenance.tick(now=due + dt.timedelta(days=1))
    sent_next = editions(db)[-1]
    assert sent_next.status == EditionStatus.FROZEN and [i.article_id for i in sent_next.items] == [story.id]


def test_a_draft_whose_time_passed_beyond_the_grace_period_is_missed_not_sent(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    due = schedule.next_run_at
    make_article(due - dt.timedelta(hours=3))
    maintenance.tick(now=due - dt.timedelta(minutes=30))
    report = maintenance.tick(now=due + dt.timedelta(hours=10))
    assert report["editions_missed"] == 1
    assert [e.status for e in editions(db)] == [EditionStatus.MISSED]


def test_days_of_downtime_are_recorded_one_missed_edition_per_run(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    due = schedule.next_run_at
    maintenance.tick(now=due + dt.timedelta(days=3, hours=1))
    found = editions(db)
    assert [e.status for e in found] == [EditionStatus.MISSED] * 3 + [EditionStatus.SKIPPED]
    assert [e.run_at for e in found] == [due + dt.timedelta(days=n) for n in range(4)]


# --- Exactly once ---------------------------------------------------------------------------------


def test_two_beat_processes_ticking_at_once_make_exactly_one_edition_per_run(app, db, newsletters):
    now = utc(2026, 6, 10, 3, 30)
    created = [
        schedules.create_schedule("daily" if n % 2 else "war-weekly", "daily", f"07:{n:02d}", "Europe/Kyiv",
                                  now=utc(2026, 6, 9, 12))
        for n in range(8)
    ]
    for n in range(12):
        make_article(now - dt.timedelta(hours=n + 1))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def beat():
        try:
            with app.app_context():
                barrier.wait()
                maintenance.tick(now=now)
        except BaseException as exc:  # noqa: B036 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    found = editions(db)
    assert sorted(e.schedule_id for e in found) == sorted(s.id for s in created)
    assert all(e.status == EditionStatus.DRAFT for e in found)
    # One newsletter's articles are never put in two of its editions by racing claims.
    for newsletter_id in {e.newsletter_id for e in found}:
        ids = [i.article_id for e in found if e.newsletter_id == newsletter_id for i in e.items]
        assert len(ids) == len(set(ids))


def test_a_retried_claim_of_the_same_run_makes_no_second_edition(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    due = schedule.next_run_at
    assert len(schedules.claim_due_editions(now=due - dt.timedelta(minutes=30)).drafted) == 1
    # As if the tick's commit was lost after the insert: the schedule still points at the same run.
    db.session.get(Schedule, schedule.id).next_run_at = due
    db.session.commit()
    again = schedules.claim_due_editions(now=due - dt.timedelta(minutes=29))
    assert again.drafted == [] and len(editions(db)) == 1
    assert db.session.get(Schedule, schedule.id).next_run_at == due + dt.timedelta(days=1)
    with pytest.raises(IntegrityError):
        db.session.add(Edition(newsletter_id=schedule.newsletter_id, schedule_id=schedule.id, run_at=due))
        db.session.commit()
    db.session.rollback()


def test_a_schedule_locked_by_another_beat_is_skipped_not_waited_for(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    now = schedule.next_run_at - dt.timedelta(minutes=30)
    outcome = {}

    def claim():
        with app.app_context():
            outcome["claimed"] = schedules.claim_due_editions(now=now)

    with db.engine.connect() as other:
        other.execute(text("SELECT id FROM schedules WHERE id = :id FOR UPDATE"), {"id": schedule.id})
        worker = threading.Thread(target=claim)
        worker.start()
        worker.join(5)
        blocked = worker.is_alive()
        other.rollback()
    worker.join()
    assert not blocked, "the claim waited for a lock instead of skipping the schedule"
    assert outcome["claimed"].drafted == []
    assert len(schedules.claim_due_editions(now=now).drafted) == 1


# --- Changing schedules ---------------------------------------------------------------------------


def test_changing_the_time_cancels_the_pending_draft_and_frees_its_articles(app, db, newsletters):
    schedule = schedules.create_schedule("daily", "daily", "07:00", "Europe/Kyiv", now=utc(2026, 6, 9, 12))
    story = make_article(utc(2026, 6, 9, 20))
    maintenance.tick(now=utc(2026, 6, 10, 3, 30))
    [draft] = editions(db)
    assert [i.article_id for i in draft.items] == [story.id]

    schedules.update_schedule(schedule.id, at="08:15", now=utc(2026, 6, 10, 3, 40))

    assert editions(db)[0].status == EditionStatus.CANCELLED
    assert db.session.get(Schedule, schedule.id).next_run_at == utc(2026, 6, 10, 5, 15)
    maintenance.tick(now=utc(2026, 6, 10, 4, 30))
    assert [i.article_id for i in editions(db)[-1].items] == [story.id]

    schedules.update_schedule(schedule.id, enabled=False, now=utc(2026, 6, 10, 4, 31))
    assert db.session.get(Schedule, schedule.id).next_run_at is None
    assert editions(db)[-1].status == EditionStatus.CANCELLED


def test_schedules_are_created_listed_and_edited_from_the_cli(app, db, newsletters):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["schedules", "create", "--newsletter", "war-weekly", "--days", "sat", "--time", "09:00",
                               "--timezone", "Europe/Kyiv", "--limit", "8", "--include", "War,Politics",
                               "--exclude", "Sport", "--subject", "{{ newsletter.name }}: {{ top.title }}"])
    assert made.exit_code == 0, made.output
    assert "war-weekly\tsat 09:00 Europe/Kyiv\tlimit 8\tenabled" in made.output
    assert "only: War, Politics\tnot: Sport" in made.output
    schedule_id = made.output.split("\t")[0]
    edited = runner.invoke(args=["schedules", "edit", schedule_id, "--days", "sat,sun", "--disable"])
    assert edited.exit_code == 0 and "sat,sun 09:00" in edited.output and "disabled\tnext -" in edited.output
    bad = runner.invoke(args=["schedules", "edit", schedule_id, "--timezone", "Mars/Olympus"])
    assert bad.exit_code == 1 and "IANA" in bad.output
    assert "war-weekly" in runner.invoke(args=["schedules", "list", "--newsletter", "war-weekly"]).output
