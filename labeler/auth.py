"""Passwords and login limits: scrypt from the standard library (no plaintext is ever
stored), the same cost for unknown names, and growing lockouts after failed logins."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

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


def verify_password_or_dummy(password: str, stored: str | None) -> bool:
    """verify_password against ``stored``, or against a dummy hash (always False) when there
    is no such account, at the same cost."""
    if stored is None:
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, stored)


class LoginLimiter:
    """Growing lockouts after failed logins, counted per user name and per client address.

    After ``free`` failures in a row a key waits ``base_delay_s``, then twice that after each
    further failure, up to ``max_delay_s``; a success clears the name's count, and a key
    with no failure for ``forget_after_s`` starts over. A small mechanism of its own because
    quota libraries count fixed windows, while this needs an exponential lockout.
    """

    def __init__(self, *, free_per_name: int = 3, free_per_address: int = 10,
                 base_delay_s: float = 1.0, max_delay_s: float = 900.0,
                 forget_after_s: float = 3600.0, clock=time.monotonic,
                 max_keys: int = 100_000):
        self.free = {"name": free_per_name, "address": free_per_address}
        self.base_delay_s, self.max_delay_s = base_delay_s, max_delay_s
        self.forget_after_s, self.clock, self.max_keys = forget_after_s, clock, max_keys
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def delay_after(self, kind: str, failures: int) -> float:
        """The lockout after ``failures`` failures in a row for a "name" or "address" key."""
        over = failures - self.free[kind]
        if over < 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(over, 30))

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until a login for ``name`` from ``address`` may be tried; 0 when now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in (("name", name), ("address", address)):
                failures, last = self._failures.get(key, (0, 0.0))
                if failures and now - last > self.forget_after_s:
                    self._failures.pop(key, None)
                    continue
                wait = max(wait, last + self.delay_after(key[0], failures) - now)
        return max(0.0, wait)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._forget_old(now)
            for key in (("name", name), ("address", address)):
                failures, last = self._failures.get(key, (0, 0.0))
                if failures and now - last > self.forget_after_s:
                    failures = 0
                self._failures[key] = (failures + 1, now)

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(("name", name), None)

    def _forget_old(self, now: float) -> None:
        for key, (_, last) in list(self._failures.items()):
            if now - last > self.forget_after_s:
                del self._failures[key]
        while len(self._failures) >= self.max_keys:  # still full: drop the oldest
            del self._failures[min(self._failures, key=lambda k: self._failures[k][1])]
