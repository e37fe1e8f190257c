"""Articles, feeds and the CMS's API keys in the console."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from newsletter import articles
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Article, ArticleSource, Feed, StaffRole
from newsletter.staff import editorial
from newsletter.web.staff.access import actor, bp, requires

PER_PAGE = 50


def _page() -> int:
    value = request.args.get("page", "1")
    return max(int(value), 1) if value.isdigit() else 1


def _filters() -> editorial.ArticleFilter:
    args = request.args
    source = args.get("source", "")
    feed = args.get("feed", "")
    return editorial.ArticleFilter(
        q=" ".join(args.get("q", "").split())[:200],
        members_only={"yes": True, "no": False}.get(args.get("members", "")),
        source=ArticleSource(source) if source in {s.value for s in ArticleSource} else None,
        feed_id=int(feed) if feed.isdigit() else None,
    )


def _filter_args(f: editorial.ArticleFilter) -> dict[str, str]:
    args = {"q": f.q, "members": {True: "yes", False: "no"}.get(f.members_only, ""),
            "source": f.source.value if f.source else "", "feed": str(f.feed_id or "")}
    return {k: v for k, v in args.items() if v}


@bp.get("/articles", endpoint="articles")
@requires(StaffRole.VIEWER)
def articles_list():
    f = _filters()
    page = _page()
    found, total = editorial.search_articles(f, page, PER_PAGE)
    return render_template("staff/articles.html", found=found, total=total, page=page, filters=f,
                           args=_filter_args(f), pages=max(math.ceil(total / PER_PAGE), 1),
                           feeds=articles.list_feeds(), sources=list(ArticleSource))



@bp.post("/articles/<int:article_id>/members-only")
@requires(StaffRole.EDITOR)
def article_members_only(article_id: int):
    try:
        article = editorial.set_members_only(article_id, request.form.get("members_only") == "yes", actor())
    except InvalidInput:
        abort(404)
    flash(f"“{article.title[:80]}” is now {'for members only' if article.members_only else 'open to everyone'}.", "ok")
    return redirect(request.form.get("back") if _local(request.form.get("back")) else url_for("staff.articles"), 303)


def _local(target: str | None) -> bool:
    return bool(target) and target.startswith("/staff/") and not target.startswith("//")


def _published(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        local = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("Give the publication time as a date and time.", "published_at") from None
    # The form's time is the newsroom's wall clock.
    return local.replace(tzinfo=ZoneInfo(current_app.config["HERALD"].STAFF_TIMEZONE)).astimezone(dt.UTC)


@bp.route("/articles/new", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def article_new():
    error = None
    if request.method == "POST":
        form = request.form
        try:
            data = articles.ArticleData(
                title=form.get("title", ""), url=form.get("url", ""), summary=form.get("summary", ""),
                body=form.get("body", "") or None,
                authors=[a.strip() for a in form.get("authors", "").split(",") if a.strip()] or None,
                tags=[t.strip() for t in form.get("tags", "").split(",") if t.strip()] or None,
                published_at=_published(form.get("published_at", "")),
                image_url=form.get("image_url", "") or None,
                members_only=form.get("members_only") == "yes",
            )
            article_id = editorial.add_article(data, actor())
        except InvalidInput as exc:
            error = exc
        else:
            flash("The article is saved. Add it to a draft edition from the edition's page.", "ok")
            return redirect(url_for("staff.articles", q=db.session.get(Article, article_id).title[:60]), 303)
    return render_template("staff/article_new.html", error=error, form=request.form), 400 if error else 200


# --- Feeds --------------------------------------------------------------------------------------


@bp.get("/feeds")
@requires(StaffRole.VIEWER)
def feeds():
    return render_template("staff/feeds.html", feeds=articles.list_feeds())


def _interval(value: str) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise InvalidInput("The interval is a whole number of minutes.", "interval")
    return int(value)


@bp.route("/feeds/new", methods=["GET", "POST"])
@requires(StaffRole.ADMIN)
def feed_new():
    error = None
    if request.method == "POST":
        form = request.form
        try:
            feed = editorial.add_feed(actor(), form.get("url", ""), form.get("name", ""),
                                      _interval(form.get("interval", "")), form.get("members_only") == "yes")
        except InvalidInput as exc:
            error = exc
        else:
            flash(f"Feed added; it is first fetched within a minute ({feed.url}).", "ok")
            return redirect(url_for("staff.feeds"), 303)
    return render_template("staff/feed_form.html", feed=None, error=error, form=request.form), 400 if error else 200


def _feed(feed_id: int) -> Feed:
    feed = db.session.get(Feed, feed_id)
    if feed is None:
        abort(404)
    return feed


@bp.get("/feeds/<int:feed_id>")
@requires(StaffRole.VIEWER)
def feed_edit(feed_id: int):
    return render_template("staff/feed_form.html", feed=_feed(feed_id), error=None, form={})


@bp.post("/feeds/<int:feed_id>")
@requires(StaffRole.ADMIN)
def feed_update(feed_id: int):
    feed = _feed(feed_id)
    form = request.form
    try:
        editorial.update_feed(feed_id, actor(), name=form.get("name", ""),
                              interval_minutes=_interval(form.get("interval", "")) or feed.interval_minutes,
                              members_only=form.get("members_only") == "yes", active=form.get("active") == "yes")
    except InvalidInput as exc:
        return render_template("staff/feed_form.html", feed=feed, error=exc, form=form), 400
    flash("Feed saved.", "ok")
    return redirect(url_for("staff.feeds"), 303)


@bp.post("/feeds/<int:feed_id>/remove")
@requires(StaffRole.ADMIN)
def feed_remove(feed_id: int):
    try:
        editorial.remove_feed(feed_id, actor())
    except InvalidInput:
        abort(404)
    flash("Feed removed; its articles stay.", "ok")
    return redirect(url_for("staff.feeds"), 303)


# --- API keys -----------------------------------------------------------------------------------


@bp.get("/api-keys")
@requires(StaffRole.ADMIN)
def api_keys():
    return render_template("staff/api_keys.html", keys=articles.list_api_keys(), new_token=None, error=None)


@bp.post("/api-keys")
@requires(StaffRole.ADMIN)
def api_key_create():
    try:
        key, token = editorial.create_api_key(request.form.get("name", ""), actor())
    except InvalidInput as exc:
        return render_template("staff/api_keys.html", keys=articles.list_api_keys(), new_token=None, error=exc), 400
    # Shown on this response only: it is not stored, and a reload does not show it again.
    return render_template("staff/api_keys.html", keys=articles.list_api_keys(), new_token=token, new_key=key,
                           error=None)


@bp.post("/api-keys/<int:key_id>/revoke")
@requires(StaffRole.ADMIN)
def api_key_revoke(key_id: int):
    try:
        key = editorial.revoke_api_key(key_id, actor())
    except InvalidInput:
        abort(404)
    flash(f"The key “{key.name}” is revoked; the CMS using it is refused from now on.", "ok")
    return redirect(url_for("staff.api_keys"), 303)
