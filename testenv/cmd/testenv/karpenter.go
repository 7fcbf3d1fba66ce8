package main

// karpenter: a stand-in for what Karpenter does to nodes when its NodePool comes and goes.
// The local cluster's app nodes are made up front, labelled karpenter.sh/nodepool=<pool> as
// if Karpenter had launched them (Karpenter itself runs as a kwok pod and launches nothing).
// When a NodePool that was seen is deleted, its nodes are deleted too, as Karpenter drains
// and terminates them, so a `down` that waits for them finishes; when that NodePool is
// created again, the same nodes come back, so an `up` after a `down` finds app nodes.
// What it does not model: provisioning for pending pods, consolidation, expiry, drift,
// disruption budgets, NodeClaims, finalizers, instance types or prices; nodes never change
// while their NodePool exists.

import (
	"context"
	"log"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const nodePoolLabel = "karpenter.sh/nodepool"

func runKarpenter(ctx context.Context, args []string) error {
	fs := newFlags("karpenter")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	interval := fs.Duration("interval", time.Second, "how often to look")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, dyn, _, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	pools := dyn.Resource(schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodepools"})
	seen := map[string]bool{}             // NodePools seen alive
	parked := map[string][]*corev1.Node{} // nodes of deleted NodePools, by pool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
		list, err := pools.List(ctx, metav1.ListOptions{})
		if err != nil {
			continue // the CRD is not installed (yet, or any more): nothing was seen change
		}
		alive := map[string]bool{}
		for _, p := range list.Items {
			if p.GetDeletionTimestamp() == nil {
				alive[p.GetName()] = true
				seen[p.GetName()] = true
			}
		}
		// A NodePool back: its nodes return.
		for pool, nodes := range parked {
			if !alive[pool] {
				continue
			}
			for _, n := range nodes {
				if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					log.Printf("nodepool %s: recreate node %s: %v", pool, n.Name, err)
					continue
				}
				log.Printf("nodepool %s is back: node %s recreated", pool, n.Name)
			}
			delete(parked, pool)
		}
		// A NodePool gone: its nodes go.
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: nodePoolLabel})
		if err != nil {
			continue
		}
		for i := range nodes.Items {
			n := &nodes.Items[i]
			pool := n.Labels[nodePoolLabel]
			if !seen[pool] || alive[pool] || n.Annotations["kwok.x-k8s.io/node"] != "fake" {
				continue
			}
			if err := cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				log.Printf("nodepool %s deleted: delete node %s: %v", pool, n.Name, err)
				continue
			}
			log.Printf("nodepool %s deleted: node %s deleted", pool, n.Name)
			keep := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels, Annotations: n.Annotations},
				Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs, ProviderID: n.Spec.ProviderID},
				Status: corev1.NodeStatus{Allocatable: n.Status.Allocatable, Capacity: n.Status.Capacity,
					Addresses: n.Status.Addresses},
			}
			parked[pool] = append(parked[pool], keep)
		}
	}
}
