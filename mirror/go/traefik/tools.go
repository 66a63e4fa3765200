//go:build tools

// Upstream main packages built straight from the module graph (go build <pkg>): never imported.
package tools

import (
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)
