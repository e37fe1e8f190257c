"""The sending engine: fan an edition out into deliveries, lease batches, personalize, deliver, record each one.

Exactly-once over SMTP is impossible (a crash between the server's 250 and our record of it); we keep
that window to one message per connection, record every acceptance at once, and give each delivery
one Message-ID for all its attempts, so a rare second copy is recognisably the same message.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

from flask import current_app
from sqlalchemy import String, bindparam, cast, exists, func, insert, literal, or_, select, text, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from newsletter import jobs, mail, ratelimit, subscribers
from newsletter.addresses import InvalidInput
from newsletter.dkim import DKIMSigner
from newsletter.extensions import db
from newsletter.models import (
    Audience,
    BatchStatus,
    Delivery,
    DeliveryBatch,
    DeliveryStatus,
    Edition,
    EditionRendering,
    EditionSend,
    EditionStatus,
    Newsletter,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.tokens import Tokens
from newsletter.urls import external_url

log = logging.getLogger(__name__)

# Deliveries per eligibility re-check, per look at pause and cancel, and per request to the rate
# bucket: at full speed a reader who unsubscribes is seen within a few dozen milliseconds.
CHUNK = 50
# A batch hands back what it has left after this long, so a task lasts minutes even at a low rate.
BATCH_SECONDS = 300.0
# A chain of batch tasks waits for work due this soon; work due later waits for the tick.
CHAIN_WAIT_SECONDS = 30.0


def _config():
    return current_app.config["HERALD"]


# --- Fan-out --------------------------------------------------------------------------------------


def audience_expression(subscriber_id: ColumnElement) -> ColumnElement:
    """The SQL choosing each reader's audience at fan-out: "member" while their membership gives access."""
    from newsletter.billing import memberships

    return memberships.audience_expression(subscriber_id)


@dataclass(frozen=True)
class Started:
    """What start_edition did: `started` is False when the edition was not frozen (already going, or gone)."""

    edition_id: int
    started: bool
    recipients: int = 0


def start_edition(edition_id: int, now: dt.datetime | None = None) -> Started:
    """Fan a frozen edition out into one delivery per eligible reader, then enqueue its batch tasks.

    The deliveries are one INSERT ... SELECT over subscribers.recipients_query, in the transaction
    that moves the edition from frozen to sending, so a second call (a redelivered task, two ticks)
    finds it no longer frozen and inserts nothing.
    """
    now = now or utcnow()
    config = _config()
    _fresh_statistics()
    taken = db.session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.status == EditionStatus.FROZEN)
        .values(status=EditionStatus.SENDING, updated_at=now)
    )
    if taken.rowcount != 1:
        db.session.rollback()
        return Started(edition_id, False)
    edition = db.session.get(Edition, edition_id)
    assert edition is not None
    recipients = subscribers.recipients_query(edition.newsletter_id).subquery()
    reader = recipients.c.id
    # <edition.subscriber.nonce@domain>: unique across editions, installs and database resets.
    nonce = uuid.uuid4().hex[:10]
    message_id = literal(f"<{edition_id}.") + cast(reader, String) + literal(f".{nonce}@{config.mail_domain}>")
    inserted = db.session.execute(
        insert(Delivery).execution_options(preserve_rowcount=True).from_select(
            ["edition_id", "subscriber_id", "audience", "message_id", "status", "attempts"],
            select(literal(edition_id), reader, audience_expression(reader), message_id,
                   literal(DeliveryStatus.QUEUED.value), literal(0)),
        )
    ).rowcount
    numbered = (
        select(Delivery.subscriber_id,
               ((func.row_number().over(order_by=Delivery.subscriber_id) - 1) // config.SEND_BATCH_SIZE).label("n"))
        .where(Delivery.edition_id == edition_id)
        .subquery()
    )
    db.session.execute(
        insert(DeliveryBatch).from_select(
            ["edition_id", "first_subscriber_id", "last_subscriber_id", "size", "status", "available_at", "claims"],
            select(literal(edition_id), func.min(numbered.c.subscriber_id), func.max(numbered.c.subscriber_id),
                   func.count(), literal(BatchStatus.OPEN.value), literal(now, DeliveryBatch.available_at.type),
                   literal(0))
            .group_by(numbered.c.n),
        )
    )
    db.session.add(EditionSend(edition_id=edition_id, started_at=now, recipients=inserted))
    if inserted == 0:
        edition.status, edition.sent_at, edition.note = EditionStatus.SENT, now, "no recipients"
    db.session.commit()
    log.info("edition %s fanned out to %d deliveries", edition_id, inserted)
    if inserted:
        _enqueue_chains(edition_id)
    return Started(edition_id, True, inserted)


# The tables the fan-out and the send-time re-check read.
_READER_TABLES = ("subscribers", "subscriptions", "suppressions", "memberships")


def _fresh_statistics() -> None:
    """Let PostgreSQL's planner know how many readers there are before a send queries them thousands of times.

    Right after a bulk import autovacuum has not analyzed the tables yet; the planner then takes
    5,000 subscriptions for one row and joins with a scan of every subscriber per row (measured:
    2.4 s per 50-reader re-check; a million readers would never finish).
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    stale = db.session.scalars(
        text("SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:names) "
             "AND (coalesce(last_analyze, last_autoanalyze) IS NULL "
             "OR n_mod_since_analyze > 0.1 * greatest(n_live_tup, 1000))"),
        {"names": list(_READER_TABLES)},
    ).all()
    for name in stale:
        db.session.execute(text(f'ANALYZE "{name}"'))


def _enqueue_chains(edition_id: int) -> None:
    for _ in range(_config().SEND_CONCURRENCY):
        jobs.enqueue(jobs.SEND_BATCH, edition_id)


def start_due_editions(now: dt.datetime | None = None) -> list[int]:
    """Enqueue the start of every frozen edition whose time has come (within the grace period)."""
    now = now or utcnow()
    grace = dt.timedelta(hours=_config().EDITION_GRACE_HOURS)
    due = list(db.session.scalars(
        select(Edition.id)
        .where(Edition.status == EditionStatus.FROZEN, Edition.run_at <= now, Edition.run_at >= now - grace)
        .order_by(Edition.run_at, Edition.id)
    ))
    db.session.commit()
    for edition_id in due:
        jobs.enqueue(jobs.START_EDITION, edition_id)
    return due


# --- What a batch needs to know about its edition -------------------------------------------------


@dataclass
class _EditionMail:
    """An edition's messages, built once per process and audience."""

    newsletter_id: int
    sender: str
    templates: dict[Audience, mail.MessageTemplate]
    unsubscribe_prefix: str
    preferences_prefix: str
    mailto: str
    tokens: Tokens


_EDITIONS: OrderedDict[tuple, _EditionMail] = OrderedDict()


@lru_cache(maxsize=4)
def _signer(key_file: str, domain: str, selector: str) -> DKIMSigner:
    return DKIMSigner.from_file(key_file, domain, selector)


def dkim_signer(from_addr: str) -> DKIMSigner | None:
    """Return the DKIM signer DKIM_KEY_FILE configures, for mail from this address, or None."""
    config = _config()
    if not config.DKIM_KEY_FILE:
        return None
    domain = config.DKIM_DOMAIN or from_addr.rpartition("@")[2]
    return _signer(config.DKIM_KEY_FILE, domain, config.DKIM_SELECTOR)


def _sender(newsletter: Newsletter) -> tuple[str, str]:
    default_name, default_addr = mail.parse_from(_config().MAIL_FROM)
    return newsletter.sender_name or default_name or newsletter.name, newsletter.sender_email or default_addr


def build_template(edition: Edition, rendering: EditionRendering | _Rendering, date: dt.datetime,
                   subject_prefix: str = "") -> mail.MessageTemplate:
    """Return an edition's message for one audience, with the list headers and DKIM, slots unfilled."""
    newsletter = edition.newsletter
    from_name, from_addr = _sender(newsletter)
    headers = {
        "List-Id": f"{newsletter.name} <{newsletter.list_id}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
        # Campaign, stream, type and our constant sender id: aggregate figures per edition in Gmail.
        "Feedback-ID": f"{edition.id}:{newsletter.slug}:digest:{_config().FEEDBACK_ID_SENDER}",
    }
    return mail.MessageTemplate(
        from_name=from_name, from_addr=from_addr, subject=subject_prefix + rendering.subject,
        text=rendering.text, html=rendering.html, date=date, headers=headers, signer=dkim_signer(from_addr),
    )


@dataclass(frozen=True)
class _Rendering:
    subject: str
    html: str
    text: str


def _link_prefixes() -> tuple[str, str, str]:
    # Building a URL through the router costs ~15 us; tokens are URL-safe, so a prefix is enough.
    marker = "T"
    unsubscribe = external_url("public.unsubscribe_page", token=marker)[:-1]
    preferences = external_url("public.preferences", token=marker)[:-1]
    return unsubscribe, preferences, _config().LIST_UNSUBSCRIBE_MAILTO or f"unsubscribe@{_config().mail_domain}"


def _edition_mail(edition_id: int, started_at: dt.datetime) -> _EditionMail:
    config = _config()
    # Everything the prebuilt messages depend on besides the edition itself.
    key = (edition_id, started_at, config.BASE_URL, config.MAIL_FROM, config.DKIM_KEY_FILE, config.DKIM_DOMAIN,
           config.DKIM_SELECTOR, config.FEEDBACK_ID_SENDER, config.LIST_UNSUBSCRIBE_MAILTO, config.SECRET_KEY)
    found = _EDITIONS.get(key)
    if found is not None:
        _EDITIONS.move_to_end(key)
        return found
    edition = db.session.get(Edition, edition_id)
    assert edition is not None
    renderings = {r.audience: r for r in db.session.scalars(
        select(EditionRendering).where(EditionRendering.edition_id == edition_id))}
    if not renderings:
        raise InvalidInput(f"Edition {edition_id} has no rendering to send.", "edition")
    fallback = renderings.get(Audience.NON_MEMBER) or next(iter(renderings.values()))
    templates = {a: build_template(edition, renderings.get(a, fallback), started_at) for a in Audience}
    unsubscribe, preferences, mailto = _link_prefixes()
    found = _EditionMail(edition.newsletter_id, _sender(edition.newsletter)[1], templates, unsubscribe,
                         preferences, mailto, current_app.extensions["herald_tokens"])
    db.session.commit()
    _EDITIONS[key] = found
    while len(_EDITIONS) > 8:
        _EDITIONS.popitem(last=False)
    return found


def _reader(edition_mail: _EditionMail, subscriber_id: int, address: str, name: str, message_id: str) -> mail.Reader:
    tokens = edition_mail.tokens
    unsubscribe = tokens.unsubscribe(subscriber_id, edition_mail.newsletter_id)
    return mail.Reader(
        address=address, name=name, message_id=message_id,
        unsubscribe_url=edition_mail.unsubscribe_prefix + unsubscribe,
        unsubscribe_mailto=f"mailto:{edition_mail.mailto}?subject=unsubscribe%20{unsubscribe}",
        preferences_url=edition_mail.preferences_prefix + tokens.preferences(subscriber_id),
    )


# --- Transports -----------------------------------------------------------------------------------

_TRANSPORTS: dict[tuple[str, float], mail.Transport] = {}


def _transport() -> mail.Transport:
    """Return this process's transport for MAIL_URL: one SMTP connection kept across batches."""
    config = _config()
    key = (config.MAIL_URL, config.SMTP_TIMEOUT)
    if key not in _TRANSPORTS:
        _TRANSPORTS[key] = mail.transport_from_url(config.MAIL_URL, timeout=config.SMTP_TIMEOUT)
    return _TRANSPORTS[key]


def close_transports() -> None:
    """Say goodbye to the SMTP servers (a worker process shutting down)."""
    while _TRANSPORTS:
        _, transport = _TRANSPORTS.popitem()
        try:
            transport.close()
        except mail.MailError:
            pass


# --- Failures -------------------------------------------------------------------------------------


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts`: doubling from SEND_RETRY_SECONDS, capped, with jitter."""
    config = _config()
    ceiling = min(config.SEND_RETRY_MAX_SECONDS, config.SEND_RETRY_SECONDS * 2 ** max(attempts - 1, 0))
    # Between half and all of it: spread out, yet never an immediate retry.
    return random.uniform(ceiling / 2, ceiling)


_accepted_here = 0


def _kill_point() -> int | None:
    """SEND_FAULT=kill-after-accept:N (tests only): the acceptance after which this process dies."""
    kind, _, count = _config().SEND_FAULT.partition(":")
    return int(count) if kind == "kill-after-accept" else None


def _fault_after_accept(kill_after: int) -> None:
    """Die right after this process's `kill_after`-th acceptance, before it is recorded (the crash drill)."""
    global _accepted_here
    _accepted_here += 1
    if _accepted_here == kill_after:
        log.warning("SEND_FAULT: killing the worker after its message %d was accepted", _accepted_here)
        # The worker runs as its own process group, led by its main process; Celery's pool processes
        # die with it (they are set up to get SIGKILL when it dies), wherever they are.
        os.kill(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


# --- Batches --------------------------------------------------------------------------------------


@dataclass
class Lease:
    """A batch claimed by this process until `deadline` (time.monotonic), proven by `token`."""

    batch_id: int
    edition_id: int
    first_subscriber_id: int
    last_subscriber_id: int
    token: str
    deadline: float


def _sendable(edition_id: int) -> EditionSend | None:
    send = db.session.get(EditionSend, edition_id, populate_existing=True)
    status = db.session.scalar(select(Edition.status).where(Edition.id == edition_id))
    if send is None or status != EditionStatus.SENDING or send.paused_at is not None:
        return None
    return send


def claim_batch(edition_id: int) -> Lease | None:
    """Lease the next due batch of a sending edition (FOR UPDATE SKIP LOCKED), or return None."""
    if _sendable(edition_id) is None:
        db.session.commit()
        return None
    lease_seconds = _config().SEND_LEASE_SECONDS
    started = time.monotonic()
    now = utcnow()
    token = uuid.uuid4().hex
    # On SQLite the whole UPDATE runs under the database's single write lock: the same guarantee.
    due = (
        select(DeliveryBatch.id)
        .where(DeliveryBatch.edition_id == edition_id, DeliveryBatch.status == BatchStatus.OPEN,
               DeliveryBatch.available_at <= now)
        .order_by(DeliveryBatch.available_at, DeliveryBatch.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = db.session.execute(
        update(DeliveryBatch)
        .where(DeliveryBatch.id == due)
        .values(lease_token=token, available_at=now + dt.timedelta(seconds=lease_seconds),
                claims=DeliveryBatch.claims + 1)
        .returning(DeliveryBatch.id, DeliveryBatch.first_subscriber_id, DeliveryBatch.last_subscriber_id)
    ).first()
    db.session.commit()
    if row is None:
        return None
    return Lease(row[0], edition_id, row[1], row[2], token, started + lease_seconds)


@dataclass
class BatchResult:
    """What one batch task did."""

    claimed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    # Why it stopped before the end: "", "paused", "cancelled", "lease lost", "unreachable", "time".
    stopped: str = ""
    finished: bool = False


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Recording an acceptance, fenced: only while the batch still carries this lease's token.
_SENT_SQL = ("UPDATE deliveries SET status = {}, sent_at = CURRENT_TIMESTAMP, last_error = NULL "
             "WHERE edition_id = {} AND subscriber_id = {} "
             "AND EXISTS (SELECT 1 FROM delivery_batches WHERE id = {} AND lease_token = {})")


def _fenced(edition_id: int, subscriber_id, lease: Lease):
    return (
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.subscriber_id == subscriber_id,
               exists().where(DeliveryBatch.id == lease.batch_id, DeliveryBatch.lease_token == lease.token))
    )


class _BatchRun:
    """Deliver one leased batch over this process's SMTP connection, recording each delivery at once."""

    def __init__(self, lease: Lease, transport: mail.Transport):
        config = _config()
        self.lease = lease
        self.transport = transport
        self.lease_seconds = config.SEND_LEASE_SECONDS
        self.max_attempts = config.SEND_MAX_ATTEMPTS
        self.bucket = ratelimit.send_bucket(config.SEND_RATE, config.REDIS_URL)
        self.counts: dict[str, int] = {}
        self.sent = 0
        self.began = time.monotonic()
        self.retry_later: dt.timedelta | None = None
        # Marks commit one by one on their own connection: on PostgreSQL without waiting for the WAL
        # flush (a database crash may forget the last few marks, which then go again, same
        # Message-ID), so recording each acceptance costs a round trip, not a disk sync.
        self.conn: Connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.postgres = self.conn.dialect.name == "postgresql"
        if self.postgres:
            self.conn.exec_driver_sql("SET synchronous_commit TO off")
        self.kill_after = _kill_point()
        # The one write every message makes, straight to the driver: SQLAlchemy's execution doubles
        # its cost (measured: 95 -> 44 us of CPU on PostgreSQL).
        placeholder = "%({})s" if self.conn.dialect.paramstyle == "pyformat" else ":{}"
        self.sent_sql = _SENT_SQL.format(*(placeholder.format(n) for n in ("st", "e", "s", "b", "t")))
        self.sent_params = {"st": DeliveryStatus.SENT.value, "e": lease.edition_id, "s": 0, "b": lease.batch_id,
                            "t": lease.token}
        self.cursor = self.conn.connection.dbapi_connection.cursor()
        param = bindparam("s")
        self.final_stmt = _fenced(lease.edition_id, param, lease).values(
            status=bindparam("st", type_=Delivery.status.type), last_error=bindparam("err"))
        self.retry_stmt = _fenced(lease.edition_id, param, lease).values(
            attempts=bindparam("n"), retry_at=bindparam("when", type_=Delivery.retry_at.type),
            last_error=bindparam("err"))

    def close(self) -> None:
        try:
            self.cursor.close()
            if self.postgres:
                self.conn.exec_driver_sql("RESET synchronous_commit")
        finally:
            self.conn.close()

    # Leases and control.

    def _renew_if_due(self) -> None:
        now = time.monotonic()
        # Never start a send the lease might not cover; renew when a third of it is gone.
        if now < self.lease.deadline - self.lease_seconds * 2 / 3:
            return
        until = utcnow() + dt.timedelta(seconds=self.lease_seconds)
        renewed = self.conn.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == self.lease.batch_id, DeliveryBatch.lease_token == self.lease.token)
            .values(available_at=until)
        ).rowcount
        if renewed != 1:
            raise _Stop("lease lost")
        self.lease.deadline = now + self.lease_seconds

    def _check_control(self) -> None:
        row = self.conn.execute(
            select(Edition.status, EditionSend.paused_at)
            .join(EditionSend, EditionSend.edition_id == Edition.id)
            .where(Edition.id == self.lease.edition_id)
        ).first()
        if row is None or row[0] == EditionStatus.CANCELLED:
            raise _Stop("cancelled")
        if row[1] is not None:
            raise _Stop("paused")
        if time.monotonic() - self.began > BATCH_SECONDS:
            raise _Stop("time")
        self._renew_if_due()

    def _take_tokens(self, wanted: int) -> int:
        while True:
            grant = self.bucket.take(wanted)
            if grant.granted:
                return grant.granted
            # Waiting on the rate keeps the lease alive and still hears pause and cancel.
            self._check_control()
            time.sleep(min(grant.wait, self.lease_seconds / 6, 1.0))

    # Recording.

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _record(self, stmt, **params) -> None:
        if self.conn.execute(stmt, params).rowcount != 1:
            raise _Stop("lease lost")

    def _sent(self, subscriber_id: int) -> None:
        self.sent_params["s"] = subscriber_id
        self.cursor.execute(self.sent_sql, self.sent_params)
        if self.cursor.rowcount != 1:
            raise _Stop("lease lost")
        self.sent += 1

    def _final(self, subscriber_id: int, status: DeliveryStatus, error: str | None = None) -> None:
        self._record(self.final_stmt, s=subscriber_id, st=status, err=error[:500] if error else None)
        self._count(status.value)

    # The run.

    def rows(self) -> list[Row]:
        lease = self.lease
        return list(self.conn.execute(
            select(Delivery.subscriber_id, Delivery.audience, Delivery.message_id, Delivery.attempts,
                   Subscriber.email, Subscriber.email_key, Subscriber.name)
            .select_from(Delivery)
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == lease.edition_id,
                   Delivery.subscriber_id.between(lease.first_subscriber_id, lease.last_subscriber_id),
                   Delivery.status == DeliveryStatus.QUEUED,
                   or_(Delivery.retry_at.is_(None), Delivery.retry_at <= utcnow()))
            .order_by(Delivery.subscriber_id)
        ))

    def deliver(self, edition_mail: _EditionMail) -> None:
        rows = self.rows()
        done = 0
        while done < len(rows):
            self._check_control()
            chunk = rows[done:done + self._take_tokens(min(CHUNK, len(rows) - done))]
            done += len(chunk)
            # At send time, not at fan-out: a reader who left a second ago gets nothing.
            ids = [r.subscriber_id for r in chunk]
            # The second IN is redundant for the result; it lets the planner start from the few
            # subscriptions concerned whatever its statistics say.
            eligible = set(self.conn.execute(
                subscribers.recipients_query(edition_mail.newsletter_id)
                .where(Subscriber.id.in_(ids), Subscription.subscriber_id.in_(ids))
            ).scalars())
            for row in chunk:
                self._renew_if_due()
                if time.monotonic() >= self.lease.deadline:
                    # A renewal that took longer than the lease: someone may hold the batch now.
                    raise _Stop("lease lost")
                if row.subscriber_id not in eligible:
                    self._final(row.subscriber_id, DeliveryStatus.SKIPPED)
                    continue
                reader = _reader(edition_mail, row.subscriber_id, row.email, row.name or "", row.message_id)
                data = edition_mail.templates[row.audience].render(reader)
                try:
                    self.transport.send_prepared(edition_mail.sender, row.email, data)
                except mail.MailError as exc:
                    if exc.stage == "connect":
                        # Nothing was tried: no server, or it refuses us. Charge no attempt; every
                        # other message would fare the same, so hand the batch back for a while.
                        self.retry_later = dt.timedelta(seconds=backoff(1))
                        log.warning("cannot reach the mail server: %s", exc)
                        raise _Stop("unreachable") from None
                    if exc.permanent:
                        self._permanent(row, exc)
                    else:
                        self._temporary(row, exc)
                else:
                    if self.kill_after is not None:
                        _fault_after_accept(self.kill_after)
                    self._sent(row.subscriber_id)

    def _temporary(self, row: Row, exc: mail.MailError) -> None:
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            self._final(row.subscriber_id, DeliveryStatus.FAILED, str(exc))
            return
        when = utcnow() + dt.timedelta(seconds=backoff(attempts))
        self._record(self.retry_stmt, s=row.subscriber_id, n=attempts, when=when, err=str(exc)[:500])
        self._count("retrying")

    def _permanent(self, row: Row, exc: mail.MailError) -> None:
        if not exc.mailbox_missing:
            # Policy or content (5.7.x and the like): this message failed, the reader did nothing wrong.
            self._final(row.subscriber_id, DeliveryStatus.FAILED, str(exc))
            return
        # Suppress first: if we die between the two, the address is blocked and its delivery is
        # skipped when its batch runs again, rather than recorded as bounced yet still mailable.
        subscribers.suppress(row.email_key, reason="hard_bounce", detail=str(exc)[:500])
        self._final(row.subscriber_id, DeliveryStatus.BOUNCED, str(exc))

    def release(self, stopped: str) -> bool:
        """Hand the batch back, or close it when nothing is left; return True if it is done."""
        lease = self.lease
        now = utcnow()
        left, waiting, earliest = self.conn.execute(
            select(func.count(), func.count(Delivery.retry_at), func.min(Delivery.retry_at))
            .where(Delivery.edition_id == lease.edition_id,
                   Delivery.subscriber_id.between(lease.first_subscriber_id, lease.last_subscriber_id),
                   Delivery.status == DeliveryStatus.QUEUED)
        ).one()
        if left == 0:
            values = {"status": BatchStatus.DONE, "available_at": now}
        elif self.retry_later is not None:
            values = {"available_at": now + self.retry_later}
        elif waiting == left and not stopped:
            values = {"available_at": max(earliest, now)}
        else:
            values = {"available_at": now}
        self.conn.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == lease.batch_id, DeliveryBatch.lease_token == lease.token)
            .values(lease_token=None, **values)
        )
        return left == 0


def deliver_batch(edition_id: int, transport: mail.Transport | None = None) -> BatchResult:
    """Claim one batch of a sending edition and deliver it; record each delivery as soon as it is known."""
    lease = claim_batch(edition_id)
    if lease is None:
        return BatchResult(finished=finish_if_done(edition_id))
    send = db.session.get(EditionSend, edition_id)
    assert send is not None
    edition_mail = _edition_mail(edition_id, send.started_at)
    run = _BatchRun(lease, transport or _transport())
    stopped = ""
    try:
        try:
            run.deliver(edition_mail)
        except _Stop as stop:
            stopped = stop.reason
        if stopped != "lease lost":
            run.release(stopped)
    finally:
        run.close()
    if stopped:
        log.info("batch %s of edition %s stopped: %s", lease.batch_id, edition_id, stopped)
    counts = dict(run.counts, **({DeliveryStatus.SENT.value: run.sent} if run.sent else {}))
    return BatchResult(claimed=True, counts=counts, stopped=stopped, finished=finish_if_done(edition_id))


def run_batch(edition_id: int) -> BatchResult:
    """Deliver a batch, then keep the chain going: the next batch now, or when the next retry is due."""
    result = deliver_batch(edition_id)
    if result.stopped == "unreachable":
        # Every batch would find the server down too: come back after the first retry delay.
        jobs.enqueue(jobs.SEND_BATCH, edition_id, countdown=min(backoff(1), CHAIN_WAIT_SECONDS))
        return result
    if result.claimed and result.stopped not in ("paused", "cancelled"):
        jobs.enqueue(jobs.SEND_BATCH, edition_id)
        return result
    wait = seconds_until_due(edition_id)
    if wait is not None and wait <= CHAIN_WAIT_SECONDS:
        # A short countdown only: a long one on Redis outlives the visibility timeout and repeats.
        jobs.enqueue(jobs.SEND_BATCH, edition_id, countdown=max(wait, 0.05))
    return result


def seconds_until_due(edition_id: int) -> float | None:
    """Return how soon a batch of this sending, unpaused edition can be claimed; None when none can."""
    if _sendable(edition_id) is None:
        db.session.commit()
        return None
    earliest = db.session.scalar(
        select(func.min(DeliveryBatch.available_at))
        .where(DeliveryBatch.edition_id == edition_id, DeliveryBatch.status == BatchStatus.OPEN)
    )
    db.session.commit()
    if earliest is None:
        return None
    return max((earliest - utcnow()).total_seconds(), 0.0)


def finish_if_done(edition_id: int, now: dt.datetime | None = None) -> bool:
    """Mark a sending edition sent once no batch is open; return True if it is (now) finished."""
    now = now or utcnow()
    open_left = db.session.scalar(
        select(exists().where(DeliveryBatch.edition_id == edition_id, DeliveryBatch.status == BatchStatus.OPEN))
    )
    if open_left:
        db.session.commit()
        return False
    done = db.session.execute(
        update(Edition).where(Edition.id == edition_id, Edition.status == EditionStatus.SENDING)
        .values(status=EditionStatus.SENT, sent_at=func.coalesce(Edition.sent_at, now), updated_at=now)
    ).rowcount
    if done:
        db.session.execute(update(EditionSend).where(EditionSend.edition_id == edition_id).values(finished_at=now))
        log.info("edition %s sent", edition_id)
    db.session.commit()
    return bool(done)


# --- The tick -------------------------------------------------------------------------------------


def reclaim_expired_leases(now: dt.datetime | None = None) -> int:
    """Free the batches whose holder stopped renewing (a worker died); return how many."""
    now = now or utcnow()
    freed = db.session.execute(
        update(DeliveryBatch)
        .where(DeliveryBatch.status == BatchStatus.OPEN, DeliveryBatch.lease_token.is_not(None),
               DeliveryBatch.available_at < now)
        .values(lease_token=None)
    ).rowcount
    db.session.commit()
    if freed:
        log.warning("reclaimed %d batch(es) whose lease ran out", freed)
    return freed


def revive_stalled_sends(now: dt.datetime | None = None) -> list[int]:
    """Enqueue batch tasks for sending editions with due work and fewer holders than SEND_CONCURRENCY.

    A broker that lost tasks (a worker killed before it acknowledged them) leaves fewer chains of
    batch tasks than there should be; an extra one now and then is harmless, it just finds no work.
    """
    now = now or utcnow()
    wanted = _config().SEND_CONCURRENCY
    due = exists().where(DeliveryBatch.edition_id == Edition.id, DeliveryBatch.status == BatchStatus.OPEN,
                         DeliveryBatch.available_at < now)
    live = (
        select(func.count())
        .where(DeliveryBatch.edition_id == Edition.id, DeliveryBatch.status == BatchStatus.OPEN,
               DeliveryBatch.lease_token.is_not(None), DeliveryBatch.available_at >= now)
        .scalar_subquery()
    )
    stalled = db.session.execute(
        select(Edition.id, live)
        .join(EditionSend, EditionSend.edition_id == Edition.id)
        .where(Edition.status == EditionStatus.SENDING, EditionSend.paused_at.is_(None), due, live < wanted)
    ).all()
    db.session.commit()
    for edition_id, holders in stalled:
        for _ in range(wanted - holders):
            jobs.enqueue(jobs.SEND_BATCH, edition_id)
    return [edition_id for edition_id, _ in stalled]


def finish_sent_editions(now: dt.datetime | None = None) -> list[int]:
    """Mark sent the sending editions with nothing left open (their last worker died before it could)."""
    ids = list(db.session.scalars(select(Edition.id).where(Edition.status == EditionStatus.SENDING)))
    db.session.commit()
    return [i for i in ids if finish_if_done(i, now)]


def sending_duties(now: dt.datetime | None = None) -> dict[str, int]:
    """The tick's part: start due editions, reclaim expired leases, re-issue lost batch tasks, finish."""
    now = now or utcnow()
    started = start_due_editions(now)
    reclaimed = reclaim_expired_leases(now)
    revived = revive_stalled_sends(now)
    finished = finish_sent_editions(now)
    return {"editions_started": len(started), "leases_reclaimed": reclaimed, "sends_revived": len(revived),
            "editions_sent": len(finished)}


# --- Control --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where an edition's sending stands."""

    edition_id: int
    status: EditionStatus
    paused: bool
    total: int
    counts: dict[DeliveryStatus, int]

    @property
    def queued(self) -> int:
        return self.counts.get(DeliveryStatus.QUEUED, 0)

    @property
    def done(self) -> int:
        return self.total - self.queued


def progress(edition_id: int) -> Progress:
    """Return an edition's deliveries counted by status."""
    edition = db.session.get(Edition, edition_id)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    send = db.session.get(EditionSend, edition_id)
    counts = {DeliveryStatus(status): n for status, n in db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.edition_id == edition_id).group_by(Delivery.status))}
    db.session.commit()
    return Progress(edition_id, edition.status, bool(send and send.paused_at), sum(counts.values()), counts)


def _sending_edition(edition_id: int) -> tuple[Edition, EditionSend]:
    edition = db.session.get(Edition, edition_id, populate_existing=True)
    send = db.session.get(EditionSend, edition_id, populate_existing=True)
    if edition is None or send is None:
        raise InvalidInput(f"Edition {edition_id} has not started sending.", "edition")
    return edition, send


def pause(edition_id: int) -> bool:
    """Pause a sending edition: batches stop within a chunk and nothing is claimed until it resumes."""
    edition, send = _sending_edition(edition_id)
    if edition.status != EditionStatus.SENDING or send.paused_at is not None:
        db.session.commit()
        return False
    send.paused_at = utcnow()
    db.session.commit()
    return True


def resume(edition_id: int) -> bool:
    """Resume a paused edition and enqueue its batch tasks."""
    edition, send = _sending_edition(edition_id)
    if edition.status != EditionStatus.SENDING or send.paused_at is None:
        db.session.commit()
        return False
    send.paused_at = None
    db.session.commit()
    _enqueue_chains(edition_id)
    return True


def cancel(edition_id: int, now: dt.datetime | None = None) -> int:
    """Cancel a frozen or sending edition; return how many deliveries will not be sent.

    A message already handed to the server when the cancel lands is still recorded as sent.
    """
    now = now or utcnow()
    edition = db.session.get(Edition, edition_id, populate_existing=True)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    if edition.status not in (EditionStatus.FROZEN, EditionStatus.SENDING):
        raise InvalidInput(f"Edition {edition_id} is {edition.status.value}; only a frozen or sending one "
                           "can be cancelled here.", "edition")
    cancelled = db.session.execute(
        update(Delivery).where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.CANCELLED)
    ).rowcount
    # Lease tokens stay: a batch's in-flight message still records what really happened to it.
    db.session.execute(update(DeliveryBatch).where(DeliveryBatch.edition_id == edition_id,
                                                   DeliveryBatch.status == BatchStatus.OPEN)
                       .values(status=BatchStatus.DONE))
    db.session.execute(update(EditionSend).where(EditionSend.edition_id == edition_id).values(finished_at=now))
    edition.status, edition.updated_at = EditionStatus.CANCELLED, now
    edition.note = f"cancelled while sending: {cancelled} not sent" if cancelled else "cancelled before sending"
    db.session.commit()
    return cancelled


def retry_failed(edition_id: int, now: dt.datetime | None = None) -> int:
    """Queue an edition's failed deliveries again (never bounced ones) and send them; return how many."""
    now = now or utcnow()
    edition, send = _sending_edition(edition_id)
    if edition.status not in (EditionStatus.SENDING, EditionStatus.SENT):
        raise InvalidInput(f"Edition {edition_id} is {edition.status.value}; failed deliveries of a sending "
                           "or sent edition can be retried.", "edition")
    queued = db.session.execute(
        update(Delivery).where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.QUEUED, attempts=0, retry_at=None)
    ).rowcount
    if queued:
        has_queued = exists().where(
            Delivery.edition_id == DeliveryBatch.edition_id, Delivery.status == DeliveryStatus.QUEUED,
            Delivery.subscriber_id.between(DeliveryBatch.first_subscriber_id, DeliveryBatch.last_subscriber_id))
        db.session.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.edition_id == edition_id, DeliveryBatch.status == BatchStatus.DONE, has_queued)
            .values(status=BatchStatus.OPEN, available_at=now, lease_token=None)
        )
        edition.status, edition.updated_at = EditionStatus.SENDING, now
        send.finished_at = None
    db.session.commit()
    if queued:
        _enqueue_chains(edition_id)
    return queued


# --- One copy to one address, now ------------------------------------------------------------------


def send_test(edition_id: int, address: str, audience: Audience = Audience.NON_MEMBER,
              transport: mail.Transport | None = None) -> str:
    """Send one copy of an edition (its stored rendering, or a preview of a draft) to an address; return its Message-ID.

    A subscriber's own address gets their name and working links; any other gets links to the signup page.
    """
    from newsletter import digests

    edition = db.session.get(Edition, edition_id)
    if edition is None:
        raise InvalidInput(f"No edition {edition_id}.", "edition")
    stored = digests.edition_renderings(edition_id) or digests.render_edition(edition_id)
    if not stored:
        raise InvalidInput(f"Edition {edition_id} has nothing to render.", "edition")
    rendering = stored.get(audience) or next(iter(stored.values()))
    template = build_template(edition, _Rendering(rendering.subject, rendering.html, rendering.text), utcnow(),
                              subject_prefix="[Test] ")
    subscriber = subscribers.find_subscriber(address)
    message_id = mail.new_message_id(_config().mail_domain)
    if subscriber is not None:
        unsubscribe, preferences, mailto = _link_prefixes()
        edition_mail = _EditionMail(edition.newsletter_id, "", {}, unsubscribe, preferences, mailto,
                                    current_app.extensions["herald_tokens"])
        reader = _reader(edition_mail, subscriber.id, subscriber.email, subscriber.name, message_id)
    else:
        signup = external_url("public.signup_form")
        reader = mail.Reader(address=address, name="", message_id=message_id, unsubscribe_url=signup,
                             unsubscribe_mailto=f"mailto:{_link_prefixes()[2]}?subject=unsubscribe",
                             preferences_url=signup)
    db.session.commit()
    own = transport is None
    transport = transport or mail.transport_from_url(_config().MAIL_URL, timeout=_config().SMTP_TIMEOUT)
    try:
        transport.send_prepared(_sender(edition.newsletter)[1], reader.address, template.render(reader))
    finally:
        if own:
            transport.close()
    return message_id
