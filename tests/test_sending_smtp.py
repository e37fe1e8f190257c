"""The fast SMTP path: prebuilt bytes over one connection, pipelined, with every refusal classified."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from newsletter import mail
from tests.support import SMTPServer, _Handler


@dataclass
class ScriptedHandler(_Handler):
    """Accepts mail like the fixture's server; may advertise PIPELINING, refuse a stage, or hang up."""

    pipelining: bool = True
    mail_reply: str | None = None
    rcpt_reply: dict[str, str] = field(default_factory=dict)
    # Close the connection just after accepting this many messages on it.
    drop_after: int | None = None
    sessions: int = 0
    commands: list[str] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.sessions += 1
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.commands.append(f"MAIL {address} {' '.join(mail_options)}".strip())
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        if answer.startswith("250") and self.drop_after is not None and len(self.messages) % self.drop_after == 0:
            # Let the 250 go out, then hang up, as a server restarting between messages would.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return answer


@pytest.fixture
def scripted():
    server = SMTPServer()
    server.handler = ScriptedHandler()
    server.controller.handler = server.handler
    server.start()
    yield server
    server.stop()


MESSAGE = b"Subject: test\r\nTo: r@example.com\r\n\r\nline one\r\n=2Eno dot here\r\nend\r\n"


def transport(server: SMTPServer) -> mail.SMTPTransport:
    t = mail.transport_from_url(server.url + "?helo=client.herald.test", timeout=5)
    assert isinstance(t, mail.SMTPTransport)
    return t


@pytest.mark.parametrize("pipelining", [True, False])
def test_prepared_bytes_arrive_exactly_as_built_over_one_connection(scripted, pipelining):
    scripted.handler.pipelining = pipelining
    with transport(scripted) as t:
        for i in range(5):
            t.send_prepared("news@herald.test", f"r{i}@example.com", MESSAGE)
    got = scripted.wait_for(5)
    assert [m.data for m in got] == [MESSAGE] * 5
    assert [m.recipients for m in got] == [[f"r{i}@example.com"] for i in range(5)]
    assert scripted.handler.sessions == 1


def test_a_generic_message_is_dot_stuffed_and_arrives_unchanged(scripted):
    data = b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend"
    with transport(scripted) as t:
        t.send("news@herald.test", "r@example.com", data)
    (got,) = scripted.wait_for(1)
    assert got.data == data + b"\r\n"


def test_an_eight_bit_message_is_declared_as_such(scripted):
    with transport(scripted) as t:
        t.send("news@herald.test", "r@example.com", "Subject: x\r\n\r\nПривіт\r\n".encode())
    scripted.wait_for(1)
    assert scripted.handler.commands == ["MAIL news@herald.test BODY=8BITMIME"]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("stage, reply, permanent, mailbox_missing", [
    ("rcpt", "550 5.1.1 <r@example.com>: Recipient address rejected: User unknown", True, True),
    ("rcpt", "450 4.2.1 Mailbox busy, try later", False, False),
    ("data", "554 5.7.1 Message refused by policy", True, False),
    ("data", "451 4.3.0 Temporary local problem", False, False),
    ("data", "550 5.1.1 No such user here", True, True),
    ("mail", "553 5.1.8 Sender address domain does not exist", True, False),
])
def test_refusals_are_classified_and_the_connection_stays_usable(scripted, pipelining, stage, reply, permanent,
                                                                 mailbox_missing):
    handler = scripted.handler
    handler.pipelining = pipelining
    if stage == "rcpt":
        handler.rcpt_reply["bad@example.com"] = reply
    elif stage == "mail":
        handler.mail_reply = reply
    else:
        handler.reply = lambda envelope: reply if "bad@example.com" in envelope.rcpt_tos else None
    with transport(scripted) as t:
        with pytest.raises(mail.MailError) as caught:
            t.send_prepared("news@herald.test", "bad@example.com", MESSAGE)
        error = caught.value
        assert (error.permanent, error.mailbox_missing, error.stage) == (permanent, mailbox_missing, stage)
        assert error.code == int(reply[:3])
        handler.mail_reply = None
        t.send_prepared("news@herald.test", "good@example.com", MESSAGE)
    (got,) = scripted.wait_for(1)
    assert got.recipients == ["good@example.com"]
    assert handler.sessions == 1


def test_a_421_closes_the_connection_and_the_next_message_opens_a_new_one(scripted):
    closing = "421 4.3.2 Service shutting down"
    scripted.handler.reply = lambda envelope: closing if "a@x.test" in envelope.rcpt_tos else None
    with transport(scripted) as t:
        with pytest.raises(mail.TemporaryMailError) as caught:
            t.send_prepared("news@herald.test", "a@x.test", MESSAGE)
        assert caught.value.code == 421
        t.send_prepared("news@herald.test", "b@x.test", MESSAGE)
    assert [m.recipients for m in scripted.wait_for(1)] == [["b@x.test"]]
    assert scripted.handler.sessions == 2


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_server_that_hangs_up_after_accepting_costs_no_delivery_a_retry(scripted, pipelining):
    scripted.handler.pipelining = pipelining
    scripted.handler.drop_after = 2
    with transport(scripted) as t:
        for i in range(6):
            t.send_prepared("news@herald.test", f"r{i}@example.com", MESSAGE)
    got = scripted.wait_for(6)
    assert sorted(m.recipients[0] for m in got) == [f"r{i}@example.com" for i in range(6)]
    assert scripted.handler.sessions == 3


def test_a_server_that_cannot_be_reached_is_a_temporary_failure():
    t = mail.SMTPTransport("127.0.0.1", 1, timeout=2)
    with pytest.raises(mail.TemporaryMailError):
        t.send_prepared("news@herald.test", "r@example.com", MESSAGE)


def test_a_fresh_connection_lost_before_data_is_a_temporary_failure(scripted):
    with transport(scripted) as t:
        t.open()
        assert t._conn is not None
        t._conn.sock.shutdown(socket.SHUT_RDWR)  # gone before the first message, which it never carried
        with pytest.raises(mail.TemporaryMailError, match="connection lost"):
            t.send_prepared("news@herald.test", "r@example.com", MESSAGE)
