"""DKIM signatures made through OpenSSL verify with dkimpy and cover the one-click unsubscribe headers."""

from __future__ import annotations

import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter import mail
from newsletter.dkim import DKIMSigner, body_hash, relaxed_header
from tests.test_sending_mime import reader, template


def _pem(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def signer() -> DKIMSigner:
    return DKIMSigner(_pem(2048), "herald.test", "s2026")


def verify(message: bytes, signer: DKIMSigner) -> bool:
    record = signer.dns_record().encode()
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record

    ok = dkim.verify(message, dnsfunc=dns)
    assert asked == [b"s2026._domainkey.herald.test."]
    return ok


def tag(message: bytes, name: str) -> str:
    field = message.split(b"\r\n\r\n", 1)[0].decode()
    match = re.search(rf"[;\s]{name}=([^;]*)", field.split("\r\nTo:", 1)[0])
    assert match, name
    return re.sub(r"\s+", "", match.group(1))


def test_an_edition_message_signed_with_openssl_verifies_with_dkimpy(signer):
    message = template(signer=signer).render(reader())
    assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=herald.test; s=s2026;")
    assert verify(message, signer)


def test_the_signature_covers_from_subject_and_the_one_click_unsubscribe_headers(signer):
    signed = tag(template(signer=signer).render(reader()), "h").split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                 "list-unsubscribe-post", "feedback-id", "auto-submitted", "mime-version", "content-type"):
        assert name in signed, name


@pytest.mark.parametrize("tamper", [
    lambda m: m.replace(b"List-Unsubscribe: <https://herald.test/", b"List-Unsubscribe: <https://evil.test/"),
    lambda m: m.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
    lambda m: m.replace(b"Feedback-ID: 42:", b"Feedback-ID: 43:"),
    lambda m: m.replace(b"Subject: =?utf-8?", b"Subject: Re: =?utf-8?"),
    lambda m: m.replace(b"=D0=9F=D1=80=D0=B8", b"=D0=9F=D1=80=D1=96", 1),
])
def test_changing_a_signed_header_or_the_body_breaks_the_signature(signer, tamper):
    message = template(signer=signer).render(reader())
    changed = tamper(message)
    assert changed != message
    assert not verify(changed, signer)


def test_every_reader_gets_their_own_valid_signature(signer):
    t = template(signer=signer)
    for i, name in enumerate(["Олена Коваль", "Ілля Ґудзь-Їжакевич «Кобзар» Щербаківський-Єфременко", ""]):
        message = t.render(reader(name=name, address=f"r{i}@example.com", message_id=f"<e1.s{i}@herald.test>",
                                  unsubscribe_url=f"https://herald.test/unsubscribe/tok{i}"))
        assert verify(message, signer)


def test_a_message_built_with_the_email_package_can_be_signed_too(signer):
    msg = mail.build_message(
        from_name="Herald", from_addr="news@herald.test", to_name="Олена", to_addr="olena@example.com",
        subject="Підтвердіть підписку", text="Текст\n.крапка\n", html="<p>Текст</p>",
        message_id=mail.new_message_id("herald.test"), headers={"Auto-Submitted": "auto-generated"},
    )
    signed = signer.sign(mail.message_bytes(msg))
    assert verify(signed, signer)
    assert "list-unsubscribe" not in tag(signed, "h").split(":")


def test_relaxed_header_canonicalization_unfolds_and_collapses_whitespace():
    assert relaxed_header(b"Subject:  Hello \t World \r\n  again\t\r\n") == b"subject:Hello World again\r\n"


def test_the_body_hash_ignores_trailing_empty_lines():
    assert body_hash(b"text\r\n") == body_hash(b"text\r\n\r\n\r\n")
    assert body_hash(b"") == body_hash(b"\r\n")


def test_a_key_shorter_than_1024_bits_is_refused():
    with pytest.raises(ValueError, match="1024"):
        DKIMSigner(_pem(512), "herald.test", "s1")
