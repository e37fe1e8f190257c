"""Real parts for the tests: an SMTP server on loopback, worker and web processes, free ports."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    """Poll until predicate() is truthy and return its value; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    @property
    def text(self) -> str:
        return self.message.get_body(preferencelist=("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(preferencelist=("html",)).get_content()

    def links(self) -> list[str]:
        return re.findall(r"https?://[^\s<>\"]+", self.text)


@dataclass
class _Handler:
    """Store every accepted message; `reply` may refuse some to test failures."""

    messages: list[Received] = field(default_factory=list)
    reply: object = None  # callable(Envelope) -> str | None: an SMTP reply to refuse with
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:
        if self.reply is not None:
            answer = self.reply(envelope)
            if answer:
                return answer
        with self.lock:
            received = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
            self.messages.append(received)
        return "250 Message accepted for delivery"


class SMTPServer:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it accepts."""

    def __init__(self):
        self.handler = _Handler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.messages.clear()
        self.handler.reply = None

    def wait_for(self, count: int, timeout: float = 20.0, to: str | None = None) -> list[Received]:
        def enough():
            found = [m for m in self.messages if to is None or to in m.recipients]
            return found if len(found) >= count else None

        return wait_until(enough, timeout, message=f"{count} message(s){' to ' + to if to else ''}")


class Process:
    """A child process (worker, beat, web) with its output kept for the failure report."""

    def __init__(self, args: list[str], env: dict[str, str], name: str, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the main process only (a group SIGTERM can deadlock Celery's pool shutdown)."""
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:
            # Kill any orphaned pool children of a main process that was killed.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def start_worker(env: dict[str, str], log_dir: Path, *, beat: bool = False, pool: str = "solo",
                 concurrency: int = 1, name: str = "worker") -> Process:
    """Start a real Celery worker process and wait until it is ready to take tasks."""
    args = [str(BIN / "celery"), "-A", "workers.celery_app", "worker", "--loglevel=INFO",
            f"--pool={pool}", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
            f"--hostname={name}-{os.getpid()}@%h"]
    if beat:
        args += ["-B", "-s", str(log_dir / f"beat-{time.time_ns()}")]
    proc = Process(args, env, name, log_dir)
    try:
        wait_until(lambda: " ready." in proc.output() or not proc.alive(), 60, message="worker ready")
    except AssertionError:
        proc.stop()
        raise
    if not proc.alive():
        raise RuntimeError(f"worker died at start:\n{proc.output()}")
    return proc


def start_web(env: dict[str, str], log_dir: Path, port: int) -> Process:
    """Start the web app as its own process and wait until it answers."""
    import requests

    args = [PYTHON, "-m", "flask", "--app", "app", "run", "--host", "127.0.0.1", "--port", str(port), "--no-reload"]
    proc = Process(args, env, "web", log_dir)

    def up():
        if not proc.alive():
            raise RuntimeError(f"web died at start:\n{proc.output()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_until(up, 60, message="web up")
    return proc


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)
