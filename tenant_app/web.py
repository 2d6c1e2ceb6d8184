"""What the tenant's Flask apps share: JSON that is strict on the way in and valid on the way out."""

from __future__ import annotations

from flask.json.provider import DefaultJSONProvider

from tenant_app import jsonsafe


class JsonProvider(DefaultJSONProvider):
    """Request bodies through `jsonsafe.loads` (NaN, NUL, surrogates, huge numbers, deep nesting
    refused with a ValueError, so `get_json(silent=True)` answers None instead of crashing);
    answers always valid JSON: ISO 8601 datetimes, null where a stored float is not finite."""

    @staticmethod
    def default(o):
        if hasattr(o, "isoformat"):
            return o.isoformat()
        return DefaultJSONProvider.default(o)

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(jsonsafe.sanitize(obj), **kwargs)

    def loads(self, s, **kwargs):
        return jsonsafe.loads(s)
