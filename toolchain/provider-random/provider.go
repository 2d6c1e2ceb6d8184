// Package random describes how the Terraform random provider (plugin framework) is
// presented to Pulumi: package name, resource tokens (random:index/randomX:RandomX,
// the same tokens the PyPI pulumi-random SDK uses) and a few per-resource tweaks.
//
// Both cmd/pulumi-tfgen-random (schema generation) and cmd/pulumi-resource-random
// (the plugin) build their tfbridge.ProviderInfo from Provider.
package random

import (
	"context"
	"errors"

	"github.com/terraform-providers/terraform-provider-random/shim"

	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"iotistic.local/toolchain/provider-random/version"
)

const (
	pkgName = "random"
	modName = "index"
)

// Provider returns the bridge description of the random provider. bridgeMetadata is the
// bridge-metadata.json written by tfgen (nil or empty when generating it).
func Provider(bridgeMetadata []byte) tfbridge.ProviderInfo {
	prov := tfbridge.ProviderInfo{
		P:            pftfbridge.ShimProvider(shim.NewProvider()),
		Name:         pkgName,
		Version:      version.Version,
		Description:  "A Pulumi package to safely use randomness in Pulumi programs.",
		Keywords:     []string{"pulumi", "random"},
		License:      "Apache-2.0",
		Homepage:     "https://pulumi.io",
		Repository:   "https://github.com/pulumi/pulumi-random",
		MetadataInfo: tfbridge.NewProviderMetadata(bridgeMetadata),
		Resources: map[string]*tfbridge.ResourceInfo{
			// random_bytes has no "id" attribute: use the base64 result as the Pulumi ID.
			"random_bytes": {ComputeID: bytesID},
			// Old random_string states may lack their schema version marker; treat
			// those as version 1 (the later upgrades are idempotent).
			"random_string": {PreStateUpgradeHook: func(a tfbridge.PreStateUpgradeHookArgs) (int64, resource.PropertyMap, error) {
				if a.PriorStateSchemaVersion == 0 {
					return 1, a.PriorState, nil
				}
				return a.PriorStateSchemaVersion, a.PriorState, nil
			}},
		},
		Python:                      &tfbridge.PythonInfo{RespectSchemaVersion: true},
		JavaScript:                  &tfbridge.JavaScriptInfo{RespectSchemaVersion: true},
		EnableAccurateBridgePreview: true,
		EnableRawStateDelta:         true,
	}

	// random_password -> random:index/randomPassword:RandomPassword, and so on.
	prov.MustComputeTokens(tokens.SingleModule("random_", modName,
		func(module, name string) (string, error) {
			return tokens.MakeStandard(pkgName)(module, "Random"+name)
		}))
	prov.MustApplyAutoAliases()
	return prov
}

func bytesID(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
	b, ok := state["base64"]
	if !ok {
		return "", errors.New("random_bytes: no base64 property in state")
	}
	if b.IsSecret() {
		b = b.SecretValue().Element
	}
	if !b.IsString() {
		return "", errors.New("random_bytes: base64 property is not a string")
	}
	return resource.ID(b.StringValue()), nil
}
