"""Check and coerce request parameters against per-endpoint schemas, failing the way Stripe fails."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from newsletter.fakestripe.errors import invalid, missing, unknown


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if path else str(key)


class Spec(ABC):
    """One parameter's rule; ``required`` makes its absence a ``parameter_missing`` error."""

    def __init__(self, *, required: bool = False) -> None:
        self.required = required

    @abstractmethod
    def coerce(self, value: Any, path: str) -> Any:
        """Return the value converted to its Python type, or raise the Stripe error."""

    def check_empty(self, value: Any, path: str) -> None:
        if value == "" and self.required:
            raise invalid(
                path,
                f"You passed an empty string for '{path}'. We assume empty values are an attempt to "
                f"unset a parameter; however '{path}' cannot be unset. You should remove '{path}' "
                "from your request or supply a non-empty value.",
                code="parameter_invalid_empty",
            )


class Str(Spec):
    """A string; an empty string means "unset" (``None``) unless the parameter is required."""

    def __init__(self, *, required: bool = False, max_length: int = 5000) -> None:
        super().__init__(required=required)
        self.max_length = max_length

    def coerce(self, value: Any, path: str) -> Any:
        self.check_empty(value, path)
        if not isinstance(value, str):
            raise invalid(path, f"Invalid string: {_describe(value)}", code="parameter_invalid_string")
        if value == "":
            return None
        if len(value) > self.max_length:
            raise invalid(
                path,
                f"Invalid string: {value[:20]}...; must be at most {self.max_length} characters",
                code="parameter_invalid_string",
            )
        return value


class Enum(Str):
    """One of a fixed set of strings."""

    def __init__(self, *choices: str, required: bool = False) -> None:
        super().__init__(required=required)
        self.choices = choices

    def coerce(self, value: Any, path: str) -> Any:
        text = super().coerce(value, path)
        if text is not None and text not in self.choices:
            listed = self.choices[0]
            if len(self.choices) > 1:
                listed = ", ".join(self.choices[:-1]) + f", or {self.choices[-1]}"
            raise invalid(path, f"Invalid {path}: must be one of {listed}")
        return text


class Int(Spec):
    """An integer, optionally bounded below and above."""

    def __init__(self, *, required: bool = False, minimum: int | None = None, maximum: int | None = None) -> None:
        super().__init__(required=required)
        self.minimum = minimum
        self.maximum = maximum

    def coerce(self, value: Any, path: str) -> Any:
        self.check_empty(value, path)
        if value == "":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise invalid(path, f"Invalid integer: {_describe(value)}", code="parameter_invalid_integer") from None
        if self.minimum is not None and number < self.minimum:
            raise invalid(
                path,
                f"This value must be greater than or equal to {self.minimum}.",
                code="parameter_invalid_integer",
            )
        if self.maximum is not None and number > self.maximum:
            raise invalid(
                path,
                f"This value must be less than or equal to {self.maximum} (it currently is '{number}').",
                code="parameter_invalid_integer",
            )
        return number


class Bool(Spec):
    """``true`` or ``false`` as stripe-python encodes booleans."""

    def coerce(self, value: Any, path: str) -> Any:
        self.check_empty(value, path)
        if value in (True, "true"):
            return True
        if value in (False, "false"):
            return False
        raise invalid(path, f"Invalid boolean: {_describe(value)}")


class Metadata(Spec):
    """Free-form string pairs; ``""`` for the whole hash or a key removes it on update."""

    def coerce(self, value: Any, path: str) -> Any:
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise invalid(path, "Invalid hash", code="parameter_invalid_hash")
        if len(value) > 50:
            raise invalid(path, "Metadata can have up to 50 keys.")
        out: dict[str, str | None] = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise invalid(_join(path, key), "Metadata values must be strings.")
            if len(str(key)) > 40:
                raise invalid(_join(path, key), "Metadata keys must be at most 40 characters long.")
            if len(item) > 500:
                raise invalid(_join(path, key), "Metadata values must be at most 500 characters long.")
            out[str(key)] = item or None
        return out


class Obj(Spec):
    """A hash with known keys; unknown keys are refused like at the top level."""

    def __init__(self, fields: dict[str, Spec], *, required: bool = False) -> None:
        super().__init__(required=required)
        self.fields = fields

    def coerce(self, value: Any, path: str) -> Any:
        self.check_empty(value, path)
        if value == "":
            return None
        if not isinstance(value, dict):
            raise invalid(path, "Invalid hash", code="parameter_invalid_hash")
        return _validate_fields(self.fields, value, path)


class List(Spec):
    """An array, sent as ``x[0]=`` by stripe-python or ``x[]=`` by curl."""

    def __init__(self, item: Spec, *, required: bool = False, max_items: int | None = None) -> None:
        super().__init__(required=required)
        self.item = item
        self.max_items = max_items

    def coerce(self, value: Any, path: str) -> Any:
        self.check_empty(value, path)
        if value == "":
            return []
        if not isinstance(value, list):
            raise invalid(path, "Invalid array", code="parameter_invalid_array")
        if self.max_items is not None and len(value) > self.max_items:
            raise invalid(path, f"This list may contain at most {self.max_items} items.")
        return [self.item.coerce(v, _join(path, i)) for i, v in enumerate(value)]


class Range(Spec):
    """A timestamp filter: an integer or a hash of ``gt``, ``gte``, ``lt``, ``lte``."""

    def coerce(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return _validate_fields({op: Int() for op in ("gt", "gte", "lt", "lte")}, value, path)
        return {"eq": Int().coerce(value, path)}


def _describe(value: Any) -> str:
    return value if isinstance(value, str) else type(value).__name__


def _validate_fields(fields: dict[str, Spec], values: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in values:
        if key not in fields:
            raise unknown(_join(path, key))
    for key, spec in fields.items():
        if key in values:
            out[key] = spec.coerce(values[key], _join(path, key))
        elif spec.required:
            raise missing(_join(path, key))
    return out


LIST_FIELDS: dict[str, Spec] = {
    "limit": Int(minimum=1, maximum=100),
    "starting_after": Str(),
    "ending_before": Str(),
    "created": Range(),
}


def validate(fields: dict[str, Spec], values: dict[str, Any], *, listing: bool = False) -> dict[str, Any]:
    """Return the coerced parameters, or raise the Stripe error for the first bad one."""
    allowed: dict[str, Spec] = {"expand": List(Str()), **fields}
    if listing:
        allowed = {**LIST_FIELDS, **allowed}
    return _validate_fields(allowed, values, "")
