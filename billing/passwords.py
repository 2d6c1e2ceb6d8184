"""Password hashing with bcrypt (cost from config), safe against bcrypt 5's 72-byte limit."""

from __future__ import annotations

import bcrypt

from billing.domain import MAX_PASSWORD_BYTES


class PasswordHasher:
    """bcrypt at `rounds`; `check` costs the same whether or not the account exists."""

    def __init__(self, rounds: int = 10) -> None:
        if not 4 <= rounds <= 16:
            raise ValueError(f"bcrypt rounds must be between 4 and 16 (got {rounds})")
        self.rounds = rounds
        # Checked against when the email is unknown, so both answers take one bcrypt round trip.
        self._dummy = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        """The bcrypt hash of a password that passed billing.domain.check_password."""
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.rounds)).decode("ascii")

    def check(self, password: str, stored: str | None) -> bool:
        """True when `password` matches `stored`; False for an unknown account (stored None).

        Passwords bcrypt cannot hash (over 72 bytes, NUL, lone surrogates) never match, but still
        cost a bcrypt round so the answer takes as long as any other.
        """
        try:
            raw = password.encode("utf-8")
        except UnicodeEncodeError:
            raw = b""
        usable = 0 < len(raw) <= MAX_PASSWORD_BYTES and b"\x00" not in raw
        target = stored.encode("ascii") if stored else self._dummy
        ok = bcrypt.checkpw(raw if usable else b"x", target)
        return ok and usable and stored is not None
