"""The instance's license at run time: load, re-check when the secret changes, and gate requests.

States: `valid`, `expired` (genuine but past `exp`: reads only), `invalid` (refused: forged,
tampered, wrong customer, wrong algorithm...) and `missing`. The gate functions are plain
functions of a status, so the rules are tested without HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from licensing import JwksKeySource, KeySource, License, LicenseError, PemKeySource, verify_license
from licensing.plans import MAX_DEVICES
from tenant_app.config import Settings
from tenant_app.errors import DomainError

log = logging.getLogger(__name__)

VALID, EXPIRED, INVALID, MISSING = "valid", "expired", "invalid", "missing"


class LicenseDenied(DomainError):
    """A request the license does not allow; `status` is the HTTP code to answer with (402 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LicenseStatus:
    """What the instance currently knows about its license."""

    state: str
    license: License | None = None
    error: str | None = None

    def summary(self, now: datetime) -> dict:
        out: dict = {"state": self.state}
        if self.error:
            out["error"] = self.error
        if self.license is not None:
            out.update(self.license.summary(now))
        return out


def evaluate(
    token: str | None, keys: KeySource | None, customer_id: str, issuer: str, now: datetime
) -> LicenseStatus:
    """Verify `token` and classify it; never raises for a bad license."""
    if not token or not token.strip():
        return LicenseStatus(MISSING, error="no license configured (IOTISTIC_LICENSE_KEY)")
    if keys is None:
        return LicenseStatus(
            INVALID, error="no license public key configured (LICENSE_PUBLIC_KEY_FILE or LICENSE_JWKS_URL)"
        )
    try:
        lic = verify_license(token, keys, customer_id=customer_id, issuer=issuer, now=now, allow_expired=True)
    except LicenseError as e:
        return LicenseStatus(INVALID, error=str(e))
    return LicenseStatus(EXPIRED if lic.is_expired(now) else VALID, lic)


def require_readable(status: LicenseStatus) -> License:
    """Reads need a genuine license, expired or not."""
    if status.license is None:
        raise LicenseDenied(403, f"license {status.state}: {status.error}")
    return status.license


def require_writable(status: LicenseStatus) -> License:
    """Ingestion and changes need a valid, unexpired license (402 once it has expired)."""
    lic = require_readable(status)
    if status.state == EXPIRED:
        raise LicenseDenied(
            402,
            f"license expired on {lic.expires_at.date().isoformat()}: ingestion and changes are paused "
            "until the subscription is renewed; reading existing data still works",
        )
    return lic


def require_feature(lic: License, feature: str) -> None:
    """403 when the plan does not include `feature`."""
    if not lic.has(feature):
        raise LicenseDenied(403, f"feature {feature!r} is not included in the {lic.plan} plan")


def check_device_limit(lic: License, registered: int) -> None:
    """403 when registering one more device would exceed `maxDevices`."""
    limit = lic.limit(MAX_DEVICES)
    if limit is not None and registered >= limit:
        raise LicenseDenied(
            403,
            f"device limit reached: the {lic.plan} plan allows {limit} devices and {registered} are "
            "registered; delete a device or upgrade the plan",
        )


def key_source(settings: Settings) -> KeySource | None:
    """The billing service's public key from the settings: a PEM (file or text) or a JWKS URL."""
    if settings.license_public_key_file is not None:
        return PemKeySource(settings.license_public_key_file.read_bytes(), kid=settings.license_key_id)
    if settings.license_public_key:
        return PemKeySource(settings.license_public_key.encode(), kid=settings.license_key_id)
    if settings.license_jwks_url:
        return MissLimitedKeys(JwksKeySource(settings.license_jwks_url))
    return None


class MissLimitedKeys:
    """A key source that asks its inner one about an unknown `kid` at most every `interval` seconds.

    The JWKS client fetches the key set again for every `kid` it does not know (that is how a
    rotated key is picked up). Access tokens come from the internet, so without a limit anyone
    could make every request a fetch from the billing service by inventing kids.
    """

    def __init__(
        self, inner: KeySource, interval: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._interval = interval
        self._clock = clock
        self._known: set[str | None] = set()
        self._last_miss = float("-inf")
        self._lock = threading.Lock()

    def key_for(self, token: str, kid: str | None):
        with self._lock:
            if kid not in self._known and self._clock() - self._last_miss < self._interval:
                raise LicenseError(f"unknown key id {kid!r} (the key set was checked moments ago)")
        try:
            key = self._inner.key_for(token, kid)
        except LicenseError:
            with self._lock:
                self._last_miss = self._clock()
            raise
        with self._lock:
            self._known.add(kid)
        return key


class LicenseMonitor:
    """The current LicenseStatus; re-reads the mounted license file when it changes.

    Kubernetes updates a mounted secret by swapping a symlink, so the file's content is compared
    (at most every `recheck_seconds`) rather than watched. Expiry is re-judged on every call.
    """

    def __init__(
        self,
        read_token: Callable[[], str | None],
        keys: KeySource | None,
        customer_id: str,
        issuer: str,
        *,
        recheck_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._read_token = read_token
        self._keys = keys
        self._customer_id = customer_id
        self._issuer = issuer
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._status: LicenseStatus | None = None
        self._checked = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], datetime] | None = None) -> LicenseMonitor:
        file = settings.license_key_file

        def read_token() -> str | None:
            if file is not None:
                try:
                    return Path(file).read_text()
                except OSError as e:
                    log.warning("license file unreadable", extra={"path": str(file), "error": str(e)})
                    return None
            return settings.license_key

        try:
            keys = key_source(settings)
        except (OSError, ValueError) as e:
            log.error("license public key unusable", extra={"error": str(e)})
            keys = None
        kwargs = {"recheck_seconds": settings.license_recheck_seconds}
        if clock is not None:
            kwargs["clock"] = clock
        return cls(read_token, keys, settings.customer_id, settings.license_issuer, **kwargs)

    def current(self) -> LicenseStatus:
        """The status now (cheap: the token is re-read at most every `recheck_seconds`)."""
        with self._lock:
            now = self._clock()
            if self._status is None or time.monotonic() - self._checked >= self._recheck:
                self._checked = time.monotonic()
                token = self._read_token()
                token = token.strip() if token else token
                if self._status is None or token != self._token:
                    self._token = token
                    self._status = evaluate(token, self._keys, self._customer_id, self._issuer, now)
                    self._log(self._status, now)
            status = self._status
            # An unexpired license can expire between two renewals of the file.
            if status.license is not None:
                state = EXPIRED if status.license.is_expired(now) else VALID
                if state != status.state:
                    status = self._status = LicenseStatus(state, status.license)
                    self._log(status, now)
            return status

    @staticmethod
    def _log(status: LicenseStatus, now: datetime) -> None:
        extra = status.summary(now)
        if status.state == VALID:
            log.info("license loaded", extra={"license": extra})
        else:
            log.error("license not usable for ingestion", extra={"license": extra})
