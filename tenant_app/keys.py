"""`python -m tenant_app.keys create|list|revoke`: instance API keys from the command line.

    export IOTISTIC_API_KEY=$(python -m tenant_app.keys create --name simulator --role admin)
    python -m tenant_app.keys list
    python -m tenant_app.keys revoke 3

For operators with database access (CUSTOMER_ID and DATABASE_URL), e.g. to mint the first key of
an instance; everyone else manages keys through `/api/keys` with an admin credential. `create`
prints only the key (shown once), so it can be captured by a shell.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from tenant_app import services
from tenant_app.config import ConfigError, Settings
from tenant_app.db import open_pool
from tenant_app.errors import DomainError
from tenant_app.license_state import LicenseStatus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tenant_app.keys", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--name", required=True, help="what the key is for, e.g. the script's name")
    create.add_argument("--role", choices=["admin", "read"], default="read")
    sub.add_parser("list", help="list keys (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pool = open_pool(settings.database_url, max_size=1, name="keys")
    inst = services.Instance(
        customer_id=settings.customer_id,
        connect=pool.connection,
        license=lambda: LicenseStatus("missing"),  # key management is not license-gated
        clock=lambda: datetime.now(UTC),
        broker=services.BrokerAddress(settings.mqtt_public_host, settings.mqtt_public_port),
    )
    try:
        if args.cmd == "create":
            key, secret = services.create_api_key(inst, args.name, args.role)
            print(
                f"created API key {key['id']} ({key['name']}, {key['role']}); it is shown once:",
                file=sys.stderr,
            )
            print(secret)
        elif args.cmd == "list":
            for key in services.list_api_keys(inst):
                state = f"revoked {key['revoked_at']:%Y-%m-%d %H:%M}" if key["revoked_at"] else "active"
                print(f"{key['id']:>5}  {key['role']:<6} {state:<24} {key['name']}")
        else:
            key = services.revoke_api_key(inst, args.id)
            print(f"revoked API key {key['id']} ({key['name']})")
    except DomainError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    finally:
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
