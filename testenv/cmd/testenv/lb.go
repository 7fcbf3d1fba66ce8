package main

// lb-controller: a stand-in for a cloud load-balancer controller (as cloud-provider-kind is
// for kind). Every Service of type LoadBalancer gets status.loadBalancer.ingress with a
// hostname shaped like an AWS load balancer's (under .localhost, so it resolves to loopback)
// and --ip if given. What it does not model: no traffic is forwarded, no NodePorts are
// served, no load-balancer class or annotations are read, no finalizer is added.

import (
	"context"
	"fmt"
	"hash/fnv"
	"log"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

func runLBController(ctx context.Context, args []string) error {
	fs := newFlags("lb-controller")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	ip := fs.String("ip", "", "IP to report next to the hostname (none if empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, _, err := clientset(*kubeconfig)
	if err != nil {
		return err
	}
	queue := make(chan *corev1.Service, 256)
	enqueue := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 {
			queue <- svc
		}
	}
	factory := informers.NewSharedInformerFactory(cs, 5*time.Minute)
	inf := factory.Core().V1().Services().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for {
		select {
		case <-ctx.Done():
			return nil
		case svc := <-queue:
			h := fnv.New32a()
			h.Write([]byte(string(svc.UID)))
			ing := corev1.LoadBalancerIngress{
				Hostname: fmt.Sprintf("%.20s-%08x.elb.us-east-1.localhost", svc.Namespace+"-"+svc.Name, h.Sum32()),
				IP:       *ip,
			}
			for attempt := 0; attempt < 5; attempt++ {
				cur, err := cs.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
				if err != nil || cur.Spec.Type != corev1.ServiceTypeLoadBalancer || len(cur.Status.LoadBalancer.Ingress) > 0 {
					break
				}
				cur.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{ing}
				if _, err = cs.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err == nil {
					log.Printf("service %s/%s: load balancer %s", svc.Namespace, svc.Name, ing.Hostname)
					break
				}
				log.Printf("service %s/%s: %v", svc.Namespace, svc.Name, err)
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}
