"""Infrastructure as code: the CustomerInstance component and its parts.

The names below are imported on first use (PEP 562), so that reading a module of plain constants
(`components.labels`, `components.stateful`) does not import the whole component and the
Kubernetes SDK: the policy pack does, in a Python process of its own for every preview and update.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.args import CustomerInstanceArgs, Images, Networking, Storage
    from components.customer_instance import CustomerInstance

_WHERE = {
    "CustomerInstance": "components.customer_instance",
    "CustomerInstanceArgs": "components.args",
    "Images": "components.args",
    "Networking": "components.args",
    "Storage": "components.args",
}

__all__ = ["CustomerInstance", "CustomerInstanceArgs", "Images", "Networking", "Storage"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
