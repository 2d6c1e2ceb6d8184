#!/usr/bin/env bash
# Build the Pulumi "random" resource provider plugin from Go modules.
#
#   usage: build.sh OUTDIR VERSION        e.g. build.sh /work/main/.cache/bin 4.21.1
#
# Env (exported by the caller): GOMODCACHE, GOCACHE (required); GOFLAGS (e.g. -mod=mod) is
# passed through. Optional: PROVIDER_RANDOM_WORKDIR (default: OUTDIR/../work/provider-random).
#
# Steps: build pulumi-tfgen-random, generate schema.json + bridge-metadata.json in the work
# dir, copy them next to the provider main (gitignored, embedded), build
# OUTDIR/pulumi-resource-random with the version set. A stamp file
# (OUTDIR/.pulumi-resource-random.stamp: version + hash of this recipe's sources) makes a
# repeated run with the same version a no-op.
set -euo pipefail

log() { echo "[provider-random] $*"; }
die() { echo "[provider-random] ERROR: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 OUTDIR VERSION"
: "${GOMODCACHE:?GOMODCACHE must be exported}"
: "${GOCACHE:?GOCACHE must be exported}"
export GOMODCACHE GOCACHE

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
OUTDIR="$(cd "$1" && pwd)"
VERSION="${2#v}"                       # plugin reports "4.21.1"; accept "v4.21.1" too
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$ ]] || die "version '$2' is not semver"
WORKDIR="${PROVIDER_RANDOM_WORKDIR:-$(dirname "$OUTDIR")/work/provider-random}"
BIN="$OUTDIR/pulumi-resource-random"
STAMP="$OUTDIR/.pulumi-resource-random.stamp"
CMD_DIR="$HERE/cmd/pulumi-resource-random"
LDFLAGS="-s -w -X iotistic.local/toolchain/provider-random/version.Version=$VERSION"

command -v go >/dev/null || die "go not found on PATH"

# Everything that determines the binary besides the module cache contents (pinned by go.sum).
inputs_hash() {
  (cd "$HERE" && find . -path ./cmd/pulumi-resource-random/schema-embed.json -prune -o \
      -path ./cmd/pulumi-resource-random/bridge-metadata.json -prune -o \
      -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name 'build.sh' \) -print \
    | LC_ALL=C sort | xargs sha256sum; go version) | sha256sum | cut -d' ' -f1
}
WANT="version=$VERSION inputs=$(inputs_hash)"

if [[ -x $BIN && -f $STAMP && "$(cat "$STAMP")" == "$WANT" ]] \
   && [[ "$("$BIN" -version 2>/dev/null || true)" == "$VERSION" ]]; then
  log "up to date: $BIN ($VERSION)"
  exit 0
fi

# go_build PKG OUTPUT: build a main package; on failure name the module(s) and show the tail.
go_build() {
  local pkg="$1" out="$2" logf="$WORKDIR/go-build-$(basename "$1").log" start=$SECONDS
  log "go build $pkg -> $out (may take several minutes)"
  if ! (cd "$HERE" && go build -trimpath -ldflags "$LDFLAGS" -o "$out" "$pkg") >"$logf" 2>&1; then
    echo "[provider-random] FAILED: go build $pkg (main module iotistic.local/toolchain/provider-random)" >&2
    local pkgs mods
    # "# import/path" headers name the packages that failed to compile; paths in the
    # module cache name the module@version they belong to.
    pkgs="$(sed -n 's/^# //p' "$logf" | sort -u | tr '\n' ' ')"
    mods="$(sed "s|$GOMODCACHE/||g" "$logf" | grep -oE '[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)+@v[0-9][^/ :]*' \
            | sort -u | tr '\n' ' ' || true)"
    [[ -n $pkgs ]] && echo "[provider-random] failing package(s): $pkgs" >&2
    [[ -n $mods ]] && echo "[provider-random] failing module(s): $mods" >&2
    echo "[provider-random] last 30 lines of $logf:" >&2
    tail -n 30 "$logf" >&2
    exit 1
  fi
  log "built $(basename "$out") in $((SECONDS - start))s"
}

mkdir -p "$WORKDIR"
log "version $VERSION; work dir $WORKDIR; output $BIN"

# 1. tfgen
go_build ./cmd/pulumi-tfgen-random "$WORKDIR/pulumi-tfgen-random"

# 2. schema + bridge metadata (docs from the terraform-provider-random module source)
UPSTREAM_DIR="$(cd "$HERE" && go list -m -f '{{.Dir}}' github.com/terraform-providers/terraform-provider-random)"
[[ -d $UPSTREAM_DIR ]] || die "terraform-provider-random module source not found"
rm -rf "$WORKDIR/schema"; mkdir -p "$WORKDIR/schema"
log "generating schema into $WORKDIR/schema"
if ! (cd "$WORKDIR" && RANDOM_UPSTREAM_REPO_PATH="$UPSTREAM_DIR" \
      ./pulumi-tfgen-random schema --skip-examples --out "$WORKDIR/schema") >"$WORKDIR/tfgen.log" 2>&1; then
  echo "[provider-random] FAILED: pulumi-tfgen-random schema; last 30 lines:" >&2
  tail -n 30 "$WORKDIR/tfgen.log" >&2
  exit 1
fi
for f in schema.json bridge-metadata.json; do
  [[ -s $WORKDIR/schema/$f ]] || die "tfgen did not write $f (see $WORKDIR/tfgen.log)"
done
grep -q '"random:index/randomPassword:RandomPassword"' "$WORKDIR/schema/schema.json" \
  || die "schema lacks random:index/randomPassword:RandomPassword"

# 3. embed (gitignored copies next to the provider main; only rewritten when changed).
#    The plugin sets the schema's "version" to its own version at start-up.
for pair in schema.json:schema-embed.json bridge-metadata.json:bridge-metadata.json; do
  src="$WORKDIR/schema/${pair%%:*}" dst="$CMD_DIR/${pair##*:}"
  cmp -s "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
done

# 4. provider plugin (built to a temp name, then moved into place)
go_build ./cmd/pulumi-resource-random "$BIN.tmp"
got="$("$BIN.tmp" -version 2>/dev/null || true)"
[[ $got == "$VERSION" ]] || { rm -f "$BIN.tmp"; die "built plugin reports version '$got', want '$VERSION'"; }
mv -f "$BIN.tmp" "$BIN"
echo "$WANT" >"$STAMP"
log "done: $BIN reports $VERSION"
