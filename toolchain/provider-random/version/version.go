// Package version holds the provider version, set at link time:
//
//	-ldflags "-X iotistic.local/toolchain/provider-random/version.Version=4.21.1"
package version

// Version is the semantic version this plugin reports (without a leading "v" is fine).
var Version string
