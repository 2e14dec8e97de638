"""Tencent CSS event notifications: strict JSON, ``sign == MD5(key + t)``, freshness.

The sign does not cover the body, so everything in it stays untrusted after
verification; it only proves the sender knew a key before ``t`` expired.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from recorder.callbacks import Received
from recorder.errors import BadSign, ExpiredSign, MalformedCallback
from recorder.events import Event, is_digits, parse_tencent, tencent_event_type

# Tencent sets t to now + 10 min; anything further ahead was not minted by it.
MAX_T_AHEAD = 600
# Callbacks nest a few levels. Python's own limit (about 1000 frames) also counts the caller's
# stack, so a body json.loads just accepted could still fail when hashed a few frames deeper.
MAX_DEPTH = 32
TOO_DEEP = f"body is nested more than {MAX_DEPTH} levels deep"
_SIGN = re.compile("[0-9a-fA-F]{32}")  # an MD5 in hex
_SURROGATE = re.compile("[\ud800-\udfff]")  # json pairs valid ones into one character


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedCallback(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a body that must be one JSON object with unique keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCallback("body is not valid UTF-8") from None
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise MalformedCallback(TOO_DEEP) from None
    except ValueError as error:
        if isinstance(error, MalformedCallback):
            raise
        raise MalformedCallback(f"body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise MalformedCallback("body must be a JSON object")
    _check_values(body)
    return body


def _check_values(body: dict[str, Any]) -> None:
    """Refuse what would fail only later, when the body is hashed or stored: nesting deep enough to
    exhaust the recursion of ``json.dumps``, and lone surrogates (from ``\\ud800`` escapes), which
    have no UTF-8 encoding."""
    level: list[Any] = [body]
    for _ in range(MAX_DEPTH):
        nested: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                nested += [*value, *value.values()]
            elif isinstance(value, list):
                nested += value
            elif isinstance(value, str) and _SURROGATE.search(value):
                raise MalformedCallback("body has a lone surrogate escape: not valid Unicode")
        if not nested:
            return
        level = nested
    raise MalformedCallback(TOO_DEEP)


def expected_sign(key: str, t: str) -> str:
    return hashlib.md5((key + t).encode()).hexdigest()


def verify_sign(body: dict[str, Any], keys: tuple[str, ...], *, now: float, skew: float) -> None:
    """Raise ``BadSign``/``ExpiredSign`` unless one key signed ``t`` and ``t`` is fresh."""
    sign, t = body.get("sign"), body.get("t")
    if not isinstance(sign, str) or not sign:
        raise BadSign("sign is missing or not a string")
    if not _SIGN.fullmatch(sign):
        raise BadSign("sign is not 32 hex digits")
    if isinstance(t, bool) or not isinstance(t, (int, str)):
        raise BadSign("t is missing or not an integer")
    t_text = str(t)
    if not is_digits(t_text, 20):
        raise BadSign("t is not an integer of at most 20 digits")
    expiry = int(t_text)
    if expiry + skew < now:
        raise ExpiredSign("t has expired")
    if expiry > now + MAX_T_AHEAD + skew:
        raise ExpiredSign("t is too far in the future")
    # Check every key so the time taken does not reveal which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(expected_sign(key, t_text).encode(), sign.lower().encode())
    if not matched:
        raise BadSign("sign does not match")


def dedupe_key(body: dict[str, Any]) -> str:
    """Content identity of a callback: retries change ``t`` and ``sign`` only."""
    content = {k: v for k, v in body.items() if k not in ("sign", "t")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def receive(raw: bytes, *, keys: tuple[str, ...], now: float, skew: float) -> Received:
    """Verify and parse a CSS event notification (unsigned only when no key is configured)."""
    body = parse_json_object(raw)
    if keys:
        verify_sign(body, keys, now=now, skew=skew)
    event = parse_tencent(body)
    return Received("tencent", str(tencent_event_type(body)), dedupe_key(body), raw.decode(), event)


def parse_stored(body: str) -> Event:
    return parse_tencent(json.loads(body))
