# shellcheck shell=bash
# Environment shared by every Iotistic script: where the engine, caches and local data live.
# Source it; it changes nothing outside this shell and the project's own folders.

IOTISTIC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One folder holds Go caches, built binaries and the Pulumi home. CI points it outside the clone
# so a fresh checkout reuses the builds of the previous run.
export IOTISTIC_CACHE="${IOTISTIC_CACHE:-$IOTISTIC_ROOT/.cache}"
export IOTISTIC_BIN="$IOTISTIC_CACHE/bin"
export IOTISTIC_DATA="${IOTISTIC_DATA:-$IOTISTIC_ROOT/.data}"
export IOTISTIC_VENV="${IOTISTIC_VENV:-$IOTISTIC_ROOT/.venv}"

# Go builds stay inside the cache folder, never in ~/go.
export GOMODCACHE="$IOTISTIC_CACHE/go/mod"
export GOCACHE="$IOTISTIC_CACHE/go/build"
export GOFLAGS="-mod=mod"
export GOTOOLCHAIN=local

# Pulumi: project-local home, never download anything, never phone home.
export PULUMI_HOME="$IOTISTIC_CACHE/pulumi-home"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
# Only the plugins registered in PULUMI_HOME at exact versions; our bin folder on PATH must not shadow them.
export PULUMI_IGNORE_AMBIENT_PLUGINS=true
export PATH="$IOTISTIC_BIN:$IOTISTIC_VENV/bin:$PATH"
# The state backend and stack secrets every path shares (reconcile, the signup worker, the preview
# command and `pulumi stack ls|preview|up|refresh -s <stack>` run from the project root):
# IOTISTIC_BACKEND_URL (e.g. s3://...) or the file backend in the data folder, and the passphrase
# in PULUMI_CONFIG_PASSPHRASE or a file generated once in the data folder.
export PULUMI_BACKEND_URL="${IOTISTIC_BACKEND_URL:-file://$IOTISTIC_DATA/pulumi-state}"
if [[ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ]]; then
  export PULUMI_CONFIG_PASSPHRASE_FILE="${PULUMI_CONFIG_PASSPHRASE_FILE:-$IOTISTIC_DATA/passphrase}"
  if [[ ! -s "$PULUMI_CONFIG_PASSPHRASE_FILE" ]]; then
    mkdir -p "$(dirname "$PULUMI_CONFIG_PASSPHRASE_FILE")"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$PULUMI_CONFIG_PASSPHRASE_FILE")
  fi
fi
[[ "$PULUMI_BACKEND_URL" != file://* ]] || mkdir -p "${PULUMI_BACKEND_URL#file://}"
export PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true

# Pinned versions: the CLI matches PyPI `pulumi`, each plugin matches the version its Python SDK requests.
export PULUMI_VERSION=3.259.0
export PULUMI_KUBERNETES_VERSION=4.25.0
export PULUMI_RANDOM_VERSION=4.21.1

# `pulumi preview` and `pulumi up` typed in this shell run under the project's policy pack
# (policy/), as reconcile, the signup worker and the preview command do: no path skips the rules.
pulumi() {
  case "${1:-}" in
    preview | up | update) command pulumi "$1" --policy-pack "$IOTISTIC_ROOT/policy" "${@:2}" ;;
    *) command pulumi "$@" ;;
  esac
}

iotistic_log() { printf '\033[1m[iotistic]\033[0m %s\n' "$*" >&2; }
iotistic_die() { printf '\033[31m[iotistic] error:\033[0m %s\n' "$*" >&2; exit 1; }
