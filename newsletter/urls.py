"""Absolute links for mail and tasks, built from BASE_URL rather than from a request."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app


def external_url(endpoint: str, **values) -> str:
    """Return an absolute URL on BASE_URL, usable from a worker with no request."""
    base = urlsplit(current_app.config["HERALD"].BASE_URL)
    adapter = current_app.url_map.bind(base.netloc, script_name=base.path or "/", url_scheme=base.scheme)
    return adapter.build(endpoint, values, force_external=True)
