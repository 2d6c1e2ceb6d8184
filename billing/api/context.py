"""What the blueprints share: the app's Billing context and the caller behind the request."""

from __future__ import annotations

from flask import current_app, request

from billing import services


def billing() -> services.Billing:
    return current_app.extensions["billing"]


def principal(*, allow_license: bool = False) -> services.Principal:
    """The caller of this request (401 without a usable bearer token)."""
    return services.authenticate(billing(), request.headers.get("Authorization"), allow_license=allow_license)
