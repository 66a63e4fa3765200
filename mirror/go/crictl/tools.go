//go:build tools

// Upstream main packages built straight from the module graph (go build <pkg>): never imported.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
