#!/usr/bin/env bash
# Builds stripe-mock (Stripe's own API mock: the real OpenAPI spec and fixtures, embedded) from its
# Go module into $IOTISTIC_BIN, for the billing tests and the demo. Idempotent: a second run only
# checks the stamp. Nothing is downloaded but the module and its dependencies from the Go proxy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
source "$IOTISTIC_ROOT/toolchain/lib.sh"

STRIPE_MOCK_MODULE=github.com/stripe/stripe-mock
STRIPE_MOCK_VERSION=v0.203.0
command -v go >/dev/null || iotistic_die "Go is not installed: stripe-mock is compiled from its Go module (Go >= 1.26)."
mkdir -p "$IOTISTIC_BIN" "$IOTISTIC_CACHE/logs"
stamp=$(stamp_of <(echo "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION") <(go env GOVERSION))
if up_to_date stripe-mock "$stamp"; then
  iotistic_log "stripe-mock $STRIPE_MOCK_VERSION: up to date"
  exit 0
fi
iotistic_log "building stripe-mock $STRIPE_MOCK_VERSION from $STRIPE_MOCK_MODULE (cold: ~1-2 min)"
run_logged "stripe-mock" "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION" "$IOTISTIC_CACHE/logs/stripe-mock.log" \
  env CGO_ENABLED=0 GOBIN="$IOTISTIC_BIN" go install -trimpath -ldflags "-s -w" "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION"
mark_built stripe-mock "$stamp"
