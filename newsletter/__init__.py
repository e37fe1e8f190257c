"""Herald's application factory: settings, extensions, blueprints, CLI and Celery, in one place."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Celery, Task
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from newsletter.config import ROOT, Config
from newsletter.extensions import csrf, db, limiter, migrate
from newsletter.tokens import Tokens

__all__ = ["create_app"]


def create_app(config: Config | None = None, **overrides) -> Flask:
    """Build the Flask app (and its Celery app) from a Config, by default read from the environment."""
    config = config or Config.from_env(**overrides)
    config.check()
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(config.flask_settings())
    app.config["HERALD"] = config
    if config.TRUSTED_PROXIES:
        n = config.TRUSTED_PROXIES
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _prepare_local_folders(config)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    app.extensions["herald_tokens"] = Tokens(config.SECRET_KEY)

    from newsletter import models  # noqa: F401  - registers the tables
    from newsletter.web import account, api, archive, errors, membership, public, security, webhooks

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(archive.bp)
    app.register_blueprint(membership.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(account.bp)
    errors.register(app)
    security.register(app)

    from newsletter.web import staff

    app.register_blueprint(staff.bp)

    from newsletter import cli

    cli.register(app)
    celery_init_app(app, config)
    return app


def _prepare_local_folders(config: Config) -> None:
    for url, prefix in ((config.DATABASE_URL, "sqlite:///"), (config.MAIL_URL, "outbox:")):
        if url.startswith(prefix) and ":memory:" not in url:
            target = Path(url.removeprefix(prefix))
            (target.parent if prefix == "sqlite:///" else target).mkdir(parents=True, exist_ok=True)
    if config.CELERY_BROKER_URL.startswith("filesystem://"):
        Path(config.CELERY_BROKER_FOLDER).mkdir(parents=True, exist_ok=True)
    Path(config.UPLOAD_FOLDER).mkdir(parents=True, exist_ok=True)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL and NORMAL sync make a per-row commit ~30x cheaper (measured: 674 us -> 22 us) and let
    # the web and the worker read while the other writes; busy_timeout waits instead of failing.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()


def celery_settings(config: Config) -> dict:
    """Celery's settings: late acks, one task prefetched, no result backend, a tick every minute."""
    settings = {
        "broker_url": config.CELERY_BROKER_URL,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": 30 * 60,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        "beat_schedule": {
            "tick": {
                "task": "herald.tick",
                "schedule": config.TICK_SECONDS,
                # A tick nobody ran in time is worthless: the next one does its work.
                "options": {"expires": max(config.TICK_SECONDS - 1, 1)},
            }
        },
        "beat_schedule_filename": str(ROOT / "var" / "celerybeat-schedule"),
        "worker_hijack_root_logger": False,
    }
    if config.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = config.CELERY_BROKER_FOLDER
        settings["broker_transport_options"] = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            # Broadcast (remote control) messages would otherwise land in ./control of the cwd.
            "control_folder": str(Path(folder) / "control"),
            "store_processed": False,
        }
    elif config.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # Redeliver an unacked task an hour after its worker vanished; no countdown we use is longer.
        settings["broker_transport_options"] = {"visibility_timeout": 3600}
    return settings


def celery_init_app(app: Flask, config: Config) -> Celery:
    """Attach a Celery app whose tasks run inside this Flask app's context (Flask's own pattern)."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings(config))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app
