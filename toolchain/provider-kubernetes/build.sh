#!/usr/bin/env bash
# Build the Pulumi kubernetes resource provider plugin (pulumi-resource-kubernetes)
# from the Go module proxy, inside this directory's module context
# (iotistic.local/toolchain/provider-kubernetes, locked by go.mod + go.sum).
#
# Usage:  build.sh OUTDIR [VERSION]
#   OUTDIR   directory that receives the binary OUTDIR/pulumi-resource-kubernetes
#            (created if missing). A stamp file, a lock file and the work dir
#            (OUTDIR/.work/provider-kubernetes, override with PK_WORKDIR) live there too.
#   VERSION  plugin version baked in with -ldflags -X and into the embedded schema
#            (default: the DEFAULT_VERSION below; a leading "v" is stripped).
#            Must equal the version in the PyPI pulumi-kubernetes wheel's
#            pulumi_kubernetes/pulumi-plugin.json.
# Environment (required): GOMODCACHE, GOCACHE.
# Environment (optional): PK_WORKDIR, PK_FORCE=1 (rebuild even if up to date).
#
# Idempotent: skips the build when OUTDIR/pulumi-resource-kubernetes exists, its stamp
# matches (version, provider module version, go.mod/go.sum hash, go version, binary
# sha256), and `go version -m` shows the expected -X version ldflag.
# The module files are used read-only (-mod=readonly): a drift in go.mod/go.sum is an
# error, not a silent re-resolution. To move to another provider commit see README.md.
set -euo pipefail

DEFAULT_VERSION=4.25.0
PROVIDER_MOD=github.com/pulumi/pulumi-kubernetes/provider/v4
MAIN_SUBDIR=cmd/pulumi-resource-kubernetes
VERSION_VAR=${PROVIDER_MOD}/pkg/version.Version
BIN_NAME=pulumi-resource-kubernetes
TAG="[provider-kubernetes]"

log() { printf '%s %s\n' "$TAG" "$*"; }
die() { printf '%s ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 OUTDIR [VERSION]"
: "${GOMODCACHE:?GOMODCACHE must be exported}"
: "${GOCACHE:?GOCACHE must be exported}"
command -v go >/dev/null || die "go not found on PATH"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTDIR="$1"
VERSION="${2:-$DEFAULT_VERSION}"
VERSION="${VERSION#v}"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] || die "not a semver version: $VERSION"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
BIN="$OUTDIR/$BIN_NAME"
STAMP="$OUTDIR/.$BIN_NAME.stamp"
WORK="${PK_WORKDIR:-$OUTDIR/.work/provider-kubernetes}"

case "$WORK/" in
  "$HERE"/*) die "work dir $WORK must not be inside $HERE" ;;
esac

# Hermetic-ish Go settings: no toolchain download, locked module graph, no VCS stamping.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOMODCACHE GOCACHE

# One build at a time per OUTDIR.
exec 9>"$OUTDIR/.$BIN_NAME.lock"
flock 9

PROVIDER_VER="$(awk -v m="$PROVIDER_MOD" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$HERE/go.mod")"
[[ -n "$PROVIDER_VER" ]] || die "$PROVIDER_MOD not required in $HERE/go.mod"
LOCK_SUM="$(cat "$HERE/go.mod" "$HERE/go.sum" | sha256sum | cut -d' ' -f1)"
GO_VER="$(go env GOVERSION)"
# -s -w: drop the symbol table and DWARF (binary 422 MB -> 292 MB); build info is kept.
LDFLAGS="-s -w -X ${VERSION_VAR}=${VERSION}"

expected_stamp() {
  printf 'version=%s\nprovider=%s@%s\nlock=%s\ngo=%s\nldflags=%s\nbinary_sha256=%s\n' \
    "$VERSION" "$PROVIDER_MOD" "$PROVIDER_VER" "$LOCK_SUM" "$GO_VER" "$LDFLAGS" "$1"
}

# The -X ldflag is visible in the build info (that is why -trimpath is not used: with
# -trimpath Go drops -ldflags from the build info); the embedded schema carries it too.
binary_has_version() {
  go version -m "$1" 2>/dev/null | grep -qF -- "-X ${VERSION_VAR}=${VERSION}\"" &&
    grep -aqF "{\"name\":\"kubernetes\",\"displayName\":\"Kubernetes\",\"version\":\"${VERSION}\"" "$1"
}

# Name the module behind a failed go command, from its log: the first "# pkg" header the
# compiler printed (mapped to module@version), else a package with a missing go.sum
# entry, else the first module@version mentioned, else the provider module itself.
failing_module() {
  local log_file="$1" pkg mod=""
  pkg="$(sed -n 's/^# \([^ ]*\).*/\1/p' "$log_file" | head -n1)"
  if [[ -n "$pkg" ]]; then
    mod="$(cd "$WORK" && go list -f '{{with .Module}}{{.Path}}@{{.Version}}{{with .Replace}} => {{.Path}}{{with .Version}}@{{.}}{{end}}{{end}}{{end}}' "$pkg" 2>/dev/null || true)"
    [[ -n "$mod" ]] || mod="$pkg"
  fi
  if [[ -z "$mod" ]] && grep -q 'updates to go.mod needed' "$log_file"; then
    mod="$HERE/go.mod is out of date for its requirements (re-lock, see README.md)"
  fi
  if [[ -z "$mod" ]]; then
    pkg="$(sed -n 's/.*missing go.sum entry for module providing package \([^ ;]*\).*/\1/p' "$log_file" | head -n1)"
    [[ -z "$pkg" ]] || mod="module providing $pkg (missing go.sum entry)"
  fi
  [[ -n "$mod" ]] || mod="$(grep -o -- "$GOMODCACHE/[^ :]*@v[^/ :]*" "$log_file" | head -n1 | sed "s|^$GOMODCACHE/||" || true)"
  [[ -n "$mod" ]] || mod="$(grep -oE '(^|[ \t])[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*@v[0-9][^/ :]*' "$log_file" | head -n1 | tr -d ' \t' || true)"
  [[ -n "$mod" ]] || mod="$PROVIDER_MOD@$PROVIDER_VER"
  printf '%s\n' "$mod"
}

if [[ "${PK_FORCE:-0}" != 1 && -x "$BIN" && -f "$STAMP" ]]; then
  have_sha="$(sha256sum "$BIN" | cut -d' ' -f1)"
  if [[ "$(cat "$STAMP")" == "$(expected_stamp "$have_sha")" ]] && binary_has_version "$BIN"; then
    log "up to date: $BIN (version $VERSION, $PROVIDER_MOD@$PROVIDER_VER)"
    exit 0
  fi
  log "existing $BIN is stale or from another recipe; rebuilding"
fi

start=$SECONDS
log "building $BIN_NAME $VERSION from $PROVIDER_MOD@$PROVIDER_VER with $GO_VER"
log "work dir: $WORK"
rm -rf "$WORK"
mkdir -p "$WORK/cmd"
cp "$HERE/go.mod" "$HERE/go.sum" "$WORK/"

cd "$WORK"
log "downloading modules (GOMODCACHE=$GOMODCACHE)"
if ! go mod download "$PROVIDER_MOD" >"$WORK/download.log" 2>&1; then
  tail -n 30 "$WORK/download.log" >&2
  die "go mod download $PROVIDER_MOD@$PROVIDER_VER failed"
fi
MODDIR="$(go list -m -f '{{.Dir}}' "$PROVIDER_MOD")"
[[ -d "$MODDIR/$MAIN_SUBDIR" ]] || die "main package not found at $MODDIR/$MAIN_SUBDIR"

log "copying $MAIN_SUBDIR out of the module cache"
cp -R "$MODDIR/$MAIN_SUBDIR" "$WORK/cmd/"
chmod -R u+w "$WORK/cmd"
PKGDIR="$WORK/cmd/$(basename "$MAIN_SUBDIR")"

log "generating schema-embed.json and terraform-mapping-embed.json (VERSION=$VERSION)"
if ! (cd "$PKGDIR" && VERSION="$VERSION" go generate ./) >"$WORK/generate.log" 2>&1; then
  printf '%s go generate FAILED; failing module: %s\n' "$TAG" "$(failing_module "$WORK/generate.log")" >&2
  printf '%s last 30 lines of %s:\n' "$TAG" "$WORK/generate.log" >&2
  tail -n 30 "$WORK/generate.log" >&2
  exit 1
fi
for f in schema-embed.json terraform-mapping-embed.json; do
  [[ -s "$PKGDIR/$f" ]] || die "generation did not produce $f"
done
got_ver="$(jq -r .version "$PKGDIR/schema-embed.json")"
[[ "$got_ver" == "$VERSION" ]] || die "schema-embed.json has version '$got_ver', expected '$VERSION'"

log "go build (this takes a while on a cold cache)"
TMP_BIN="$OUTDIR/.$BIN_NAME.tmp.$$"
trap 'rm -f "$TMP_BIN"' EXIT
if ! go build -ldflags "$LDFLAGS" -o "$TMP_BIN" \
      "./cmd/$(basename "$MAIN_SUBDIR")" >"$WORK/build.log" 2>&1; then
  printf '%s go build FAILED; failing module: %s\n' "$TAG" "$(failing_module "$WORK/build.log")" >&2
  printf '%s last 30 lines of %s:\n' "$TAG" "$WORK/build.log" >&2
  tail -n 30 "$WORK/build.log" >&2
  exit 1
fi

binary_has_version "$TMP_BIN" || die "built binary does not carry -X ${VERSION_VAR}=${VERSION}"
mv -f "$TMP_BIN" "$BIN"
trap - EXIT
expected_stamp "$(sha256sum "$BIN" | cut -d' ' -f1)" >"$STAMP"
log "built $BIN ($(du -h "$BIN" | cut -f1)) in $((SECONDS - start))s"
