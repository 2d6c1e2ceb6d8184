#!/usr/bin/env bash
# Builds the real node's programs from pinned Go modules into $IOTISTIC_BIN:
#   - kubelet and kube-proxy, from toolchain/cluster (the same k8s.io/kubernetes as the control plane);
#   - kube-router, coredns and pause, from toolchain/node;
#   - local-path-provisioner, from toolchain/local-path-provisioner (a module of its own).
# containerd, runc, the CNI plugins, iptables and ipset are Debian packages (scripts/setup).
# Idempotent: a second run only checks stamps. Nothing is downloaded but Go modules.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
source "$IOTISTIC_ROOT/toolchain/lib.sh"

command -v go >/dev/null || iotistic_die "Go is not installed: the node is compiled from Go modules (Go >= 1.26 needed; this machine kind ships Go 1.26 at /usr/local/go)."
mkdir -p "$IOTISTIC_BIN" "$IOTISTIC_CACHE/logs"
cluster_mod="$IOTISTIC_ROOT/toolchain/cluster"
node_mod="$IOTISTIC_ROOT/toolchain/node"
lpp_mod="$IOTISTIC_ROOT/toolchain/local-path-provisioner"
start=$SECONDS

# --- kubelet and kube-proxy: the control plane's module set, so they match its version ---------
k8s_version=$(module_version "$cluster_mod" k8s.io/kubernetes)
stamp=$(stamp_of "$cluster_mod/go.mod" "$cluster_mod/go.sum" <(k8s_version_flags "$k8s_version") <(go env GOVERSION))
if up_to_date kubelet "$stamp" && up_to_date kube-proxy "$stamp"; then
  iotistic_log "kubelet and kube-proxy $k8s_version: up to date"
else
  iotistic_log "building kubelet and kube-proxy $k8s_version (cold: ~5-10 min; warm Go cache: ~1 min)"
  build_date=$(module_date k8s.io/kubernetes "$k8s_version")
  # -mod=readonly: the control plane's go.mod must not change under its own build's stamp.
  run_logged "kubelet and kube-proxy" "k8s.io/kubernetes@$k8s_version (toolchain/cluster)" \
    "$IOTISTIC_CACHE/logs/node-kubelet.log" \
    env CGO_ENABLED=0 GOFLAGS=-mod=readonly go -C "$cluster_mod" build -trimpath \
    -ldflags "$(k8s_version_flags "$k8s_version" "$build_date")" \
    -o "$IOTISTIC_BIN/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  mark_built kubelet "$stamp"
  mark_built kube-proxy "$stamp"
fi

# --- the add-ons: one go build, so the client-go they share is compiled once -------------------
router_version=$(module_version "$node_mod" github.com/cloudnativelabs/kube-router/v2)
coredns_version=$(module_version "$node_mod" github.com/coredns/coredns)
ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$router_version"
ldflags+=" -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version"
addons=(kube-router coredns pause)
stamp=$(stamp_of "$node_mod/go.mod" "$node_mod/go.sum" "$node_mod"/cmd/*/*.go <(echo "$ldflags") <(go env GOVERSION))
stale=()
for b in "${addons[@]}"; do up_to_date "$b" "$stamp" || stale+=("$b"); done
if ((${#stale[@]} == 0)); then
  iotistic_log "node add-ons (kube-router $router_version, CoreDNS $coredns_version, pause): up to date"
else
  iotistic_log "building the node add-ons: kube-router $router_version, CoreDNS $coredns_version, pause (cold: ~3-6 min)"
  run_logged "node add-ons" "iotistic.local/toolchain/node (kube-router/v2@$router_version, coredns@$coredns_version)" \
    "$IOTISTIC_CACHE/logs/node-addons.log" \
    env CGO_ENABLED=0 go -C "$node_mod" build -trimpath -ldflags "$ldflags" -o "$IOTISTIC_BIN/" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ./cmd/coredns ./cmd/pause
  for b in "${addons[@]}"; do mark_built "$b" "$stamp"; done
fi

# --- local-path-provisioner ------------------------------------------------------------------------
lpp_version=$(module_version "$lpp_mod" github.com/rancher/local-path-provisioner)
ldflags="-s -w -X main.VERSION=$lpp_version"
stamp=$(stamp_of "$lpp_mod/go.mod" "$lpp_mod/go.sum" <(echo "$ldflags") <(go env GOVERSION))
if up_to_date local-path-provisioner "$stamp"; then
  iotistic_log "local-path-provisioner $lpp_version: up to date"
else
  iotistic_log "building local-path-provisioner $lpp_version (cold: ~2-4 min)"
  run_logged "local-path-provisioner" "github.com/rancher/local-path-provisioner@$lpp_version" \
    "$IOTISTIC_CACHE/logs/node-local-path.log" \
    env CGO_ENABLED=0 go -C "$lpp_mod" build -trimpath -ldflags "$ldflags" -o "$IOTISTIC_BIN/" \
    github.com/rancher/local-path-provisioner
  mark_built local-path-provisioner "$stamp"
fi
iotistic_log "node programs ready in $((SECONDS - start)) s: $("$IOTISTIC_BIN/kubelet" --version) in $IOTISTIC_BIN"
