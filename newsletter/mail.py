"""Build email messages and hand them to a transport chosen by MAIL_URL: SMTP, outbox folder or memory."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html as html_lib
import os
import re
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from newsletter.dkim import DKIMSigner

# Headers that must appear exactly once; extra headers may never repeat or replace them.
SINGLE_HEADERS = ("Date", "From", "To", "Subject", "Message-ID")
_ENHANCED = re.compile(rb"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

# The per-reader slots an edition's HTML and text carry (the contract with digests.py). The name is
# HTML-escaped in the HTML part; every slot is quoted-printable encoded per reader.
SLOT_NAME = "@@HERALD_NAME@@"
SLOT_UNSUBSCRIBE_URL = "@@HERALD_UNSUBSCRIBE_URL@@"
SLOT_PREFERENCES_URL = "@@HERALD_PREFERENCES_URL@@"
_SLOT_KEYS = {SLOT_NAME: "name", SLOT_UNSUBSCRIBE_URL: "unsubscribe_url", SLOT_PREFERENCES_URL: "preferences_url"}
_SLOT_RE = re.compile("(" + "|".join(re.escape(s) for s in _SLOT_KEYS) + ")")


class MailError(Exception):
    """A message could not be delivered; `permanent` says whether trying again can help."""

    permanent = False

    def __init__(self, message: str, code: int | None = None, enhanced: str = "", stage: str = ""):
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced
        # What was refused: "connect" (greeting, TLS, login: no message was tried), "mail" (the
        # sender), "rcpt" (the recipient), "data", or "" when unknown.
        self.stage = stage

    @property
    def mailbox_missing(self) -> bool:
        """True when the server said the mailbox does not exist (5.1.x): the address is dead."""
        # A 5.1.x answer to MAIL FROM is about our sender address (5.1.7, 5.1.8), not the reader's.
        return self.permanent and self.enhanced.startswith("5.1.") and self.stage != "mail"


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


# --- Messages built once per edition and audience, filled per reader ------------------------------

# Bytes a quoted-printable line may carry as they are (RFC 2045 6.7); space and tab are literal
# except at the end of a line, handled below.
_QP_ESCAPE = re.compile(rb"[^\t\x20-\x3c\x3e-\x7e]")
_QP_PLAIN = re.compile(rb"(?!From )[\x21-\x2d\x2f-\x3c\x3e-\x7e](?:[\x20-\x3c\x3e-\x7e]{0,74}[\x21-\x3c\x3e-\x7e])?")
_HEX = [b"=%02X" % i for i in range(256)]


def _qp_byte(match: re.Match[bytes]) -> bytes:
    return _HEX[match.group()[0]]


def qp_encode(data: bytes) -> bytes:
    """Quoted-printable encode LF-separated lines to CRLF lines of at most 76 characters.

    Unlike binascii.b2a_qp, no output line ever starts with '.', so the result needs no SMTP
    dot-stuffing and the bytes we hash for DKIM are the bytes on the wire.
    """
    if _QP_PLAIN.fullmatch(data):  # the common per-reader case: a short ASCII value
        return data
    out: list[bytes] = []
    for raw in data.split(b"\n"):
        line = _QP_ESCAPE.sub(_qp_byte, raw)
        if line[-1:] in (b" ", b"\t"):
            line = line[:-1] + _HEX[line[-1]]
        while True:
            if line[:1] == b".":
                line = b"=2E" + line[1:]
            elif line[:5] == b"From ":  # mbox readers would mangle it
                line = b"=46" + line[1:]
            if len(line) <= 76:
                break
            cut = 75
            if line[cut - 1] == 0x3D:  # never split an "=XX" escape
                cut -= 1
            elif line[cut - 2] == 0x3D:
                cut -= 2
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return b"\r\n".join(out)


_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/?^_`{|}~]+( [A-Za-z0-9!#$%&'*+\-/?^_`{|}~]+)*")
_ASCII_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def encode_mailbox(name: str, addr: str, header_len: int = 4) -> bytes:
    """Return 'name <addr>' for an address header, the name RFC 2047-encoded when it is not plain ASCII.

    `header_len` is the length of "To: " before it, so the first line stays within 78 characters.
    """
    if "\r" in name or "\n" in name or "\r" in addr or "\n" in addr:
        raise ValueError("line break in an address")
    angle = f"<{addr}>".encode("ascii")
    if not name:
        return angle
    if _ASCII_PRINTABLE.fullmatch(name) and "=?" not in name:
        phrase = name if _ATOM_PHRASE.fullmatch(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        encoded = phrase.encode("ascii")
        if header_len + len(encoded) + 1 + len(angle) <= 78:
            return encoded + b" " + angle
        return encoded + b"\r\n " + angle
    encoded = b"\r\n ".join(b"=?utf-8?b?" + base64.b64encode(w.encode("utf-8")) + b"?=" for w in _ew_chunks(name))
    return encoded + b"\r\n " + angle


def _ew_chunks(name: str, limit: int = 45) -> list[str]:
    """Split a name into encoded-word payloads of at most `limit` UTF-8 bytes (75-character words).

    Never splits a character (RFC 2047 5). Splits just after a space where it can: mail clients drop
    the folding between two encoded-words (RFC 2047 6.2), but Python's address parser keeps it as a
    space, so a split inside a word would show there as "Коб зар".
    """
    chunks: list[str] = []
    rest = name
    while len(rest.encode("utf-8")) > limit:
        size = taken = 0
        for ch in rest:
            size += len(ch.encode("utf-8"))
            if size > limit:
                break
            taken += 1
        cut = rest.rfind(" ", 0, taken) + 1 or taken
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    return chunks


def _header(name: str, value) -> bytes:
    folded = SMTP_POLICY.header_factory(name, value).fold(policy=SMTP_POLICY)
    return folded.encode("ascii")


@dataclass(frozen=True)
class Reader:
    """What differs between two readers' copies of one edition."""

    address: str
    name: str
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    preferences_url: str


_URL_UNSAFE = re.compile(r"[\s<>\"]")


class MessageTemplate:
    """A message's MIME bytes built once, with slots; a reader's copy is a few encodes and one join.

    Building an EmailMessage costs 2-4 ms per message; filling this costs tens of microseconds. Both
    parts are quoted-printable, 7-bit clean, so any MTA takes them; each static stretch is encoded
    once, ending in a soft line break before each slot, so a slot's value is encoded alone and the
    markers never straddle an encoded line.
    """

    def __init__(
        self,
        *,
        from_name: str,
        from_addr: str,
        subject: str,
        text: str,
        html: str | None,
        date: dt.datetime,
        headers: Mapping[str, str] | None = None,
        signer: DKIMSigner | None = None,
    ):
        extra = dict(headers or {})
        reserved = {h.lower() for h in (*SINGLE_HEADERS, "MIME-Version", "List-Unsubscribe", "Content-Type",
                                        "Content-Transfer-Encoding", "DKIM-Signature")}
        for name, value in extra.items():
            if name.lower() in reserved:
                raise ValueError(f"{name} is set by MessageTemplate")
            if "\r" in value or "\n" in value:
                raise ValueError("line break in a header value")
        if "\r" in subject or "\n" in subject:
            raise ValueError("line break in a header value")
        self.signer = signer
        self._static: list[tuple[bytes, bytes]] = [
            (b"from", _header("From", format_address(from_name, from_addr))),
            (b"subject", _header("Subject", subject)),
            (b"date", _header("Date", format_datetime(date))),
            (b"mime-version", b"MIME-Version: 1.0\r\n"),
        ]
        self._static += [(name.lower().encode(), _header(name, value)) for name, value in extra.items()]
        # QP output never contains "=_", so this boundary cannot occur inside a part.
        boundary = ("=_herald_" + uuid.uuid4().hex).encode()
        self._body: list[bytes | tuple[str, bool]] = []
        if html is None:
            content_type = b'Content-Type: text/plain; charset="utf-8"\r\n'
            self._static.append((b"content-type", content_type))
            self._static.append((b"content-transfer-encoding", b"Content-Transfer-Encoding: quoted-printable\r\n"))
            self._body += _compile_part(text, escape=False)
        else:
            content_type = b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n'
            self._static.append((b"content-type", content_type))
            for subtype, content, escape in ((b"plain", text, False), (b"html", html, True)):
                self._body.append(
                    b"--" + boundary + b"\r\nContent-Type: text/" + subtype + b'; charset="utf-8"\r\n'
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                )
                self._body += _compile_part(content, escape=escape)
                self._body.append(b"\r\n")
            self._body.append(b"--" + boundary + b"--\r\n")
        self._body = _merge(self._body)
        self._static_head = b"".join(line for _, line in self._static)
        self._canonical: dict[bytes, bytes] = {}
        if signer is not None:
            from newsletter.dkim import relaxed_header

            self._canonical = {name: relaxed_header(line) for name, line in self._static}

    def render(self, reader: Reader) -> bytes:
        """Return one reader's message: CRLF lines, 7-bit, no line starting with '.'."""
        mid = reader.message_id
        if not (mid.startswith("<") and mid.endswith(">")) or _URL_UNSAFE.search(mid[1:-1]) or not mid.isascii():
            raise ValueError("malformed Message-ID")
        for url in (reader.unsubscribe_url, reader.unsubscribe_mailto):
            if _URL_UNSAFE.search(url) or len(url) > 900:
                raise ValueError("unsafe URL for List-Unsubscribe")
        to = b"To: " + encode_mailbox(reader.name, reader.address) + b"\r\n"
        message_id = b"Message-ID: " + reader.message_id.encode("ascii") + b"\r\n"
        unsubscribe = (
            b"List-Unsubscribe: <" + reader.unsubscribe_url.encode("ascii") + b">,\r\n <"
            + reader.unsubscribe_mailto.encode("ascii") + b">\r\n"
        )
        values = _slot_values(reader)
        body = b"".join([piece if type(piece) is bytes else values[piece] for piece in self._body])
        head = to + message_id + unsubscribe + self._static_head
        if self.signer is None:
            return head + b"\r\n" + body
        from newsletter.dkim import relaxed_header

        canonical = dict(self._canonical)
        canonical[b"to"] = relaxed_header(to)
        canonical[b"message-id"] = relaxed_header(message_id)
        canonical[b"list-unsubscribe"] = relaxed_header(unsubscribe)
        return self.signer.signature_header(canonical, body) + head + b"\r\n" + body


def _slot_values(reader: Reader) -> dict[tuple[str, bool], bytes]:
    values: dict[tuple[str, bool], bytes] = {}
    for key, raw in (("name", reader.name), ("unsubscribe_url", reader.unsubscribe_url),
                     ("preferences_url", reader.preferences_url)):
        plain = qp_encode(raw.encode("utf-8"))
        escaped = html_lib.escape(raw)
        values[(key, False)] = plain
        values[(key, True)] = plain if escaped == raw else qp_encode(escaped.encode("utf-8"))
    return values


def _compile_part(content: str, escape: bool) -> list[bytes | tuple[str, bool]]:
    pieces = _SLOT_RE.split(content.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[bytes | tuple[str, bool]] = []
    for i, piece in enumerate(pieces):
        if i % 2:
            # The value is encoded alone and always starts and ends a physical line.
            out += [(_SLOT_KEYS[piece], escape), b"=\r\n"]
            continue
        if piece:
            out.append(qp_encode(piece.encode("utf-8")))
            if i + 1 < len(pieces) and not piece.endswith("\n"):
                out.append(b"=\r\n")
    return out


def _merge(pieces: list) -> list:
    merged: list = []
    for piece in pieces:
        if type(piece) is bytes and merged and type(merged[-1]) is bytes:
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


# --- Transports -----------------------------------------------------------------------------------


class Transport(Protocol):
    def open(self) -> None: ...
    def send(self, sender: str, recipient: str, data: bytes) -> None: ...
    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None: ...
    def close(self) -> None: ...


class _Context:
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _classify(code: int, text: bytes | str, stage: str = "") -> MailError:
    raw = text if isinstance(text, bytes) else str(text).encode("utf-8", "replace")
    m = _ENHANCED.search(raw)
    enhanced = ".".join(x.decode() for x in m.groups()) if m else ""
    message = f"{code} {raw.decode('utf-8', 'replace')}"
    if 500 <= code < 600:
        return PermanentMailError(message, code, enhanced, stage)
    return TemporaryMailError(message, code, enhanced, stage)


_BARE_LF = re.compile(rb"(?<!\r)\n|\r(?!\n)")


def dot_stuff(data: bytes) -> bytes:
    """Return a message with CRLF line ends and every line starting with '.' doubled (RFC 5321 4.5.2)."""
    if _BARE_LF.search(data):
        data = _BARE_LF.sub(b"\r\n", data)
    # One bytes.replace instead of smtplib's regex: about 250 us less per 54 KB message.
    if data[:1] == b".":
        data = b"." + data
    data = data.replace(b"\n.", b"\n..")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


@functools.cache
def _local_hostname() -> str:
    # smtplib resolves our FQDN on every connection unless told; once per process is enough.
    return socket.getfqdn()


class _Stale(Exception):
    """The connection was gone before the server could have accepted anything of this message."""


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
    _used: bool = field(default=False, init=False, repr=False)

    def open(self) -> None:
        if self._conn is not None:
            return
        helo = self.local_hostname or _local_hostname()
        try:
            if self.tls == "ssl":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, local_hostname=helo,
                    context=ssl.create_default_context(),
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=helo)
                if self.tls == "starttls":
                    conn.starttls(context=ssl.create_default_context())
            # Each write is a whole command group or message: never hold its tail back for an ACK.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo_or_helo_if_needed()
            if self.username:
                conn.login(self.username, self.password)
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "connect") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryMailError(f"cannot connect to {self.host}:{self.port}: {exc}", stage="connect") from None
        self._conn, self._used = conn, False

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Deliver one message; raise TemporaryMailError or PermanentMailError when refused."""
        self.send_prepared(sender, recipient, dot_stuff(data))

    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        """Deliver bytes already in SMTP form: CRLF line ends, no line starting with '.'.

        MAIL, RCPT and DATA go in one write when the server offers PIPELINING (RFC 2920): two round
        trips per message instead of four. A connection found closed before the server could have
        taken the message is reopened once, so an idle timeout costs no delivery a retry.
        """
        for attempt in (1, 2):
            if self._conn is None:
                self.open()
            reused = self._used
            try:
                self._transaction(sender, recipient, data)
                return
            except _Stale as exc:
                self._drop()
                if attempt == 2 or not reused:
                    raise TemporaryMailError(f"connection lost: {exc}") from None

    def _transaction(self, sender: str, recipient: str, data: bytes) -> None:
        conn = self._conn
        assert conn is not None
        self._used = True
        eight_bit = not data.isascii() and conn.has_extn("8bitmime")
        mail_cmd = f"MAIL FROM:<{sender}>{' BODY=8BITMIME' if eight_bit else ''}\r\n".encode()
        rcpt_cmd = f"RCPT TO:<{recipient}>\r\n".encode()
        error: MailError | None = None
        try:
            if conn.has_extn("pipelining"):
                conn.send(mail_cmd + rcpt_cmd + b"DATA\r\n")
                replies = [conn.getreply(), conn.getreply(), conn.getreply()]
            else:
                replies = [self._command(conn, mail_cmd)]
                if replies[0][0] == 250:
                    replies.append(self._command(conn, rcpt_cmd))
                    if replies[1][0] in (250, 251):
                        replies.append(self._command(conn, b"DATA\r\n"))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Stale(str(exc)) from None
        mail_reply = replies[0]
        rcpt_reply = replies[1] if len(replies) > 1 else (0, b"")
        data_reply = replies[2] if len(replies) > 2 else None
        if mail_reply[0] != 250:
            error = _classify(mail_reply[0], mail_reply[1], "mail")
        elif rcpt_reply[0] not in (250, 251):
            error = _classify(rcpt_reply[0], rcpt_reply[1], "rcpt")
        try:
            if data_reply is not None and data_reply[0] == 354:
                if error is not None:
                    # Some servers open DATA even after refusing the recipient: end it empty.
                    conn.send(b".\r\n")
                    conn.getreply()
                else:
                    conn.send(data + b".\r\n")
                    code, text = conn.getreply()
                    if code == 250:
                        return
                    error = _classify(code, text, "data")
            elif error is None and data_reply is not None:
                error = _classify(data_reply[0], data_reply[1], "data")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The message went out and no answer came back: it may or may not have been taken.
            self._drop()
            raise TemporaryMailError(f"connection lost after DATA: {exc}", stage="data") from None
        assert error is not None
        if error.code == 421:
            self._drop()  # the server is closing this connection
        else:
            self._reset()
        raise error

    @staticmethod
    def _command(conn: smtplib.SMTP, line: bytes) -> tuple[int, bytes]:
        conn.send(line)
        return conn.getreply()

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

    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        self.send(sender, recipient, data)

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

    def send_prepared(self, sender: str, recipient: str, data: bytes) -> None:
        self.send(sender, recipient, data)

    def close(self) -> None:
        return None

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls.outbox.clear()


def transport_from_url(url: str, *, timeout: float = 30.0) -> Transport:
    """Return the transport MAIL_URL names: smtp://user:pass@host:port?tls=starttls|ssl, outbox:DIR, memory:.

    `helo=NAME` in the query sets the name we greet the server with (default: this host's FQDN).
    """
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
        local_hostname=query.get("helo", [None])[0],
    )
