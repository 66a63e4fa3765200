// Command coredns is upstream's CoreDNS with the plugins a cluster's DNS uses, not all of them:
// upstream's own main imports every plugin (core/plugin), and the cloud ones (route53, azure,
// clouddns), tracing, dnstap, etcd, geoip, grpc, nomad and quic bring in SDKs that were most of
// its compile time. This is the compile-time plugin selection CoreDNS documents: import the
// plugins, run coremain. Directives (the order plugins run in) stay upstream's; a Corefile that
// names a plugin left out here fails at start with "unknown directive".
package main

import (
	"github.com/coredns/coredns/coremain"

	// What files/kubernetes/Corefile.j2 uses.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	// Small ones an operator's own Corefile commonly adds (stub zones, rewrites, logging).
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/autopath"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/bufsize"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/header"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/k8s_external"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() {
	coremain.Run()
}
