"""Error pages that tell a person what went wrong, in plain words, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

MESSAGES = {
    400: "We couldn't understand that request.",
    403: "You don't have permission to do that.",
    404: "There's nothing at this address.",
    405: "That page can't be used that way.",
    413: "That was more than we accept in one go.",
    429: "That's a lot of requests from your address. Please wait a minute and try again.",
    500: "Something went wrong on our side. Nothing you sent was lost; please try again.",
}


def render_error(status: int, message: str | None = None, title: str | None = None):
    """Render the error page for a status with a message meant for a reader."""
    return (
        render_template(
            "error.html",
            status=status,
            title=title or "Sorry",
            message=message or MESSAGES.get(status, MESSAGES[400]),
        ),
        status,
    )


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return render_error(
            400, "This form has expired or was sent from another site. Please reload the page and try again."
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        return render_error(status, MESSAGES.get(status) or exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return render_error(500)
