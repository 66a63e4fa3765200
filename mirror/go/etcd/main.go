// Command etcd is etcd, etcdctl and etcdutl in one binary, chosen by the name it is run as
// (argv[0]) or by its first argument ("etcd etcdctl get foo"). etcd and etcdctl are upstream's
// own mains; etcdutl's main is upstream's package main (not importable), so its root command is
// put together here from the commands upstream's etcdutl package exports.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
	"go.etcd.io/etcd/etcdutl/v3/etcdutl"
	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name == "etcd" && len(os.Args) > 1 && (os.Args[1] == "etcdctl" || os.Args[1] == "etcdutl") {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	switch name {
	case "etcdctl":
		ctlv3.MustStart()
	case "etcdutl":
		if err := etcdutlCommand().Execute(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		etcdmain.Main(os.Args)
	}
}

// etcdutlCommand: the offline tool (snapshot status and restore moved here from etcdctl in 3.6).
func etcdutlCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "etcdutl",
		Short: "A simple command line tool for etcd files (snapshots, data directories).",
	}
	root.PersistentFlags().StringVarP(&etcdutl.OutputFormat, "write-out", "w", "simple",
		"set the output format (fields, json, protobuf, simple, table)")
	root.AddCommand(
		etcdutl.NewDefragCommand(),
		etcdutl.NewSnapshotCommand(),
		etcdutl.NewHashKVCommand(),
		etcdutl.NewVersionCommand(),
		etcdutl.NewMigrateCommand(),
	)
	return root
}
