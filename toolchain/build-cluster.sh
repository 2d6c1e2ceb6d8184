#!/usr/bin/env bash
# Builds the local Kubernetes control plane from pinned Go modules into $IOTISTIC_BIN: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok (toolchain/cluster).
# One `go build` compiles all six, so the packages they share are compiled once. Idempotent: a
# second run only checks stamps. Nothing is downloaded but Go modules from the module proxy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
source "$IOTISTIC_ROOT/toolchain/lib.sh"

command -v go >/dev/null || iotistic_die "Go is not installed: the control plane is compiled from Go modules (Go >= 1.26 needed; this machine kind ships Go 1.26 at /usr/local/go)."
mkdir -p "$IOTISTIC_BIN" "$IOTISTIC_CACHE/logs"
cluster_mod="$IOTISTIC_ROOT/toolchain/cluster"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
packages=(
  ./cmd/etcd
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubectl
  sigs.k8s.io/kwok/cmd/kwok
)
start=$SECONDS

# The versions come from go.mod (read offline), so pin-kubernetes.sh is the only place a release is chosen.
k8s_version=$(module_version "$cluster_mod" k8s.io/kubernetes)
etcd_version=$(module_version "$cluster_mod" go.etcd.io/etcd/server/v3)
kwok_version=$(module_version "$cluster_mod" sigs.k8s.io/kwok)
# Without these the servers report v0.0.0 and clients (pulumi-kubernetes included) misjudge
# which APIs exist (toolchain/lib.sh).
version_flags() { k8s_version_flags "$k8s_version" "${1:-}"; }

stamp=$(stamp_of "$cluster_mod/go.mod" "$cluster_mod/go.sum" "$cluster_mod"/cmd/etcd/*.go \
  "$cluster_mod"/stub/*/go.mod <(version_flags) <(go env GOVERSION))
stale=()
for b in "${binaries[@]}"; do up_to_date "$b" "$stamp" || stale+=("$b"); done
if ((${#stale[@]} == 0)); then
  iotistic_log "control plane (Kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version): up to date"
else
  iotistic_log "building the control plane: Kubernetes $k8s_version, etcd $etcd_version, kwok $kwok_version"
  iotistic_log "  binaries: ${binaries[*]} (cold: ~15-30 min on 2 cores; warm: seconds)"
  run_logged "module download" "k8s.io/kubernetes@$k8s_version" "$IOTISTIC_CACHE/logs/cluster-download.log" \
    go -C "$cluster_mod" mod download k8s.io/kubernetes
  # The release date of the module, not today's: the flags stay the same from build to build.
  build_date=$(module_date k8s.io/kubernetes "$k8s_version")
  # CGO off: static binaries like upstream's release, and no C toolchain needed.
  run_logged "control plane" "iotistic.local/toolchain/cluster (k8s.io/kubernetes@$k8s_version, go.etcd.io/etcd/server/v3@$etcd_version, sigs.k8s.io/kwok@$kwok_version)" \
    "$IOTISTIC_CACHE/logs/cluster.log" \
    env CGO_ENABLED=0 go -C "$cluster_mod" build -trimpath -ldflags "$(version_flags "$build_date")" \
    -o "$IOTISTIC_BIN/" "${packages[@]}"
  for b in "${binaries[@]}"; do mark_built "$b" "$stamp"; done
fi
iotistic_log "control plane ready in $((SECONDS - start)) s: $("$IOTISTIC_BIN/kube-apiserver" --version) in $IOTISTIC_BIN"
