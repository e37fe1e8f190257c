"""Signed, opaque tokens for the links in our mail: confirm, unsubscribe, preferences, sign-in."""

from __future__ import annotations

import datetime as dt
import enum
import functools
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    SIGNIN = "signin"


class InvalidToken(Exception):
    """The token was forged, altered, truncated, or used for the wrong purpose."""


class ExpiredToken(InvalidToken):
    """The token was genuine but is too old; its verified payload is kept for a fresh link."""

    def __init__(self, message: str, subscriber_id: int = 0, newsletter_ids: list[int] | None = None):
        super().__init__(message)
        self.subscriber_id = subscriber_id
        self.newsletter_ids = newsletter_ids or []


@functools.lru_cache(maxsize=32)
def _serializer(secret_key: str, purpose: Purpose, timed: bool) -> URLSafeSerializer:
    # Built once per key and purpose: the sending engine signs two links per reader, and building
    # a serializer (key derivation included) cost more than the signing itself.
    cls = URLSafeTimedSerializer if timed else URLSafeSerializer
    return cls(secret_key, salt=f"herald.{purpose}")


@dataclass(frozen=True)
class Tokens:
    """Sign and read tokens with the app's secret; each purpose has its own salt."""

    secret_key: str

    def _plain(self, purpose: Purpose) -> URLSafeSerializer:
        return _serializer(self.secret_key, purpose, timed=False)

    def _timed(self, purpose: Purpose) -> URLSafeTimedSerializer:
        return _serializer(self.secret_key, purpose, timed=True)

    # Tokens carry row ids only, never an address, so a forwarded link shows nothing readable.

    def confirm(self, subscriber_id: int, newsletter_ids: list[int]) -> str:
        return self._timed(Purpose.CONFIRM).dumps([subscriber_id, sorted(newsletter_ids)])

    def read_confirm(self, token: str, max_age: dt.timedelta) -> tuple[int, list[int], dt.datetime]:
        """Return (subscriber id, newsletter ids, issued at) or raise InvalidToken / ExpiredToken.

        An expired token still carries its verified payload, so the reader can ask for a new link.
        """
        try:
            payload, issued = self._timed(Purpose.CONFIRM).loads(token, return_timestamp=True)
            sid, nids = payload
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None
        if not isinstance(sid, int) or not isinstance(nids, list) or not all(isinstance(n, int) for n in nids):
            raise InvalidToken("malformed payload")
        if dt.datetime.now(dt.UTC) - issued > max_age:
            raise ExpiredToken("link expired", subscriber_id=sid, newsletter_ids=list(nids))
        return sid, list(nids), issued

    def unsubscribe(self, subscriber_id: int, newsletter_id: int) -> str:
        # Never expires: CAN-SPAM and CASL want the link to work long after the mail was sent.
        return self._plain(Purpose.UNSUBSCRIBE).dumps([subscriber_id, newsletter_id])

    def read_unsubscribe(self, token: str) -> tuple[int, int]:
        try:
            sid, nid = self._plain(Purpose.UNSUBSCRIBE).loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None
        if not isinstance(sid, int) or not isinstance(nid, int):
            raise InvalidToken("malformed payload")
        return sid, nid

    def preferences(self, subscriber_id: int) -> str:
        return self._plain(Purpose.PREFERENCES).dumps(subscriber_id)

    def read_preferences(self, token: str) -> int:
        try:
            sid = self._plain(Purpose.PREFERENCES).loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None
        if not isinstance(sid, int):
            raise InvalidToken("malformed payload")
        return sid

    def signin(self, subscriber_id: int, nonce: str) -> str:
        return self._timed(Purpose.SIGNIN).dumps([subscriber_id, nonce])

    def read_signin(self, token: str, max_age: dt.timedelta) -> tuple[int, str]:
        try:
            sid, nonce = self._timed(Purpose.SIGNIN).loads(token, max_age=int(max_age.total_seconds()))
        except SignatureExpired as exc:
            raise ExpiredToken(str(exc)) from None
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None
        return int(sid), str(nonce)
