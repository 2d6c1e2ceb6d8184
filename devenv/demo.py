"""`python -m devenv.demo`: the customer-facing story, told over HTTP against local services.

A customer signs up at the billing API, watches the instance being provisioned, gets its URL
and license, and upgrades through Stripe Checkout (stripe-mock) and Stripe's webhook (signed here
exactly as Stripe signs it). Each step prints what a user would see. Needs the local cluster
(`python -m devenv cluster start`); starts the billing API and worker itself.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devenv.billing_service import LocalBilling
from devenv.cluster import LocalCluster
from devenv.stripe_mock import signed_event, stripe_event

DATA = Path(os.environ.get("IOTISTIC_DATA", Path(__file__).resolve().parent.parent / ".data"))
DEPLOY_TIMEOUT = 300


def say(text: str) -> None:
    print(f"\033[1m==>\033[0m {text}", flush=True)


def call(
    method: str,
    url: str,
    body: object = None,
    token: str | None = None,
    raw: bytes | None = None,
    headers: dict | None = None,
) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def short(token: str) -> str:
    return f"{token[:24]}…{token[-8:]} ({len(token)} characters)"


def wait_deployed(billing: LocalBilling, cid: str, admin: str, quiet: bool = False) -> dict:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < DEPLOY_TIMEOUT:
        _, status = call("GET", f"{billing.url}/api/customers/{cid}", token=admin)
        current = status.get("deployment_status")
        if current != last and not quiet:
            print(f"    {time.monotonic() - start:5.1f} s  deployment_status = {current}", flush=True)
            last = current
        if current == "deployed":
            return status
        if current == "failed":
            raise SystemExit(f"the deploy failed:\n{status.get('deployment_error')}")
        time.sleep(0.5)
    raise SystemExit(f"not deployed after {DEPLOY_TIMEOUT} s; see {billing.dir}/worker.log")


def secret_license(cluster: LocalCluster, cid: str) -> dict:
    secret = cluster.api().get(f"/api/v1/namespaces/customer-{cid}/secrets/instance-secrets")
    return claims(base64.b64decode(secret["data"]["IOTISTIC_LICENSE_KEY"]).decode())


def offboard_previous(billing: LocalBilling, cluster: LocalCluster, admin: str) -> None:
    """Offboard the customers of earlier demo runs (DELETE /api/customers/{id}), so runs do not pile up."""
    _, listed = call("GET", f"{billing.url}/api/admin/customers?limit=500", token=admin)
    previous = [
        c["id"]
        for c in listed.get("customers", [])
        if c["email"].startswith("demo+") and c["status"] != "deleted"
    ]
    if not previous:
        return
    say(f"offboarding {len(previous)} customer(s) of an earlier demo run (DELETE /api/customers/{{id}})")
    for cid in previous:
        call("DELETE", f"{billing.url}/api/customers/{cid}", token=admin)
    start = time.monotonic()
    while any(cluster.api().get(f"/api/v1/namespaces/customer-{cid}") for cid in previous):
        if time.monotonic() - start > DEPLOY_TIMEOUT:
            raise SystemExit(f"earlier demo instances were not destroyed; see {billing.dir}/worker.log")
        time.sleep(1)
    print(f"    destroyed in {time.monotonic() - start:.1f} s (customers and billing history kept)")


def main() -> int:
    cluster = LocalCluster(DATA / "cluster")
    if not cluster.running():
        print("error: the local cluster is not running: python -m devenv cluster start", file=sys.stderr)
        return 1
    billing = LocalBilling(DATA)
    say(f"billing API and worker (python -m devenv billing start): {billing.url}")
    billing.start()
    admin = billing.admin_token
    offboard_previous(billing, cluster, admin)

    email = f"demo+{int(time.time())}@iotistic.example"
    say(f"POST /api/customers/signup  {{email: {email}, company_name: Demo GmbH}}")
    started = time.monotonic()
    status, body = call(
        "POST",
        f"{billing.url}/api/customers/signup",
        {"email": email, "password": "demo-password-1", "company_name": "Demo GmbH"},
    )
    if status != 201:
        raise SystemExit(f"signup answered {status}: {body}")
    cid = body["customer_id"]
    print(f"    {status} in {time.monotonic() - started:.2f} s: customer_id {cid}")
    print(f"    instance_url      {body['instance_url']}")
    print(f"    deployment_status {body['deployment_status']}")
    print(f"    license           {short(body['license'])}")

    say("the worker provisions the customer's stack (Pulumi Automation API, local control plane)")
    done = wait_deployed(billing, cid, admin)
    print(f"    deployed_at {done['deployed_at']}")
    ns = f"customer-{cid}"
    deployments = cluster.api().get(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"]
    ready = ", ".join(f"{d['metadata']['name']} {d['status'].get('readyReplicas', 0)}/1" for d in deployments)
    print(f"    namespace {ns}: {ready}, postgres (StatefulSet)")
    lic = secret_license(cluster, cid)
    print(
        f"    license in the tenant Secret: plan {lic['plan']}, trial {lic['trial']}, "
        f"expires {time.strftime('%Y-%m-%d', time.gmtime(lic['exp']))}"
    )

    say("upgrade: sign in, then POST /api/subscriptions/create-checkout-session {plan: professional}")
    _, login = call(
        "POST", f"{billing.url}/api/customers/login", {"email": email, "password": "demo-password-1"}
    )
    status, checkout = call(
        "POST",
        f"{billing.url}/api/subscriptions/create-checkout-session",
        {"plan": "professional"},
        token=login["access_token"],
    )
    if status != 200:
        raise SystemExit(f"checkout answered {status}: {checkout}")
    print(f"    {status}: checkoutUrl {checkout['checkoutUrl']} (stripe-mock)")

    say("Stripe → POST /api/webhooks/stripe  checkout.session.completed (signed as Stripe signs it)")
    stripe_customer = _stripe_customer(billing, cid)
    event = stripe_event(
        "checkout.session.completed",
        {
            "customer": stripe_customer,
            "subscription": "sub_demo",
            "client_reference_id": cid,
            "metadata": {"customer_id": cid, "plan": "professional"},
            "mode": "subscription",
        },
    )
    raw, signature = signed_event(event, billing.webhook_secret)
    status, answer = call(
        "POST", f"{billing.url}/api/webhooks/stripe", raw=raw, headers={"Stripe-Signature": signature}
    )
    print(f"    {status}: {answer}")
    say("the new license reaches the tenant Secret (a queued deploy; the API hot-reloads it)")
    start = time.monotonic()
    while secret_license(cluster, cid)["plan"] != "professional":
        if time.monotonic() - start > DEPLOY_TIMEOUT:
            raise SystemExit(f"the license did not change; see {billing.dir}/worker.log")
        time.sleep(0.5)
    lic = secret_license(cluster, cid)
    expires = time.strftime("%Y-%m-%d", time.gmtime(lic["exp"]))
    print(
        f"    after {time.monotonic() - start:.1f} s: plan {lic['plan']}, trial {lic['trial']}, "
        f"maxDevices {lic['limits']['maxDevices']}, expires {expires}"
    )
    customer = wait_deployed(billing, cid, admin, quiet=True)
    print(
        f"    GET /api/customers/{cid}: plan {customer['plan']}, subscription "
        f"{customer['subscription']['status']}, deployment_status {customer['deployment_status']}"
    )
    say(f"done. Billing keeps running ({billing.url}); stop it with: python -m devenv billing stop")
    return 0


def _stripe_customer(billing: LocalBilling, cid: str) -> str:
    """The Stripe customer the checkout created (from the billing database)."""
    import psycopg

    with psycopg.connect(billing.postgres.url("billing")) as conn:
        return conn.execute("SELECT stripe_customer_id FROM customers WHERE id = %s", (cid,)).fetchone()[0]


if __name__ == "__main__":
    sys.exit(main())
