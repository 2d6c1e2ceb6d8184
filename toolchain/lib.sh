# shellcheck shell=bash
# Helpers shared by the toolchain build scripts: progress while Go builds run, a stamp so a
# second run takes seconds, and a readable failure (the module and the last lines of its log).

# stamp_of FILE...: a content hash of the inputs that decide a build's output.
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# up_to_date NAME STAMP: true when NAME was already built from inputs with this stamp.
up_to_date() {
  local name=$1 stamp=$2
  [[ -x "$IOTISTIC_BIN/$name" && "$(cat "$IOTISTIC_BIN/.$name.stamp" 2>/dev/null)" == "$stamp" ]]
}
mark_built() { echo "$2" >"$IOTISTIC_BIN/.$1.stamp"; }

# run_logged LABEL MODULE LOG CMD...: runs CMD with a heartbeat every 30 s; on failure prints the
# module being built and the last 30 lines of its output, then exits.
run_logged() {
  local label=$1 module=$2 log=$3; shift 3
  mkdir -p "$(dirname "$log")"
  local start=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if (( (SECONDS - start) % 30 < 2 && SECONDS - start >= 30 )); then
      iotistic_log "  … $label still building ($((SECONDS - start)) s)"
      sleep 2
    fi
  done
  if ! wait "$pid"; then
    printf '\033[31m[iotistic] %s failed\033[0m (module %s). Last lines of %s:\n' "$label" "$module" "$log" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  iotistic_log "  $label done in $((SECONDS - start)) s"
}

# module_version MODULE_DIR MODULE: the version MODULE_DIR/go.mod requires (read offline).
module_version() {
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"
}

# module_date MODULE VERSION: the release date the module proxy recorded (after a download), so
# build-date flags stay the same from build to build.
module_date() {
  go mod download "$1@$2" >/dev/null 2>&1 || true
  sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$GOMODCACHE/cache/download/$1/@v/$2.info"
}

# k8s_version_flags VERSION [BUILD_DATE]: the -ldflags Kubernetes' release build sets, so binaries
# report VERSION (not v0.0.0) and clients such as pulumi-kubernetes judge the API correctly.
k8s_version_flags() {
  local version=$1 date=${2:-} major minor flags="" pkg
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitVersion=$version"
    flags+=" -X $pkg.gitTreeState=clean${date:+ -X $pkg.buildDate=$date}"
  done
  echo "-s -w$flags"
}
