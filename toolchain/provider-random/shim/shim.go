// Package shim exposes the terraform-provider-random plugin-framework provider.
//
// Its import path is rooted under github.com/terraform-providers/terraform-provider-random,
// so Go's internal-package rule lets it import that module's internal/provider package.
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	tfrandom "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns the Terraform random provider.
func NewProvider() provider.Provider {
	return tfrandom.New()
}
