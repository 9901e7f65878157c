"""Passwords and login limits: scrypt from the standard library (no plaintext is ever
stored), the same cost for unknown names, one rule for new passwords, and failed logins
limited in moving windows by the ``limits`` library (a maintained, tested implementation of
the windows, rather than counters of our own)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

# scrypt cost: 2^14 x 8 x 1 needs 16 MiB and ~50 ms per check, the interactive-login setting
# recommended by the scrypt paper.
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64 fields)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# A hash of a random password with the same cost: checking an unknown user name against it
# takes as long as checking a real account, so the answer time does not reveal which exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def password_problem(password, name: str = "") -> str | None:
    """Why ``password`` may not be used for the account ``name``, or None: the one rule for
    new passwords, wherever they are set (the console, ``rankloop users``)."""
    from data.labeling import name_key

    if not isinstance(password, str) or not password.strip():
        return "give a password"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(set(password)) < 4:
        return "the password repeats too few characters; choose a less guessable one"
    if name and name_key(password) == name_key(name):
        return "the password cannot be the user name"
    if len(password) > 1024:
        return "a password is at most 1024 characters"
    return None


def verify_password_or_dummy(password: str, stored: str | None) -> bool:
    """verify_password against ``stored``, or against a dummy hash (always False) when there
    is no such account, at the same cost."""
    if stored is None:
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, stored)


@dataclass(frozen=True)
class Refusal:
    """Why a login may not be tried now, and for how long."""

    reason: str
    retry_after_s: int


class LoginLimiter:
    """Failed logins counted in moving windows (the ``limits`` library, in memory).

    - per (name, address): one address guessing one account;
    - per address: one address spraying many names;
    - per name, across addresses: guesses spread over many addresses. This one slows only
      clients that never logged in to that name: a *known device* (a browser holding the
      signed cookie ``device_cookie`` gave it at a successful login) is counted on its own
      instead, per (name, device), and by no other limit, so nobody else's failures (not even
      from its own address) can keep it out.

    Only failures count; a success clears the (name, address) and (name, device) counts.
    Each limit is a ``limits`` string such as ``"5/15 minutes;20/day"``.
    """

    def __init__(self, *, per_name_address: str = "3/15 minutes;20/day",
                 per_address: str = "10/15 minutes;100/day",
                 per_name: str = "10/15 minutes;50/day",
                 per_device: str = "5/15 minutes;20/day"):
        self._storage = MemoryStorage()
        self._window = MovingWindowRateLimiter(self._storage)
        self._limits = {kind: parse_many(text) for kind, text in (
            ("name-address", per_name_address), ("address", per_address),
            ("name", per_name), ("device", per_device))}
        self._running: Counter = Counter()  # tries being checked now, per key
        self._lock = threading.Lock()

    def _keys(self, name: str, address: str, device: str | None):
        if device:  # a known device: only its own failures count
            return [("device", (name, device))]
        return [("name-address", (name, address)), ("address", (address,)),
                ("name", (name,))]

    def refusal(self, name: str, address: str, device: str | None = None) -> Refusal | None:
        """Why a login for ``name`` from ``address`` (from the known ``device``, if any) may
        not be tried now; None when it may. Checks still running count as failures, so that
        many tries sent at once cannot all pass before the first one fails."""
        for kind, ids in self._keys(name, address, device):
            cost = 1 + self._running[(kind, ids)]
            for limit in self._limits[kind]:
                if not self._window.test(limit, kind, *ids, cost=cost):
                    reset, _ = self._window.get_window_stats(limit, kind, *ids)
                    wait = max(1, math.ceil(reset - time.time()))
                    return Refusal(_REASONS[kind], wait)
        return None

    def begin(self, name: str, address: str, device: str | None = None) -> Refusal | None:
        """``refusal``, and when there is none, the try counts as running until ``end``."""
        refusal = self.refusal(name, address, device)
        if refusal is None:
            with self._lock:
                for key in self._keys(name, address, device):
                    self._running[key] += 1
        return refusal

    def end(self, name: str, address: str, device: str | None, ok: bool) -> None:
        """The try that ``begin`` let through has been checked."""
        with self._lock:
            for key in self._keys(name, address, device):
                self._running[key] -= 1
                if self._running[key] <= 0:
                    del self._running[key]
        if ok:
            self.succeeded(name, address, device)
        else:
            self.failed(name, address, device)

    def failed(self, name: str, address: str, device: str | None = None) -> None:
        for kind, ids in self._keys(name, address, device):
            for limit in self._limits[kind]:
                self._window.hit(limit, kind, *ids)

    def succeeded(self, name: str, address: str, device: str | None = None) -> None:
        for kind, ids in (("name-address", (name, address)), ("device", (name, device))):
            for limit in self._limits[kind]:
                self._window.clear(limit, kind, *ids)


_REASONS = {
    "name-address": "Too many failed logins for this name from this address",
    "address": "Too many failed logins from this address",
    "name": "Too many failed logins for this name from new devices (a browser that logged "
            "in to it before is not held back)",
    "device": "Too many failed logins for this name from this browser",
}


# --- known devices -------------------------------------------------------------------------

DEVICE_COOKIE_PREFIX = "rankloop-device-"


def device_cookie(name_key: str, password_hash: str) -> tuple[str, str]:
    """(cookie name, value) that marks this browser as one that logged in to ``name_key``:
    a random device id and its HMAC keyed by the account's password hash (secret, per
    account, and changed by a password reset, which forgets every known device)."""
    device = secrets.token_urlsafe(12)
    return _device_cookie_name(name_key), f"{device}.{_device_mac(name_key, password_hash, device)}"


def known_device(name_key: str, password_hash: str | None, cookies: dict[str, str]) -> str | None:
    """The device id of a valid known-device cookie for ``name_key`` among ``cookies``."""
    value = cookies.get(_device_cookie_name(name_key), "")
    device, _, mac = value.partition(".")
    if not device or not mac or not password_hash:
        return None
    expected = _device_mac(name_key, password_hash, device)
    return device if hmac.compare_digest(mac, expected) else None


def _device_cookie_name(name_key: str) -> str:
    return DEVICE_COOKIE_PREFIX + hashlib.sha256(name_key.encode()).hexdigest()[:16]


def _device_mac(name_key: str, password_hash: str, device: str) -> str:
    message = f"rankloop known device\0{name_key}\0{device}".encode()
    return hmac.new(password_hash.encode(), message, hashlib.sha256).hexdigest()[:32]
