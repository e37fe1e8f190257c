"""Fixtures: one app on PostgreSQL and Redis, a clean database per test, real SMTP, workers and web."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from newsletter import create_app
from newsletter.config import Config
from newsletter.extensions import db as _db
from newsletter.extensions import limiter
from newsletter.mail import MemoryTransport
from tests.billing_support import (  # noqa: F401  - fixtures for the membership tests
    STRIPE_ENV,
    fake_stripe,
    stripe_server,
)
from tests.support import SMTPServer, free_port

DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
LIVE_PORT = free_port()


def _ensure_database(url: str) -> None:
    """Create the test database if it is missing (parallel runs each get their own)."""
    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        return
    dsn = dict(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres")
    try:
        psycopg.connect(dbname=u.database, **dsn).close()
    except psycopg.OperationalError:
        with psycopg.connect(dbname="postgres", autocommit=True, **dsn) as conn:
            conn.execute(f'CREATE DATABASE "{u.database}"')


def herald_env(**extra: str) -> dict[str, str]:
    """The environment a test's app, worker and web processes share."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("HERALD", "DATABASE_URL", "CELERY_", "REDIS_URL", "MAIL_", "BASE_URL", "STRIPE_"))
    }
    env.update(
        HERALD_ENV="test",
        SECRET_KEY="test-secret-key-which-is-long-enough-for-tests",
        BASE_URL=f"http://127.0.0.1:{LIVE_PORT}",
        DATABASE_URL=DATABASE_URL,
        CELERY_BROKER_URL=REDIS_URL,
        REDIS_URL=REDIS_URL,
        MAIL_URL="memory:",
        MAIL_FROM="Herald Newsroom <newsletter@herald.test>",
        POSTAL_ADDRESS="Herald Newsroom, 1 Test Street, 01001 Kyiv, Ukraine",
        TICK_SECONDS="1",
        MAIL_REQUEUE_SECONDS="2",
        MAIL_RETRY_BASE_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update(STRIPE_ENV)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def app():
    _ensure_database(DATABASE_URL)
    app = create_app(Config.from_env(herald_env()))
    with app.app_context():
        with _db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        from flask_migrate import upgrade

        upgrade()
        _db.engine.dispose()
    redis_lib.Redis.from_url(REDIS_URL).flushdb()
    yield app


def truncate_all() -> None:
    names = ", ".join(f'"{t.name}"' for t in _db.metadata.sorted_tables)
    with _db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(autouse=True)
def _clean(request):
    """Each test starts with empty tables, no mail and fresh rate-limit counters."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        yield
        _db.session.remove()
        truncate_all()
    MemoryTransport.clear()
    limiter.reset()
    app.config["WTF_CSRF_ENABLED"] = True
    limiter.enabled = True


@pytest.fixture
def db(app):
    return _db


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def newsletters(app):
    from newsletter import demo

    return demo.load_newsletters()


@pytest.fixture
def outbox():
    MemoryTransport.clear()
    return MemoryTransport.outbox


@pytest.fixture
def smtp_server():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_server(app):
    """The test app served over real HTTP at BASE_URL, in a thread of this process."""
    server = make_server("127.0.0.1", LIVE_PORT, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{LIVE_PORT}"
    server.shutdown()


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path


def pytest_sessionfinish(session, exitstatus):
    """Close every database connection still pooled, so none is left for the garbage collector to warn about.

    Apps made by single tests (a SQLite one, a production-config one) keep engines whose pools would
    otherwise be collected at exit, after pytest has started counting unraisable warnings as errors.
    """
    import gc

    from sqlalchemy.engine import Engine

    for obj in gc.get_objects():
        try:
            if isinstance(obj, Engine):
                obj.dispose()
            elif isinstance(obj, psycopg.Connection) and not obj.closed:
                obj.close()
        except ReferenceError:
            continue
