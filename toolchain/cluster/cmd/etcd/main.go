// Command etcd is upstream's etcd server: the same entry point as go.etcd.io/etcd/v3's main,
// built from the server module because the root module is not meant to be depended on.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
