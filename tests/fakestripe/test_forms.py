"""Stripe's bracketed form encoding decodes to the values stripe-python meant; bad input fails like Stripe."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from stripe._encode import _api_encode

from newsletter.fakestripe.errors import StripeAPIError
from newsletter.fakestripe.forms import FormDecodeError, decode
from newsletter.fakestripe.params import Bool, Enum, Int, List, Metadata, Obj, Str, validate


def _as_stripe_python_sends(params: dict[str, object]) -> dict[str, object]:
    return decode(parse_qsl(urlencode(list(_api_encode(params))), keep_blank_values=True))


def test_stripe_python_encoding_round_trips() -> None:
    params = {
        "mode": "payment",
        "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": 500, "product_data": {"name": "Donation"}},
             "quantity": 1},
            {"price": "price_123", "quantity": 2},
        ],
        "payment_intent_data": {"metadata": {"subscriber_id": "9"}},
        "expand": ["payment_intent", "line_items"],
        "allow_promotion_codes": False,
    }
    assert _as_stripe_python_sends(params) == {
        "mode": "payment",
        "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": "500", "product_data": {"name": "Donation"}},
             "quantity": "1"},
            {"price": "price_123", "quantity": "2"},
        ],
        "payment_intent_data": {"metadata": {"subscriber_id": "9"}},
        "expand": ["payment_intent", "line_items"],
        "allow_promotion_codes": "false",
    }


def test_curl_style_appends_keep_their_order() -> None:
    assert decode([("lookup_keys[]", "a"), ("lookup_keys[]", "b"), ("expand[]", "data.product")]) == {
        "lookup_keys": ["a", "b"], "expand": ["data.product"],
    }


def test_an_empty_value_is_kept_so_it_can_unset_a_field() -> None:
    assert decode(parse_qsl("metadata[note]=&description=", keep_blank_values=True)) == {
        "metadata": {"note": ""}, "description": "",
    }


@pytest.mark.parametrize("name", ["a[b", "a[b]c", "[x]"])
def test_unreadable_brackets_are_refused(name: str) -> None:
    with pytest.raises(FormDecodeError):
        decode([(name, "1")])


def test_a_name_used_as_value_and_hash_is_refused() -> None:
    with pytest.raises(FormDecodeError):
        decode([("metadata", "x"), ("metadata[a]", "1")])


def test_validation_coerces_types_and_names_the_bad_parameter() -> None:
    schema = {
        "quantity": Int(minimum=1), "active": Bool(), "mode": Enum("payment", "subscription", required=True),
        "items": List(Obj({"price": Str(required=True)})), "metadata": Metadata(),
    }
    assert validate(schema, {"quantity": "3", "active": "true", "mode": "payment",
                             "items": [{"price": "p"}], "metadata": {"a": "1", "b": ""}}) == {
        "quantity": 3, "active": True, "mode": "payment", "items": [{"price": "p"}],
        "metadata": {"a": "1", "b": None},
    }
    cases = [
        ({"mode": "payment", "quantity": "x"}, "parameter_invalid_integer", "quantity"),
        ({"mode": "payment", "quantity": "0"}, "parameter_invalid_integer", "quantity"),
        ({"mode": "setup"}, None, "mode"),
        ({}, "parameter_missing", "mode"),
        ({"mode": "payment", "items": [{}]}, "parameter_missing", "items[0][price]"),
        ({"mode": "payment", "colour": "red"}, "parameter_unknown", "colour"),
        ({"mode": "payment", "items": [{"price": "p", "x": "1"}]}, "parameter_unknown", "items[0][x]"),
        ({"mode": "payment", "active": "maybe"}, None, "active"),
        ({"mode": ""}, "parameter_invalid_empty", "mode"),
    ]
    for values, code, param in cases:
        with pytest.raises(StripeAPIError) as caught:
            validate(schema, values)
        assert (caught.value.status, caught.value.code, caught.value.param) == (400, code, param), values
