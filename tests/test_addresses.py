"""Addresses and names are validated and normalized at the edge."""

import pytest

from newsletter.addresses import InvalidInput, clean_name, email_hash, normalize_email


def test_address_is_trimmed_and_its_domain_lowercased():
    a = normalize_email("  Olena.Koval@Example.COM \t")
    assert a.email == "Olena.Koval@example.com"
    assert a.key == "olena.koval@example.com"


def test_addresses_differing_only_in_case_share_one_key():
    assert normalize_email("OLENA@EXAMPLE.com").key == normalize_email("olena@example.COM").key


def test_internationalized_domain_is_idna_encoded():
    a = normalize_email("reader@пошта.укр")
    assert a.email == "reader@xn--80a1acn3a.xn--j1amh"
    assert a.email.isascii()


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "not-an-address", "a@b", "two@@example.com", "x" * 300 + "@example.com",
     "olena@example.com\r\nBcc: victim@example.com", "a b@example.com"],
)
def test_malformed_addresses_are_refused_with_a_message(raw):
    with pytest.raises(InvalidInput) as exc:
        normalize_email(raw)
    assert exc.value.field == "email"
    assert str(exc.value)


def test_names_in_any_script_are_kept():
    assert clean_name("  Олена   Коваль ") == "Олена Коваль"
    assert clean_name("Ярослав") == "Ярослав"
    assert clean_name(None) == ""


@pytest.mark.parametrize("raw", ["Olena\r\nBcc: x@example.com", "Olena\nX", "a\x00b", "a\u2028b"])
def test_names_with_line_breaks_or_controls_are_refused(raw):
    with pytest.raises(InvalidInput) as exc:
        clean_name(raw)
    assert exc.value.field == "name"


def test_a_ten_kilobyte_name_is_refused():
    with pytest.raises(InvalidInput, match="under 100 characters"):
        clean_name("Я" * 10_000)


def test_suppression_hash_ignores_case():
    assert email_hash("Olena@Example.com") == email_hash("olena@example.com")
    assert len(email_hash("olena@example.com")) == 64
