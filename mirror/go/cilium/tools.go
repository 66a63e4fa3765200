//go:build tools

// Upstream main packages built straight from the module graph (go build <pkg>): never imported.
// Not the operator: it imports sigs.k8s.io/mcs-api/controllers, which the module proxy here does
// not serve (404 for every version, 403 for v0.5.2's zip).
package tools

import (
	_ "github.com/cilium/cilium/daemon"
	_ "github.com/cilium/cilium/plugins/cilium-cni"
)
