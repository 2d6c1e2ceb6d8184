"""`python -m licensing keygen|sign|jwks|inspect`: license tooling for local runs and operators.

    python -m licensing keygen keys/                     # keys/license-private.pem + public.pem
    python -m licensing sign --key keys/license-private.pem --kid dev-1 \
        --customer acme --plan starter --days 14 --trial > license.jwt
    python -m licensing jwks --public keys/license-public.pem --kid dev-1
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from licensing.keys import generate_private_key_pem, public_key_pem
from licensing.plans import PLANS
from licensing.tokens import (
    DEFAULT_ISSUER,
    LicenseError,
    PemKeySource,
    public_jwks,
    sign_license,
    verify_license,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m licensing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="write a new RSA key pair into a folder")
    kg.add_argument("folder", type=Path)
    sg = sub.add_parser("sign", help="print a signed license")
    sg.add_argument("--key", type=Path, required=True, help="private key PEM")
    sg.add_argument("--kid", required=True)
    sg.add_argument("--customer", required=True)
    sg.add_argument("--plan", choices=list(PLANS), default="starter")
    sg.add_argument("--days", type=float, default=14)
    sg.add_argument("--trial", action="store_true")
    sg.add_argument("--issuer", default=DEFAULT_ISSUER)
    jw = sub.add_parser("jwks", help="print the JWKS document of a public key")
    jw.add_argument("--public", type=Path, required=True)
    jw.add_argument("--kid", required=True)
    ins = sub.add_parser("inspect", help="verify a license (read from stdin) and print its claims")
    ins.add_argument("--public", type=Path, required=True)
    ins.add_argument("--customer", required=True)
    ins.add_argument("--issuer", default=DEFAULT_ISSUER)
    args = parser.parse_args(argv)

    if args.cmd == "keygen":
        args.folder.mkdir(parents=True, exist_ok=True)
        private = generate_private_key_pem()
        (args.folder / "license-private.pem").write_bytes(private)
        (args.folder / "license-private.pem").chmod(0o600)
        (args.folder / "license-public.pem").write_bytes(public_key_pem(private))
        print(f"wrote {args.folder}/license-private.pem and license-public.pem")
    elif args.cmd == "sign":
        print(
            sign_license(
                args.key.read_bytes(),
                kid=args.kid,
                customer_id=args.customer,
                plan=args.plan,
                expires_at=datetime.now(UTC) + timedelta(days=args.days),
                issuer=args.issuer,
                trial=args.trial,
            )
        )
    elif args.cmd == "jwks":
        print(json.dumps(public_jwks(args.public.read_bytes(), args.kid), indent=2))
    else:
        try:
            lic = verify_license(
                sys.stdin.read(),
                PemKeySource(args.public.read_bytes()),
                customer_id=args.customer,
                issuer=args.issuer,
                allow_expired=True,
            )
        except LicenseError as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        print(json.dumps(lic.summary(datetime.now(UTC)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
