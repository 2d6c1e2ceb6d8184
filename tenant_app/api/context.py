"""What the blueprints share: the app's services and the use cases' `Instance`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

from tenant_app.services import Instance

if TYPE_CHECKING:
    from tenant_app.api import ApiServices


def services() -> ApiServices:
    return current_app.extensions["iotistic"]


def instance() -> Instance:
    return services().instance
