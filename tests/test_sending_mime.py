"""An edition's MIME bytes are built once and filled per reader: valid MIME, the intended text, every header once."""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.policy
import email.utils
import html
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import mail
from newsletter.mail import SLOT_NAME, SLOT_PREFERENCES_URL, SLOT_UNSUBSCRIBE_URL

TEXT = (
    f"Привіт, {SLOT_NAME}!\n\nСьогодні — головне за добу.\n.a line that starts with a dot\n"
    "From the front: a line mbox readers would mangle\n" + "Довгий рядок без пробілів " * 12 + "\n\n"
    f"Unsubscribe: {SLOT_UNSUBSCRIBE_URL}\nPreferences: {SLOT_PREFERENCES_URL}\n"
)
HTML = (
    f"<!doctype html><html><body><p>Привіт, <b>{SLOT_NAME}</b>!</p>\n<p>Сьогодні — головне за добу’s.</p>\n"
    f'<p><a href="{SLOT_UNSUBSCRIBE_URL}">Unsubscribe</a> · <a href="{SLOT_PREFERENCES_URL}">Preferences</a></p>'
    "</body></html>\n"
)
DATE = dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)
LIST_HEADERS = {
    "List-Id": "Daily digest <daily.list-id.herald.test>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "Auto-Submitted": "auto-generated",
    "Feedback-ID": "42:daily:digest:heraldnews",
}


def template(text: str = TEXT, html_body: str | None = HTML, **kwargs) -> mail.MessageTemplate:
    params = dict(
        from_name="Редакція «Герольд»", from_addr="news@herald.test", subject="Щоденний дайджест — 25 листопада",
        text=text, html=html_body, date=DATE, headers=LIST_HEADERS,
    )
    params.update(kwargs)
    return mail.MessageTemplate(**params)


def reader(**overrides) -> mail.Reader:
    values = dict(
        address="olena@example.com", name="Олена Коваль", message_id="<e42.s7.k3j@herald.test>",
        unsubscribe_url="https://herald.test/unsubscribe/" + "Wzc0LDFd.abc-DEF_" * 9,
        unsubscribe_mailto="mailto:unsubscribe@herald.test?subject=unsubscribe",
        preferences_url="https://herald.test/preferences/MTIz.xyz?a=1&b=2",
    )
    values.update(overrides)
    return mail.Reader(**values)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def intended(content: str, r: mail.Reader, escape: bool) -> str:
    conv = html.escape if escape else (lambda s: s)
    return (content.replace(SLOT_NAME, conv(r.name)).replace(SLOT_UNSUBSCRIBE_URL, conv(r.unsubscribe_url))
            .replace(SLOT_PREFERENCES_URL, conv(r.preferences_url)))


def bodies(data: bytes) -> tuple[str, str]:
    parsed = parse(data)
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html_part = parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
    return text, html_part


def test_a_readers_copy_is_multipart_alternative_with_text_first():
    parsed = parse(template().render(reader()))
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parsed.iter_parts())


def test_every_required_header_appears_exactly_once():
    r = reader()
    parsed = parse(template().render(r))
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "Auto-Submitted", "Feedback-ID"):
        assert len(parsed.get_all(name) or []) == 1, name
    assert parsed["Message-ID"] == r.message_id
    assert parsed["List-Unsubscribe"] == f"<{r.unsubscribe_url}>, <{r.unsubscribe_mailto}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Feedback-ID"] == "42:daily:digest:heraldnews"
    assert parsed["Subject"] == "Щоденний дайджест — 25 листопада"
    assert parsed["From"].addresses[0].display_name == "Редакція «Герольд»"
    assert parsed["Date"].datetime == DATE


def test_the_parsed_back_bodies_equal_the_intended_text_with_the_name_escaped_in_html():
    r = reader(name='Олена "O\'Brien" <b>&</b>')
    text, html_part = bodies(template().render(r))
    assert text == intended(TEXT, r, escape=False)
    assert html_part == intended(HTML, r, escape=True)
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html_part
    assert 'href="https://herald.test/preferences/MTIz.xyz?a=1&amp;b=2"' in html_part


@pytest.mark.parametrize("name", [
    "Олена Коваль", "Ілля Ґудзь-Їжакевич «Кобзар» Щербаківський-Єфременко Олександрович", "王小明", "محمد علي",
    "Zoë 😀 Ńowak", "O'Brien, Pat", 'Back\\slash "quoted"', "plain ascii", "=?utf-8?q?not_encoded?=", "J. R. R.",
    "x" * 100, "Й" * 100,
])
def test_a_display_name_in_any_script_reaches_the_reader_intact(name):
    data = template().render(reader(name=name))
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert all(len(line) <= 998 for line in header_block.split(b"\r\n"))
    # RFC 2047 decoding, as mail clients do it (the stdlib's email.header implements it).
    to_value = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    decoded = str(email.header.make_header(email.header.decode_header(to_value)))
    assert email.utils.parseaddr(decoded) == (name, "olena@example.com")
    if len(name.encode()) <= 45:
        # Python's modern parser keeps the fold between two encoded-words as a space (RFC 2047 6.2
        # says to drop it), so it reads back long names with extra spaces; short ones fit one word.
        (address,) = parse(data)["To"].addresses
        assert (address.display_name, address.addr_spec) == (name, "olena@example.com")
    assert bodies(data)[0] == intended(TEXT, reader(name=name), escape=False)


def test_an_empty_name_gives_a_bare_address_and_an_empty_slot():
    data = template().render(reader(name=""))
    parsed = parse(data)
    assert parsed["To"].addresses[0].addr_spec == "olena@example.com"
    assert bodies(data)[0].startswith("Привіт, !")


def test_the_message_is_seven_bit_and_needs_no_dot_stuffing():
    data = template().render(reader(name=".Dotty"))
    assert data.isascii()
    lines = data.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert b"\n" not in data.replace(b"\r\n", b"")
    head, body = data.split(b"\r\n\r\n", 1)
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_readers_differ_only_in_their_own_slots():
    t = template()
    one, two = t.render(reader()), t.render(reader(address="taras@example.com", name="Тарас",
                                                      message_id="<e42.s8.k3j@herald.test>"))
    assert parse(one)["To"].addresses[0].addr_spec == "olena@example.com"
    assert parse(two)["To"].addresses[0].addr_spec == "taras@example.com"
    assert parse(two)["Message-ID"] == "<e42.s8.k3j@herald.test>"
    assert bodies(two)[0].startswith("Привіт, Тарас!")


def test_a_text_only_message_is_single_part():
    data = template(html_body=None).render(reader())
    parsed = parse(data)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().replace("\r\n", "\n") == intended(TEXT, reader(), escape=False)


@pytest.mark.parametrize("field, value", [
    ("name", "Olena\r\nBcc: victim@example.com"),
    ("unsubscribe_url", "https://herald.test/u/x\r\nBcc: victim@example.com"),
    ("unsubscribe_url", "https://herald.test/u/x> <https://evil.test"),
    ("message_id", "<a@b>\r\nBcc: v@e.com"),
    ("message_id", "no-angle-brackets@herald.test"),
])
def test_a_reader_value_that_would_write_headers_is_refused(field, value):
    with pytest.raises(ValueError):
        template().render(reader(**{field: value}))


@pytest.mark.parametrize("name", ["Subject", "To", "Message-ID", "List-Unsubscribe", "Content-Type"])
def test_headers_the_template_owns_cannot_be_given_again(name):
    with pytest.raises(ValueError):
        template(headers={name: "x"})


_slot = st.sampled_from([SLOT_NAME, SLOT_UNSUBSCRIBE_URL, SLOT_PREFERENCES_URL])
_chunk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=120)
_content = st.lists(st.one_of(_chunk, _slot, st.sampled_from(["\n", ".", "From ", " ", "\t", "=", "=\n", "@@"])),
                    max_size=30).map("".join)
_name = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), max_size=40).map(
    lambda s: " ".join(s.split()))
_url = st.text(alphabet="abcXYZ019-._~?&=/%", min_size=1, max_size=300).map(lambda s: "https://h.test/" + s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_content, html_body=_content, name=_name, unsub=_url, prefs=_url)
def test_any_content_and_any_reader_survive_the_round_trip(text, html_body, name, unsub, prefs):
    r = reader(name=name, unsubscribe_url=unsub, preferences_url=prefs)
    data = template(text=text, html_body=html_body).render(r)
    assert data.isascii()
    assert not re.search(rb"(^|\n)\.", data)
    got_text, got_html = bodies(data)
    # Line ends are CRLF on the wire; a lone "\r" is not a line end we can keep.
    assert got_text == intended(text, r, escape=False)
    assert got_html == intended(html_body, r, escape=True)
