"""The CMS's JSON API: push an article (create or update) with a bearer API key."""

from __future__ import annotations

import json

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import HTTPException

from newsletter import articles
from newsletter.addresses import InvalidInput
from newsletter.extensions import csrf, db, limiter
from newsletter.models import ArticleSource

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# A machine with a key, not a browser with a cookie: CSRF tokens mean nothing here.
csrf.exempt(bp)
limiter.exempt(bp)


def _error(status: int, message: str, field: str | None = None, **headers):
    response = jsonify({"error": message, "field": field})
    response.status_code = status
    response.headers.update(headers)
    return response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    # JSON for the CMS even when Flask itself refuses (a body over the size limit, say).
    return _error(exc.code or 500, exc.description or exc.name)


def _authenticate():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise articles.BadApiKey("Send the API key as 'Authorization: Bearer <key>'.")
    return articles.check_api_key(token.strip())


@bp.post("/articles")
def push_article():
    """Create or update one article; 201 when it is new, 200 when it was known."""
    try:
        _authenticate()
    except articles.BadApiKey as exc:
        db.session.rollback()
        return _error(401, str(exc), "authorization", **{"WWW-Authenticate": 'Bearer realm="herald"'})
    if request.mimetype != "application/json":
        db.session.rollback()
        return _error(415, "Send the article as JSON with 'Content-Type: application/json'.", "content-type")
    try:
        payload = json.loads(request.get_data(cache=False) or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        db.session.rollback()
        return _error(400, f"The body is not valid JSON: {exc}", None)
    try:
        # Everything is checked before anything is written, and written in one transaction.
        saved = articles.save_article(articles.article_from_payload(payload), ArticleSource.API)
    except InvalidInput as exc:
        db.session.rollback()
        return _error(422 if exc.field else 400, str(exc), exc.field or None)
    return jsonify({"id": saved.article_id, "created": saved.created, "changed": saved.changed}), (
        201 if saved.created else 200
    )
