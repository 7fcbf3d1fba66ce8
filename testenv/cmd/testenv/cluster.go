package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// runServeCharts serves a chart repository directory (index.yaml with relative URLs plus the
// .tgz files) over plain HTTP on a free localhost port recorded in --addr-file.
func runServeCharts(ctx context.Context, args []string) error {
	fs := newFlags("serve-charts")
	dir := fs.String("dir", "", "chart repository directory")
	addrFile := fs.String("addr-file", "", "file to write 127.0.0.1:PORT to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*dir); err != nil {
		return err
	}
	l, err := listenAndRecord(*addrFile)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(*dir)), ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runNodes creates the fake nodes kwok manages: --per-zone nodes in each of --zones, labelled
// as EKS/Karpenter nodes are, with allocatable large enough for kube-prometheus-stack, istio
// and the app. Existing nodes are left alone.
func runNodes(ctx context.Context, args []string) (err error) {
	fs := newFlags("nodes")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	zones := fs.String("zones", "us-east-1a,us-east-1b,us-east-1c", "comma-separated zones")
	perZone := fs.Int("per-zone", 2, "app nodes (as Karpenter's NodePool \"ecommerce\" would launch them) per zone")
	systemPerZone := fs.Int("system-per-zone", 1, "system nodes (as the managed node group, meshstack.io/pool=system) per zone")
	extraLabels := fs.String("node-labels", "", "extra labels for every node: k=v,k2=v2")
	instanceType := fs.String("instance-type", "m5.large", "node.kubernetes.io/instance-type label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, _, err := clientset(*kubeconfig)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	defer func() {
		// A restart with other zones or fewer nodes (etcd's data is kept across stop/start)
		// removes the kwok nodes no longer wanted.
		if err != nil {
			return
		}
		nodes, lerr := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if lerr != nil {
			err = lerr
			return
		}
		for _, n := range nodes.Items {
			if !want[n.Name] && n.Annotations["kwok.x-k8s.io/node"] == "fake" {
				if derr := cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
					err = derr
				}
			}
		}
	}()
	extra := map[string]string{}
	for _, kv := range strings.Split(*extraLabels, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			extra[k] = v
		} else if kv != "" {
			return fmt.Errorf("--node-labels: %q is not k=v", kv)
		}
	}
	// Two pools, as a meshstack cluster has them: the managed node group's system nodes
	// (the platform's pods select meshstack.io/pool=system) and the app nodes Karpenter's
	// NodePool "ecommerce" launches (the app's pods select managedBy=karpenter and
	// billing-team=ecommerce). Karpenter itself runs as a kwok pod and launches nothing.
	type pool struct {
		prefix string
		count  int
		labels map[string]string
	}
	pools := []pool{
		{"kwok-system-", *systemPerZone, map[string]string{
			"meshstack.io/pool":              "system",
			"eks.amazonaws.com/nodegroup":    "system",
			"eks.amazonaws.com/capacityType": "ON_DEMAND",
		}},
		{"kwok-", *perZone, map[string]string{
			"managedBy":                      "karpenter",
			"billing-team":                   "ecommerce",
			"karpenter.sh/nodepool":          "ecommerce",
			"karpenter.sh/registered":        "true",
			"karpenter.sh/initialized":       "true",
			"karpenter.k8s.aws/ec2nodeclass": "ecommerce",
		}},
	}
	for zi, zone := range strings.Split(*zones, ",") {
		zone = strings.TrimSpace(zone)
		region := strings.TrimRight(zone, "abcdefghijklmnopqrstuvwxyz")
		n := 0
		for _, p := range pools {
			for i := 0; i < p.count; i++ {
				it := map[string]string{"node.kubernetes.io/instance-type": *instanceType}
				if err := createNode(ctx, cs, fmt.Sprintf("%s%s-%d", p.prefix, zone, i), zone, region, zi, n, it, p.labels, extra); err != nil {
					return err
				}
				want[fmt.Sprintf("%s%s-%d", p.prefix, zone, i)] = true
				n++
			}
		}
	}
	return nil
}

// createNode creates one kwok node, the n-th of zone zi, unless it exists.
func createNode(ctx context.Context, cs *kubernetes.Clientset, name, zone, region string, zi, n int, labels ...map[string]string) error {
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
	cidr := fmt.Sprintf("10.244.%d.0/24", zi*16+n)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname":        name,
				"kubernetes.io/os":              "linux",
				"kubernetes.io/arch":            "amd64",
				"topology.kubernetes.io/zone":   zone,
				"topology.kubernetes.io/region": region,
				"karpenter.sh/capacity-type":    "on-demand",
				"type":                          "kwok",
			},
			Annotations: map[string]string{
				"kwok.x-k8s.io/node":           "fake",
				"node.alpha.kubernetes.io/ttl": "0",
				"meshstack.local/stand-in":     "kwok node: no kubelet, no containers run",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: fmt.Sprintf("kwok:///%s/%s", zone, name)},
		Status: corev1.NodeStatus{
			Allocatable: res,
			Capacity:    res,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.%d.%d", zi, 10+n)},
				{Type: corev1.NodeHostName, Address: name},
			},
		},
	}
	for _, l := range labels {
		for k, v := range l {
			node.Labels[k] = v
		}
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return nil
}

// runWaitReady waits until --nodes nodes are Ready and the default ServiceAccount exists in
// "default" (so a Deployment's pods can be admitted and scheduled).
func runWaitReady(ctx context.Context, args []string) error {
	fs := newFlags("wait-ready")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	want := fs.Int("nodes", 1, "number of Ready nodes to wait for")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, _, err := clientset(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	last := ""
	for {
		ready := 0
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, n := range nodes.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		_, saErr := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil && saErr == nil && ready >= *want {
			return nil
		}
		last = fmt.Sprintf("%d/%d nodes Ready (list error: %v), default ServiceAccount: %v", ready, *want, err, saErr)
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %s", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// runApply creates (or replaces) every object in the given YAML files, resolving kinds
// through discovery; used for kwok's CRDs.
func runApply(ctx context.Context, args []string) error {
	fs := newFlags("apply")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, cfg, err := clientset(*kubeconfig)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, file := range fs.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("%s: %w", file, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			gvk := obj.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", file, gvk, err)
			}
			var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ns := obj.GetNamespace()
				if ns == "" {
					ns = "default"
				}
				ri = dyn.Resource(m.Resource).Namespace(ns)
			}
			_, err = ri.Create(ctx, &obj, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				cur, gerr := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
				if gerr != nil {
					return gerr
				}
				obj.SetResourceVersion(cur.GetResourceVersion())
				_, err = ri.Update(ctx, &obj, metav1.UpdateOptions{})
			}
			if err != nil {
				return fmt.Errorf("%s: %s %s: %w", file, gvk.Kind, obj.GetName(), err)
			}
		}
	}
	return nil
}
