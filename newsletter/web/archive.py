"""The public web archive: every edition that went out, as a reader without membership saw it."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from sqlalchemy import select

from newsletter import digests
from newsletter.extensions import db
from newsletter.models import Newsletter

bp = Blueprint("archive", __name__, url_prefix="/archive")

# The email is shown in a sandboxed frame: no scripts run, and links open outside the archive page.
CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; frame-ancestors 'none'; "
       "form-action 'none'; base-uri 'none'")


def _newsletters() -> list[Newsletter]:
    return list(db.session.scalars(select(Newsletter).where(Newsletter.active).order_by(Newsletter.position,
                                                                                          Newsletter.id)))


@bp.get("")
def index():
    shelves = [(n, digests.archived_editions(n.id, limit=20)) for n in _newsletters()]
    return render_template("archive/index.html", shelves=shelves)


@bp.get("/<slug>")
def newsletter(slug: str):
    chosen = next((n for n in _newsletters() if n.slug == slug), None)
    if chosen is None:
        abort(404)
    return render_template("archive/newsletter.html", newsletter=chosen,
                           editions=digests.archived_editions(chosen.id, limit=500))


@bp.get("/<slug>/<int:edition_id>")
def edition(slug: str, edition_id: int):
    found = digests.archived_edition(slug, edition_id)
    if found is None:
        abort(404)
    edition, rendering = found
    # <base target> makes the frame's links open a new tab instead of navigating inside the frame.
    document = rendering.html.replace("<head>", '<head><base target="_blank">', 1)
    response = render_template("archive/edition.html", edition=edition, rendering=rendering, document=document)
    return response, 200, {"Content-Security-Policy": CSP}
