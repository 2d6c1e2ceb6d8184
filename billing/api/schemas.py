"""The shapes of billing's requests and answers: what the OpenAPI document publishes.

Schemas check types and presence only; the rules (email format, password length, plans) are the
domain's (billing/domain.py), so they hold for every caller, not just HTTP.
"""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate


class AsciiInteger(fields.Integer):
    """An integer written with ASCII digits only (Python's int() also takes '٣' or '３')."""

    def _validated(self, value):
        if isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit()):
            raise ValidationError("must be an integer written with the digits 0-9")
        return super()._validated(value)


class Error(Schema):
    error = fields.String(required=True, metadata={"description": "what is wrong, in words"})
    field = fields.String(metadata={"description": "the request field at fault, when there is one"})


class SignupIn(Schema):
    email = fields.String(required=True, metadata={"example": "ops@acme.example"})
    password = fields.String(
        required=True, load_only=True, metadata={"description": "8+ characters, at most 72 bytes"}
    )
    company_name = fields.String(required=True, metadata={"example": "ACME Corp"})


class SignupOut(Schema):
    customer_id = fields.String(required=True)
    license = fields.String(required=True, metadata={"description": "RS256 JWT (see licensing/)"})
    instance_url = fields.String(required=True)
    deployment_status = fields.String(required=True, metadata={"example": "provisioning"})


class LoginIn(Schema):
    email = fields.String(required=True)
    password = fields.String(required=True, load_only=True)


class LoginOut(Schema):
    access_token = fields.String(
        required=True, metadata={"description": "RS256 JWT, typ at+jwt, audience = customer id"}
    )
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True)
    customer_id = fields.String(required=True)
    instance_url = fields.String(required=True)


class SubscriptionOut(Schema):
    plan = fields.String()
    status = fields.String(metadata={"description": "trialing | active | past_due | canceled"})
    trial_ends_at = fields.DateTime(allow_none=True)
    current_period_end = fields.DateTime(allow_none=True)
    grace_until = fields.DateTime(allow_none=True)


class CustomerOut(Schema):
    customer_id = fields.String(required=True)
    email = fields.String()
    company_name = fields.String()
    status = fields.String(metadata={"description": "active | suspended | deleted"})
    deployment_status = fields.String(
        metadata={"description": "provisioning | deploying | deployed | failed | destroying | destroyed"}
    )
    deployed_at = fields.DateTime(allow_none=True)
    deployment_error = fields.String(allow_none=True)
    plan = fields.String(allow_none=True)
    subscription = fields.Nested(SubscriptionOut, allow_none=True)
    license_expires_at = fields.DateTime(allow_none=True)
    instance_url = fields.String()


class CustomerRow(Schema):
    id = fields.String()
    email = fields.String()
    company_name = fields.String()
    status = fields.String()
    deployment_status = fields.String()
    deployed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    plan = fields.String(allow_none=True)
    subscription_status = fields.String(allow_none=True)


class CustomerList(Schema):
    customers = fields.List(fields.Nested(CustomerRow))
    total = fields.Integer()


class Page(Schema):
    limit = AsciiInteger(load_default=50, validate=validate.Range(1, 500))
    offset = AsciiInteger(load_default=0, validate=validate.Range(0, 10_000_000))


class DeployOut(Schema):
    customer_id = fields.String()
    status = fields.String()
    deployment_status = fields.String()


class CheckoutIn(Schema):
    plan = fields.String(
        metadata={"description": "starter | professional | enterprise (default professional)"}
    )
    customer_id = fields.String(
        metadata={"description": "only with the admin token; else the token's customer"}
    )
    success_url = fields.String()
    cancel_url = fields.String()


class CheckoutOut(Schema):
    checkoutUrl = fields.String(required=True)  # noqa: N815 (the seed's field name)
    sessionId = fields.String(required=True)  # noqa: N815


class StripeHeaders(Schema):
    stripe_signature = fields.String(
        required=True, data_key="Stripe-Signature", metadata={"description": "t=<unix>,v1=<hex HMAC-SHA256>"}
    )


class WebhookOut(Schema):
    received = fields.Boolean()
    duplicate = fields.Boolean()


class Jwks(Schema):
    keys = fields.List(fields.Dict(), required=True)


class Health(Schema):
    status = fields.String()
    database = fields.String()
