// Command coredns is upstream CoreDNS with only the plugins the real node's cluster DNS uses
// (Corefile in devenv/node_addons.py): the kubernetes plugin answers for cluster.local, nothing is
// forwarded (the node has no way out). Fewer plugins than upstream's main, so a much smaller build.
package main

import (
	"github.com/coredns/coredns/coremain"

	// Registered plugins: each import's init() adds it to the server's directive table.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
