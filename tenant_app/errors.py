"""Domain errors raised by the use cases (`tenant_app.services`); the HTTP layer maps each to a status.

They say what went wrong in words a customer can act on, and never carry a credential.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a use case raises on purpose; `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError, ValueError):
    """The request or message itself is malformed or out of range (HTTP 400, MQTT dead letter)."""


class Unauthenticated(DomainError):
    """No credential, or one that is not valid for this instance (HTTP 401)."""


class Forbidden(DomainError):
    """A valid credential whose role does not allow the action (HTTP 403)."""


class NotFound(DomainError):
    """The device, rule or key does not exist (HTTP 404)."""


class Conflict(DomainError):
    """The thing already exists (HTTP 409)."""


class UnknownDevices(DomainError):
    """Readings for devices that are not registered (HTTP 422)."""


class BrokerFailed(DomainError):
    """The MQTT broker refused or did not answer an account change (HTTP 502)."""


class Unavailable(DomainError):
    """A feature this instance is not configured for (HTTP 503)."""
