"""Celery workers: the app built from create_app, thin tasks, and the beat schedule."""
