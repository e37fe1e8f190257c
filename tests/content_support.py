"""Test parts for content: a real local HTTP server for feeds, and factories for articles and editions."""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from newsletter import articles
from newsletter.extensions import db
from newsletter.models import Article, ArticleSource

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "feeds"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str = ""
    last_modified: str = ""
    # Seconds to wait before answering: a slow feed.
    delay: float = 0.0
    # Send no Content-Length and stream `stream_bytes` zeros: a huge body that never says how big it is.
    stream_bytes: int = 0
    # Declare this Content-Length (and send nothing like it): a server announcing a huge body.
    declared_length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class FeedServer:
    """A threaded http.server on 127.0.0.1 that serves feeds from routes and records every request."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)

    def start(self) -> FeedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                server.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get(self.path)
                if route is None:
                    self._plain(404, b"not found")
                    return
                if route.delay:
                    time.sleep(route.delay)
                validators_match = (route.etag and self.headers.get("If-None-Match") == route.etag) or (
                    route.last_modified and self.headers.get("If-Modified-Since") == route.last_modified
                )
                if validators_match:
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self._validators(route)
                    self.end_headers()
                    return
                if route.stream_bytes:
                    self.send_response(200)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    chunk = b"<" + b"x" * 65535
                    sent = 0
                    try:
                        while sent < route.stream_bytes:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client stopped reading at its cap, as it should
                    self.close_connection = True
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                length = route.declared_length if route.declared_length is not None else len(route.body)
                self.send_header("Content-Length", str(length))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self._validators(route)
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if route.declared_length is not None:
                    self.close_connection = True

            def _validators(self, route: Route) -> None:
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)

            def _plain(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]


def http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


_counter = iter(range(1, 10**9))


def make_article(published_at: dt.datetime, *, title: str | None = None, tags: list[str] | None = None,
                 members_only: bool = False, body: str = "", summary: str | None = None,
                 image_url: str = "", image_caption: str = "", url: str | None = None,
                 authors: list[str] | None = None) -> Article:
    """Store an article published at a given time, the way the CMS would push it."""
    n = next(_counter)
    data = articles.ArticleData(
        title=title or f"Story number {n}",
        url=url or f"https://news.example.org/stories/{n}",
        guid=f"story-{n}",
        summary=summary if summary is not None else f"What happened in story {n}, in two sentences. More soon.",
        body=body,
        authors=authors if authors is not None else ["Olena Reporter"],
        tags=tags or [],
        published_at=published_at,
        image_url=image_url,
        image_caption=image_caption,
        members_only=members_only,
    )
    saved = articles.save_article(data, ArticleSource.API, now=published_at)
    return db.session.get(Article, saved.article_id)
