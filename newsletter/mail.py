"""Build email messages and hand them to a transport chosen by MAIL_URL: SMTP, outbox folder or memory."""

from __future__ import annotations

import datetime as dt
import os
import re
import smtplib
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

# Headers that must appear exactly once; extra headers may never repeat or replace them.
SINGLE_HEADERS = ("Date", "From", "To", "Subject", "Message-ID")
_ENHANCED = re.compile(rb"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


class MailError(Exception):
    """A message could not be delivered; `permanent` says whether trying again can help."""

    permanent = False

    def __init__(self, message: str, code: int | None = None, enhanced: str = ""):
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced

    @property
    def mailbox_missing(self) -> bool:
        """True when the server said the mailbox does not exist (5.1.x): the address is dead."""
        return self.permanent and self.enhanced.startswith("5.1.")


class TemporaryMailError(MailError):
    """4xx replies, dropped connections, timeouts: worth another try later."""


class PermanentMailError(MailError):
    """5xx replies: the same message to the same address will fail again."""

    permanent = True


def _split_addr(addr: str) -> tuple[str, str]:
    local, _, domain = addr.rpartition("@")
    return local, domain.encode("idna").decode("ascii") if domain and not domain.isascii() else domain


def format_address(name: str, addr: str) -> Address:
    """Return a header Address; a name in any script is RFC 2047-encoded when the header is written."""
    local, domain = _split_addr(addr)
    return Address(display_name=name or "", username=local, domain=domain)


def parse_from(value: str) -> tuple[str, str]:
    """Split 'Name <addr>' into (name, addr)."""
    if "<" in value:
        name, _, rest = value.partition("<")
        return name.strip().strip('"'), rest.rstrip(">").strip()
    return "", value.strip()


def new_message_id(domain: str) -> str:
    """Return a fresh Message-ID on our own domain."""
    return make_msgid(idstring=uuid.uuid4().hex[:12], domain=domain)


def build_message(
    *,
    from_name: str,
    from_addr: str,
    to_name: str,
    to_addr: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    headers: dict[str, str] | None = None,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """Return a multipart/alternative message, text first, each required header exactly once."""
    for value in (subject, from_name, to_name, *(headers or {}).values()):
        if "\r" in value or "\n" in value:
            raise ValueError("line break in a header value")
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["From"] = format_address(from_name, from_addr)
    msg["To"] = format_address(to_name, to_addr)
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    for name, value in (headers or {}).items():
        if name.title() in {h.title() for h in SINGLE_HEADERS} or name.lower() == "mime-version":
            raise ValueError(f"{name} is set by build_message")
        msg[name] = value
    msg.set_content(text, charset="utf-8")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """Return the wire form of a message, with CRLF line ends."""
    return msg.as_bytes(policy=SMTP_POLICY)


class Transport(Protocol):
    def open(self) -> None: ...
    def send(self, sender: str, recipient: str, data: bytes) -> None: ...
    def close(self) -> None: ...


class _Context:
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _classify(code: int, text: bytes | str) -> MailError:
    raw = text if isinstance(text, bytes) else str(text).encode("utf-8", "replace")
    m = _ENHANCED.search(raw)
    enhanced = ".".join(x.decode() for x in m.groups()) if m else ""
    message = f"{code} {raw.decode('utf-8', 'replace')}"
    if 500 <= code < 600:
        return PermanentMailError(message, code, enhanced)
    return TemporaryMailError(message, code, enhanced)


@dataclass
class SMTPTransport(_Context):
    """One SMTP connection reused for many messages; reconnects when the server hangs up."""

    host: str
    port: int = 25
    username: str = ""
    password: str = ""
    tls: str = ""  # "", "starttls" or "ssl"
    timeout: float = 30.0
    local_hostname: str | None = None
    _conn: smtplib.SMTP | None = field(default=None, init=False, repr=False)

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            if self.tls == "ssl":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname,
                    context=ssl.create_default_context(),
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname)
                if self.tls == "starttls":
                    conn.starttls(context=ssl.create_default_context())
            if self.username:
                conn.login(self.username, self.password)
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, exc.smtp_error) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryMailError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._conn = conn

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Deliver one message; raise TemporaryMailError or PermanentMailError when refused."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        try:
            self._conn.sendmail(sender, [recipient], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._reset()
            raise _classify(code, text) from None
        except smtplib.SMTPResponseException as exc:
            # Includes SMTPDataError and SMTPSenderRefused; a 421 means the server is closing.
            if exc.smtp_code == 421:
                self._drop()
            else:
                self._reset()
            raise _classify(exc.smtp_code, exc.smtp_error) from None
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TemporaryMailError(f"connection lost: {exc}") from None

    def _reset(self) -> None:
        # After a refusal the transaction must be reset before the next MAIL FROM.
        try:
            if self._conn is not None:
                self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


@dataclass
class OutboxTransport(_Context):
    """Write one .eml file per message into a folder: the development default."""

    folder: Path

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        self.open()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        tmp = self.folder / f".{name}.tmp"
        # Envelope first, like a maildir's Return-Path/Delivered-To, then the message as sent.
        tmp.write_bytes(f"X-Envelope-From: {sender}\r\nX-Envelope-To: {recipient}\r\n".encode() + data)
        os.replace(tmp, self.folder / name)  # readers never see a half-written file

    def close(self) -> None:
        return None


@dataclass
class SentMessage:
    sender: str
    recipient: str
    data: bytes


class MemoryTransport(_Context):
    """Keep messages in a process-wide list: for unit tests only."""

    outbox: list[SentMessage] = []
    _lock = threading.Lock()

    def open(self) -> None:
        return None

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        with self._lock:
            MemoryTransport.outbox.append(SentMessage(sender, recipient, data))

    def close(self) -> None:
        return None

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls.outbox.clear()


def transport_from_url(url: str, *, timeout: float = 30.0) -> Transport:
    """Return the transport MAIL_URL names: smtp://user:pass@host:port?tls=starttls|ssl, outbox:DIR, memory:."""
    if url.startswith("outbox:"):
        return OutboxTransport(Path(url.removeprefix("outbox:")))
    if url.startswith("memory:"):
        return MemoryTransport()
    parts = urlsplit(url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ValueError("MAIL_URL must be smtp://user:pass@host:port[?tls=starttls|ssl], outbox:DIR or memory:")
    query = parse_qs(parts.query)
    tls = query.get("tls", ["ssl" if parts.scheme == "smtps" else ""])[0]
    if tls not in {"", "starttls", "ssl"}:
        raise ValueError("MAIL_URL tls= must be starttls or ssl")
    return SMTPTransport(
        host=parts.hostname,
        port=parts.port or (465 if tls == "ssl" else 587 if tls == "starttls" else 25),
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        tls=tls,
        timeout=timeout,
    )
