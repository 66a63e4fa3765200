//go:build tools

// The ginkgo CLI runs e2e.test in parallel processes (ginkgo -p); built from the same module graph
// so its version is the one the suite was compiled against.
package e2e

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
)
