"""Messages are built correctly and handed to the transport MAIL_URL names."""

import email
import email.policy

import pytest

from newsletter import mail


def _message(**overrides):
    params = dict(
        from_name="Herald Newsroom", from_addr="newsletter@herald.test",
        to_name="Олена Коваль", to_addr="olena@xn--80a1acn3a.xn--j1amh",
        subject="Ваш дайджест: новини дня", text="Текст листа\n", html="<p>Текст листа</p>",
        message_id=mail.new_message_id("herald.test"), headers={"Auto-Submitted": "auto-generated"},
    )
    params.update(overrides)
    return mail.build_message(**params)


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_message_is_multipart_alternative_with_text_first():
    parsed = _parse(mail.message_bytes(_message()))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Текст листа\n"


def test_required_headers_appear_exactly_once_and_message_id_is_ours():
    parsed = _parse(mail.message_bytes(_message()))
    for header in ("Date", "From", "To", "Subject", "Message-ID"):
        assert len(parsed.get_all(header)) == 1, header
    assert parsed["Message-ID"].endswith("@herald.test>")


def test_cyrillic_display_name_is_rfc2047_encoded_and_survives():
    raw = mail.message_bytes(_message())
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert b"=?utf-8?" in header_block
    parsed = _parse(raw)
    assert parsed["To"].addresses[0].display_name == "Олена Коваль"
    assert parsed["Subject"] == "Ваш дайджест: новини дня"


def test_lines_end_with_crlf():
    raw = mail.message_bytes(_message())
    assert b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("field", ["subject", "to_name"])
def test_a_line_break_in_a_header_value_is_refused(field):
    with pytest.raises(ValueError):
        _message(**{field: "hello\r\nBcc: victim@example.com"})


def test_required_headers_cannot_be_repeated_through_extra_headers():
    with pytest.raises(ValueError):
        _message(headers={"Subject": "again"})


def test_internationalized_sender_domain_is_encoded():
    parsed = _parse(mail.message_bytes(_message(from_addr="news@пошта.укр")))
    assert parsed["From"].addresses[0].domain == "xn--80a1acn3a.xn--j1amh"


def test_outbox_transport_writes_one_eml_per_message(tmp_path):
    transport = mail.transport_from_url(f"outbox:{tmp_path}")
    with transport:
        for _ in range(3):
            transport.send("newsletter@herald.test", "olena@example.com", mail.message_bytes(_message()))
    files = sorted(tmp_path.glob("*.eml"))
    assert len(files) == 3
    assert not list(tmp_path.glob(".*.tmp"))
    parsed = _parse(files[0].read_bytes())
    assert parsed["X-Envelope-To"] == "olena@example.com"
    assert parsed["Subject"] == "Ваш дайджест: новини дня"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://u:p%40ss@mail.example.com:2525", ("mail.example.com", 2525, "u", "p@ss", "")),
        ("smtp://mail.example.com?tls=starttls", ("mail.example.com", 587, "", "", "starttls")),
        ("smtp://mail.example.com?tls=ssl", ("mail.example.com", 465, "", "", "ssl")),
    ],
)
def test_mail_url_is_parsed(url, expected):
    t = mail.transport_from_url(url)
    assert (t.host, t.port, t.username, t.password, t.tls) == expected


@pytest.mark.parametrize("url", ["http://x", "smtp://", "smtp://h?tls=weird", "nonsense"])
def test_a_bad_mail_url_is_refused(url):
    with pytest.raises(ValueError):
        mail.transport_from_url(url)


def test_smtp_transport_reuses_one_connection_for_many_messages(smtp_server):
    sessions = []

    async def handle_EHLO(server, session, envelope, hostname, responses):
        sessions.append(hostname)
        session.host_name = hostname
        return responses

    smtp_server.handler.handle_EHLO = handle_EHLO
    transport = mail.transport_from_url(smtp_server.url)
    with transport:
        for i in range(5):
            transport.send("newsletter@herald.test", f"reader{i}@example.com", mail.message_bytes(_message()))
    assert len(smtp_server.wait_for(5)) == 5
    assert len(sessions) == 1
    received = smtp_server.messages[0].message
    assert received["To"].addresses[0].display_name == "Олена Коваль"


@pytest.mark.parametrize(
    ("reply", "error", "mailbox_missing"),
    [
        ("451 4.3.0 Try again later", mail.TemporaryMailError, False),
        ("421 4.7.0 Closing connection", mail.TemporaryMailError, False),
        ("550 5.1.1 No such user here", mail.PermanentMailError, True),
        ("554 5.7.1 Message refused by policy", mail.PermanentMailError, False),
    ],
)
def test_smtp_refusals_are_classified(smtp_server, reply, error, mailbox_missing):
    smtp_server.handler.reply = lambda envelope: reply
    transport = mail.transport_from_url(smtp_server.url)
    with transport, pytest.raises(error) as exc:
        transport.send("newsletter@herald.test", "gone@example.com", mail.message_bytes(_message()))
    assert exc.value.mailbox_missing is mailbox_missing
    assert exc.value.code == int(reply[:3])


def test_smtp_transport_keeps_working_after_a_refusal(smtp_server):
    replies = iter(["451 4.3.0 Try again later", None])
    smtp_server.handler.reply = lambda envelope: next(replies)
    transport = mail.transport_from_url(smtp_server.url)
    with transport:
        with pytest.raises(mail.TemporaryMailError):
            transport.send("newsletter@herald.test", "a@example.com", mail.message_bytes(_message()))
        transport.send("newsletter@herald.test", "b@example.com", mail.message_bytes(_message()))
    assert [m.recipients for m in smtp_server.wait_for(1)] == [["b@example.com"]]


def test_an_unreachable_server_is_a_temporary_failure():
    from tests.support import free_port

    transport = mail.transport_from_url(f"smtp://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(mail.TemporaryMailError):
        transport.send("newsletter@herald.test", "a@example.com", b"Subject: x\r\n\r\nx\r\n")
