"""Bearer tokens: one API token for the server, one token per session.

* The **API token** creates and lists sessions and may act on any session.
* A **session token** (returned when the session is created) acts on that session only: its
  offer, its audio websocket, its text-to-speech, its deletion.

With auth off (the default on loopback) nothing is checked. Tokens travel in an
``Authorization: Bearer …`` header or, where a browser cannot set headers (websockets), in a
``token`` query parameter.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping


class AuthError(Exception):
    """Missing or wrong token (HTTP 401, websocket close 4401)."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def new_session_id() -> str:
    return secrets.token_hex(8)


def token_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer token of a request: ``Authorization`` header first, then ``?token=``."""
    header = headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = query.get("token")
    return token or None


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


class Auth:
    def __init__(self, enabled: bool, api_token: str | None) -> None:
        if enabled and not api_token:
            raise ValueError("auth is on but no API token is set")
        self.enabled = enabled
        self.api_token = api_token

    def check_api(self, token: str | None) -> None:
        if not self.enabled:
            return
        if token is None:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        if not _same(token, self.api_token):
            raise AuthError("invalid API token")

    def check_session(self, token: str | None, session_token: str) -> None:
        if not self.enabled:
            return
        if token is None:
            raise AuthError("missing bearer token (the session token or the API token)")
        if not (_same(token, session_token) or _same(token, self.api_token)):
            raise AuthError("invalid token for this session")
