// Command etcd is etcd and etcdctl in one binary, chosen by the name it is run as (argv[0]) or by
// its first argument ("etcd etcdctl get foo"); each case is upstream's own main.
package main

import (
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name != "etcdctl" && len(os.Args) > 1 && os.Args[1] == "etcdctl" {
		name = "etcdctl"
		os.Args = os.Args[1:]
	}
	if name == "etcdctl" {
		ctlv3.MustStart()
		return
	}
	etcdmain.Main(os.Args)
}
