"""End-to-end send benchmark: fan-out, Celery workers and SMTP into a counting sink, against a raw smtplib baseline.

Run: .venv/bin/python -m bench.run [--readers 20000] [--dkim off|on|both]      (what `make bench` runs)

Uses PostgreSQL and Redis (BENCH_DATABASE_URL, default .../herald_bench, dropped and migrated on
each run; BENCH_REDIS_URL, default redis db 5, flushed), a sink of its own (bench/sink.py), and
2 Celery pool processes. Prints, for the raw baseline and each end-to-end send: messages/s and
client CPU per message; then the ratio, the fan-out time and the peak RSS of the largest worker
process; plus the CPU the database, Redis and the sink spent, since they share the same 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import raw_baseline  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc: CPU and memory of processes ----------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += _children(p)
        except FileNotFoundError:
            pass
    return pids


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _named_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds so far of every process whose command is one of `names` (PostgreSQL's backends, Redis)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() in names:
                total += _cpu_seconds(int(proc.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


# --- The sink --------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.port = _free_port()
        read, write = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink", "--port", str(self.port),
                                      "--ready-fd", str(write)], cwd=ROOT, pass_fds=(write,))
        os.close(write)
        with os.fdopen(read) as ready:
            assert ready.readline().strip() == "ready"

    def _command(self, verb: str) -> list[str]:
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(verb.encode() + b"\r\n")
            return f.readline().decode().split()

    def stats(self) -> tuple[int, float]:
        """Messages counted and CPU seconds used since the last reset."""
        reply = self._command("XSTAT")
        return int(reply[1]), float(reply[3])

    def reset(self) -> None:
        self._command("XRESET")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


# --- Setting up the newsroom ----------------------------------------------------------------------


def _environment(args, sink: Sink, dkim_key: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HERALD", "DATABASE_URL", "CELERY_", "REDIS_URL", "MAIL_", "BASE_URL", "SEND_",
                                "DKIM_"))}
    env.update(
        HERALD_ENV="development", SECRET_KEY="bench-secret-key-long-enough-to-look-real-0123456789",
        BASE_URL="https://news.example.org", DATABASE_URL=args.database_url, CELERY_BROKER_URL=args.redis_url,
        REDIS_URL=args.redis_url, MAIL_URL=f"smtp://127.0.0.1:{sink.port}?helo=bench.local",
        MAIL_FROM="Herald Newsroom <newsletter@news.example.org>", SEND_CONCURRENCY=str(args.workers),
        SEND_BATCH_SIZE="500", PYTHONUNBUFFERED="1",
    )
    if dkim_key:
        env.update(DKIM_KEY_FILE=dkim_key, DKIM_SELECTOR="bench")
    return env


def _reset_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    dsn = dict(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres")
    with psycopg.connect(dbname="postgres", autocommit=True, **dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{u.database}"')


SUMMARY = ("Ukrainian forces held the line near Pokrovsk overnight — commanders say the next week decides the "
           "autumn’s course; diplomats in Brussels weigh the ‘reparations loan’ while Kyiv counts the cost of "
           "the latest strikes on the grid. Our correspondent spent three days with a brigade’s medics. ")


def _populate(app, readers: int, count: int) -> int:
    """Create a newsletter, `readers` confirmed subscribers and a frozen edition of `count` articles; return its id."""
    from sqlalchemy import text

    from newsletter import articles, demo, digests
    from newsletter.extensions import db
    from newsletter.models import ArticleSource, Edition, EditionArticle, EditionStatus, utcnow

    newsletter = demo.load_newsletters()[0]
    db.session.execute(text(
        "INSERT INTO subscribers (email, email_key, name, created_at, confirmed_at, confirm_window_count) "
        "SELECT 'reader' || g || '@example.com', 'reader' || g || '@example.com', "
        "CASE WHEN g % 3 = 0 THEN 'Олена Коваленко-Шевченко ' || g ELSE 'Reader Number ' || g END, now(), now(), 0 "
        "FROM generate_series(1, :n) g"), {"n": readers})
    db.session.execute(text(
        "INSERT INTO subscriptions (subscriber_id, newsletter_id, status, created_at, requested_at, confirmed_at) "
        "SELECT id, :nl, 'subscribed', now(), now(), now() FROM subscribers"), {"nl": newsletter.id})
    db.session.commit()
    now = utcnow()
    ids = []
    for n in range(count):
        saved = articles.save_article(articles.ArticleData(
            title=f"Frontline dispatch {n + 1}: what the next week decides for the east",
            url=f"https://news.example.org/2026/11/25/frontline-dispatch-{n + 1}-what-the-next-week-decides",
            guid=f"bench-{n}", summary=SUMMARY * 2, body="<p>" + SUMMARY * 6 + "</p>",
            authors=["Olena Reporter", "Taras Editor"], tags=["war"], published_at=now - dt.timedelta(minutes=n),
            image_url=f"https://images.news.example.org/2026/11/dispatch-{n + 1}-1200x675.jpg",
            image_caption="A medic checks a stretcher near the front (Photo: Herald / Agency)", members_only=n % 3 == 0,
        ), ArticleSource.API, now=now)
        ids.append(saved.article_id)
    edition = Edition(newsletter_id=newsletter.id, run_at=now, status=EditionStatus.DRAFT, curated_at=now)
    db.session.add(edition)
    db.session.flush()
    for position, article_id in enumerate(ids):
        db.session.add(EditionArticle(edition_id=edition.id, article_id=article_id, position=position))
    db.session.commit()
    assert digests.freeze_edition(edition.id, now=now) == EditionStatus.FROZEN
    # A production database has current statistics; a fresh bulk load does not until autovacuum runs.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return edition.id


def _copy_edition(edition_id: int) -> int:
    """Another frozen edition with the same renderings: one per measured send."""
    from newsletter.extensions import db
    from newsletter.models import Edition, EditionRendering, EditionStatus, utcnow

    source = db.session.get(Edition, edition_id)
    copy = Edition(newsletter_id=source.newsletter_id, run_at=utcnow(), status=EditionStatus.FROZEN,
                   frozen_at=utcnow(), subject=source.subject)
    db.session.add(copy)
    db.session.flush()
    for r in db.session.query(EditionRendering).filter_by(edition_id=edition_id):
        db.session.add(EditionRendering(edition_id=copy.id, audience=r.audience, subject=r.subject, html=r.html,
                                        text=r.text))
    db.session.commit()
    return copy.id


def _sample_message(edition_id: int) -> bytes:
    """One reader's copy as the engine builds it (a test send, captured): the baseline sends this, pre-built."""
    from newsletter import mail, sending

    mail.MemoryTransport.clear()
    sending.send_test(edition_id, "reader3@example.com", transport=mail.MemoryTransport())
    (sent,) = mail.MemoryTransport.outbox
    return sent.data


# --- One measured send ----------------------------------------------------------------------------


@dataclass
class Send:
    label: str
    messages: int
    seconds: float
    fanout_seconds: float
    worker_cpu: float
    db_cpu: float
    redis_cpu: float
    sink_cpu: float
    peak_rss_mb: float
    peak_rss_all: list[float]

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    def us(self, cpu: float) -> float:
        return cpu / self.messages * 1e6


def _start_workers(env: dict[str, str], workers: int, log: Path) -> subprocess.Popen:
    args = [str(Path(sys.executable).parent / "celery"), "-A", "workers.celery_app", "worker", "--pool=prefork",
            f"--concurrency={workers}", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=INFO", f"--hostname=bench-{os.getpid()}@%h"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_tree(proc.pid)) < workers + 1 or " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"the worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def _stop(worker: subprocess.Popen) -> None:
    # SIGTERM to the main process only: sent to the whole group it can deadlock the pool's shutdown.
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)


def _measure(app, args, sink: Sink, source_edition: int, label: str, dkim_key: str, log: Path) -> Send:
    from newsletter import sending
    from newsletter.extensions import db
    from newsletter.models import Edition, EditionStatus

    env = _environment(args, sink, dkim_key)
    worker = _start_workers(env, args.workers, log)
    try:
        edition_id = _copy_edition(source_edition)
        time.sleep(1.0)  # let the worker settle after start-up
        pids = _tree(worker.pid)
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        db0, redis0 = _named_cpu(("postgres",)), _named_cpu(("redis-server",))
        sink.reset()
        began = time.perf_counter()
        started = sending.start_edition(edition_id)
        fanned = time.perf_counter()
        assert started.recipients == args.readers, started
        while True:
            count, _ = sink.stats()
            if count >= args.readers:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker died:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        delivered = time.perf_counter()
        while db.session.get(Edition, edition_id, populate_existing=True).status != EditionStatus.SENT:
            db.session.commit()
            time.sleep(0.05)
        recorded = time.perf_counter()
        db.session.commit()
        cpu1 = sum(_cpu_seconds(p) for p in pids)
        count, sink_cpu = sink.stats()
        db_cpu, redis_cpu = _named_cpu(("postgres",)) - db0, _named_cpu(("redis-server",)) - redis0
        rss = [_peak_rss_mb(p) for p in pids]
        assert count == args.readers, f"the sink counted {count} messages for {args.readers} readers"
        del delivered
        return Send(label, args.readers, recorded - fanned, fanned - began, cpu1 - cpu0, db_cpu, redis_cpu, sink_cpu,
                    max(rss), rss)
    finally:
        _stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20_000, help="1 to 1,000,000 (default 20,000)")
    parser.add_argument("--dkim", choices=["off", "on", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="Celery pool processes (default 2)")
    parser.add_argument("--articles", type=int, default=20, help="articles in the edition (20: a ~55 KB message)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw smtplib baseline")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/herald_bench"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5"))
    args = parser.parse_args()
    if not 1 <= args.readers <= 1_000_000:
        parser.error("--readers must be between 1 and 1,000,000")

    import redis
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from newsletter import create_app
    from newsletter.config import Config

    _reset_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    sink = Sink()
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    key = tmp / "dkim.pem"
    key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    try:
        env = _environment(args, sink)
        app = create_app(Config.from_env(env))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade(revision="heads")
            t = time.perf_counter()
            source = _populate(app, args.readers, args.articles)
            print(f"setup: {args.readers:,} readers and a frozen {args.articles}-article edition "
                  f"in {time.perf_counter() - t:.1f} s")
            sample = _sample_message(source)
            print(f"message: {len(sample) / 1000:.1f} KB as sent (quoted-printable, multipart/alternative)")
            baseline = None
            if not args.no_baseline:
                baseline = raw_baseline.run("127.0.0.1", sink.port, sample, args.readers, args.workers)
                print(f"raw baseline  ({args.workers} processes, smtplib.sendmail, persistent connections): "
                      f"{baseline.per_second:,.0f} msg/s, client CPU {baseline.cpu_us:,.0f} us/msg")
            modes = {"off": [""], "on": [str(key)], "both": ["", str(key)]}[args.dkim]
            for dkim_key in modes:
                label = "DKIM on " if dkim_key else "DKIM off"
                with app.app_context():
                    app.config["HERALD"].DKIM_KEY_FILE = dkim_key
                    app.config["HERALD"].DKIM_SELECTOR = "bench"
                    s = _measure(app, args, sink, source, label, dkim_key, tmp / f"worker-{label.strip()}.log")
                ratio = f"{s.per_second / baseline.per_second:.2f}" if baseline else "-"
                print(f"end to end {label} ({args.workers} pool processes): {s.per_second:,.0f} msg/s, "
                      f"client CPU {s.us(s.worker_cpu):,.0f} us/msg; ratio to baseline {ratio}; "
                      f"fan-out {s.fanout_seconds:.2f} s; peak RSS of the largest worker process "
                      f"{s.peak_rss_mb:.0f} MB (all: {', '.join(f'{r:.0f}' for r in s.peak_rss_all)})")
                print(f"    on the same cores: PostgreSQL {s.us(s.db_cpu):,.0f} us/msg, Redis {s.us(s.redis_cpu):,.0f}"
                      f" us/msg, sink {s.us(s.sink_cpu):,.0f} us/msg")
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
