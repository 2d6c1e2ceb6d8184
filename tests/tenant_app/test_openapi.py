"""`/api/openapi.json` is generated from the code and describes every route the API serves."""

from __future__ import annotations

import re

from tests.tenant_app.helpers import http


def test_the_openapi_document_is_public_and_covers_every_route(api):
    r = http("GET", api.url + "/api/openapi.json")
    assert r.status == 200
    doc = r.body
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "Iotistic instance API"
    operations = [
        (path, method.upper(), op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]
    documented = {(path, method) for path, method, _ in operations}
    served = set()
    for rule in api.app.url_map.iter_rules():
        if rule.endpoint in ("static", "api-docs.openapi_json"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
    # Sign-in is described, and validation errors are 400 (webargs' 422 is not used).
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "device"}
    codes = {code for _, _, op in operations for code in op["responses"]}
    assert "400" in codes and "422" not in codes
    # Every error is documented as what it is: {"error": "..."}.
    error = doc["components"]["responses"]["DEFAULT_ERROR"]["content"]["application/json"]["schema"]
    assert doc["components"]["schemas"][error["$ref"].rsplit("/", 1)[1]]["required"] == ["error"]
    create = doc["paths"]["/api/devices"]["post"]
    assert "400" in create["responses"] and "422" not in create["responses"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/DeviceCreate")
    body = doc["paths"]["/api/sensor-data"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["oneOf"]) == 2 and "ReadingIn" in doc["components"]["schemas"]
    limit = next(p for p in doc["paths"]["/api/alerts"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000
