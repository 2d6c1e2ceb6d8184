"""Schemathesis fuzzes every operation of the generated OpenAPI document: no input gives a 5xx.

Valid and invalid inputs are both generated for each operation, and each case is sent twice,
anonymously and with the admin token, so the operations behind authentication are fuzzed too.
(Driven through hypothesis directly: schemathesis' pytest plugin does not support pytest 9.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from billing.api import create_app
from tests.billing.conftest import ADMIN

EXAMPLES = 30


def fuzz(operation, mode: schemathesis.GenerationMode) -> bool:
    """Fuzz one operation; False when it has no input to break (e.g. negative cases of GET /health)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:
        case.call_and_validate(checks=[not_a_server_error])
        case.call_and_validate(headers=ADMIN, checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        if mode is schemathesis.GenerationMode.POSITIVE:
            raise
        return False
    return True


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_input_makes_the_billing_api_fail(billing, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(billing))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    fuzzed = [operation.label for operation in operations if fuzz(operation, mode)]
    # Everything that takes input is fuzzed with invalid input too.
    assert len(fuzzed) >= 7, fuzzed
