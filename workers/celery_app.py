"""The Celery app, built from Herald's Flask app so every task runs inside its app context.

Run: celery -A workers.celery_app worker -B   (development: one process with embedded beat)
"""

from app import app as flask_app

celery = flask_app.extensions["celery"]

import workers.tasks  # noqa: E402,F401  - registers the tasks
