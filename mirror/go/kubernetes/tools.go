//go:build tools

// Upstream main packages built straight from the module graph (go build <pkg>): never imported.
package main

import (
	_ "k8s.io/kubernetes/test/images/agnhost"
)
