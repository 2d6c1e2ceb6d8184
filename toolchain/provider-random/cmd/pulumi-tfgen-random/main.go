// Command pulumi-tfgen-random generates the Pulumi package schema and bridge metadata
// for the random provider: `pulumi-tfgen-random schema --skip-examples --out DIR` writes
// DIR/schema.json and DIR/bridge-metadata.json.
//
// RANDOM_UPSTREAM_REPO_PATH may name the terraform-provider-random source directory (its
// docs/ supply the descriptions); otherwise the bridge runs `go mod download` to find it.
package main

import (
	"os"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	random "iotistic.local/toolchain/provider-random"
)

func main() {
	prov := random.Provider(nil)
	prov.UpstreamRepoPath = os.Getenv("RANDOM_UPSTREAM_REPO_PATH")
	tfgen.Main("random", prov)
}
