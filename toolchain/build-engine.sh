#!/usr/bin/env bash
# Builds the Pulumi engine from pinned Go modules into $IOTISTIC_BIN and registers the plugins in
# the project's PULUMI_HOME: the `pulumi` CLI, our Python language host (+ the upstream exec
# script beside it), and the kubernetes and random resource plugins. Idempotent: a second run
# only checks stamps. Nothing is ever downloaded but Go modules from the module proxy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
source "$IOTISTIC_ROOT/toolchain/lib.sh"

command -v go >/dev/null || iotistic_die "Go is not installed: the engine is compiled from Go modules (Go >= 1.25 needed; this machine kind ships Go 1.26 at /usr/local/go)."
mkdir -p "$IOTISTIC_BIN" "$PULUMI_HOME" "$IOTISTIC_CACHE/logs"
engine_mod="$IOTISTIC_ROOT/toolchain/engine"
ldflags_cli="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION"
total_start=$SECONDS

# A user who installed the right pulumi keeps using it (its own language host sits beside it).
user_pulumi=$(PATH="${PATH#"$IOTISTIC_BIN:"}" command -v pulumi || true)
if [[ -n "$user_pulumi" && "$("$user_pulumi" version 2>/dev/null)" == "v$PULUMI_VERSION" && ! -x "$IOTISTIC_BIN/pulumi" ]]; then
  iotistic_log "using the pulumi v$PULUMI_VERSION already installed at $user_pulumi"
  pulumi_bin=$user_pulumi
else
  pulumi_bin="$IOTISTIC_BIN/pulumi"
  stamp=$(stamp_of "$engine_mod/go.mod" "$engine_mod/go.sum" <(echo "$ldflags_cli"))
  if up_to_date pulumi "$stamp"; then
    iotistic_log "pulumi CLI v$PULUMI_VERSION: up to date"
  else
    iotistic_log "building the pulumi CLI v$PULUMI_VERSION from github.com/pulumi/pulumi/pkg/v3 (cold: ~3-10 min)"
    run_logged "pulumi CLI" "github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION" "$IOTISTIC_CACHE/logs/pulumi.log" \
      go -C "$engine_mod" build -ldflags "$ldflags_cli" -o "$IOTISTIC_BIN/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    mark_built pulumi "$stamp"
  fi

  stamp=$(stamp_of "$engine_mod/go.mod" "$engine_mod/go.sum" "$engine_mod"/cmd/pulumi-language-python/*.go <(echo "$ldflags_cli"))
  if up_to_date pulumi-language-python "$stamp"; then
    iotistic_log "pulumi-language-python: up to date"
  else
    iotistic_log "building pulumi-language-python (toolchain/engine/cmd/pulumi-language-python)"
    run_logged "pulumi-language-python" "iotistic.local/toolchain/engine" "$IOTISTIC_CACHE/logs/pulumi-language-python.log" \
      go -C "$engine_mod" build -ldflags "$ldflags_cli" -o "$IOTISTIC_BIN/pulumi-language-python" ./cmd/pulumi-language-python
    # The host runs programs through upstream's exec script, which it looks for beside itself.
    sdk_dir=$(go -C "$engine_mod" list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
    install -m 755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$IOTISTIC_BIN/pulumi-language-python-exec"
    mark_built pulumi-language-python "$stamp"
  fi
fi

"$IOTISTIC_ROOT/toolchain/provider-kubernetes/build.sh" "$IOTISTIC_BIN" "$PULUMI_KUBERNETES_VERSION"
"$IOTISTIC_ROOT/toolchain/provider-random/build.sh" "$IOTISTIC_BIN" "$PULUMI_RANDOM_VERSION"

# Register each plugin binary in PULUMI_HOME at exactly the version its Python SDK requests.
register_plugin() {
  local name=$1 version=$2 binary="$IOTISTIC_BIN/pulumi-resource-$1"
  local want
  want=$(stamp_of "$binary")
  if [[ "$(cat "$PULUMI_HOME/.$name-$version.registered" 2>/dev/null)" == "$want" ]] &&
     [[ -x "$PULUMI_HOME/plugins/resource-$name-v$version/pulumi-resource-$name" ]]; then
    iotistic_log "plugin $name v$version: registered"
    return
  fi
  iotistic_log "registering plugin $name v$version in $PULUMI_HOME"
  "$pulumi_bin" plugin install resource "$name" "$version" --file "$binary" --reinstall >/dev/null
  echo "$want" >"$PULUMI_HOME/.$name-$version.registered"
}
register_plugin kubernetes "$PULUMI_KUBERNETES_VERSION"
register_plugin random "$PULUMI_RANDOM_VERSION"

iotistic_log "engine ready in $((SECONDS - total_start)) s: $("$pulumi_bin" version) ($pulumi_bin)"
