// Command testenv holds the small programs scripts/local-cluster runs next to the pinned
// Kubernetes control plane: one binary, one subcommand per program, so one build serves all.
//
//	freeport [N]          print N free localhost TCP ports
//	serve-charts          static HTTP server for a chart repository directory
//	nodes                 create the kwok-managed fake nodes (zones, labels, allocatable)
//	wait-ready            wait until nodes are Ready and the default ServiceAccount exists
//	apply                 create-or-replace the objects of YAML files (kwok's CRDs)
//	lb-controller         give type: LoadBalancer Services an address (stand-in for a cloud LB)
//	karpenter             delete/recreate the app nodes when their NodePool goes/comes back
//	kiali-operator        what the Kiali operator makes of a Kiali CR (Deployment, Service,
//	                      finalizer), while the operator's chart is installed
//	egress                the API server's "cluster" egress (HTTP CONNECT on a Unix socket):
//	                      kubelet traffic to kwok, istiod webhook calls to an admission stand-in
//	authn                 EKS-style token authentication webhook (aws-iam-authenticator rules)
//	eks-token             print an EKS bearer token (presigned GetCallerIdentity) for tests
//	watchdog              stop a cluster whose directory was deleted without stop
//	smoke                 the Kubernetes half of scripts/lib/local-cluster/smoke
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testenv freeport|serve-charts|nodes|wait-ready|apply|lb-controller|egress|authn|smoke ...")
		os.Exit(2)
	}
	cmds := map[string]func(context.Context, []string) error{
		"freeport":       runFreePort,
		"serve-charts":   runServeCharts,
		"nodes":          runNodes,
		"wait-ready":     runWaitReady,
		"apply":          runApply,
		"lb-controller":  runLBController,
		"karpenter":      runKarpenter,
		"kiali-operator": runKialiOperator,
		"watchdog":       runWatchdog,
		"egress":         runEgress,
		"authn":          runAuthn,
		"eks-token":      runEKSToken,
		"smoke":          runSmoke,
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "testenv: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "testenv %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

func clientset(kubeconfig string) (*kubernetes.Clientset, *rest.Config, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	return cs, cfg, err
}

// clients is clientset plus a dynamic client on the same config, for the controllers that
// handle custom resources.
func clients(kubeconfig string) (*kubernetes.Clientset, *dynamic.DynamicClient, *rest.Config, error) {
	cs, cfg, err := clientset(kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	return cs, dyn, cfg, err
}

// writeFileAtomic writes data to path through a temporary file in the same directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func runFreePort(_ context.Context, args []string) error {
	n := 1
	if len(args) > 0 {
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil {
			return err
		}
	}
	// Hold all listeners open until every port is chosen, so the N ports differ.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// listenAndRecord listens on a free localhost port and records "127.0.0.1:PORT" in addrFile
// (atomically), so the starting script learns the port without a race.
func listenAndRecord(addrFile string) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if addrFile != "" {
		if err := writeFileAtomic(addrFile, []byte(l.Addr().String()+"\n"), 0o600); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

func newFlags(name string) *flag.FlagSet {
	return flag.NewFlagSet("testenv "+name, flag.ContinueOnError)
}
