//go:build tools

// Upstream main packages built straight from the module graph (go build <pkg>): never imported.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
