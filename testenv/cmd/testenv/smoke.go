package main

// smoke: the Kubernetes checks of scripts/lib/local-cluster/smoke, through client-go (there
// is no kubectl). Each check prints one line with how long it took; the first failure ends
// the run with an error.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	admregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

type smoke struct {
	cs  *kubernetes.Clientset
	cfg *rest.Config
	dyn *dynamic.DynamicClient
	ns  string
	// envoyPort: a local HTTP server standing in for a pod's Envoy admin (port 15000).
	envoyPort int
}

func runSmoke(ctx context.Context, args []string) error {
	fs := newFlags("smoke")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	zones := fs.Int("zones", 3, "zones the cluster's nodes span")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, dyn, cfg, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "envoy stand-in %s\n", r.URL.Path)
		}))
	}()
	s := &smoke{cs: cs, cfg: cfg, dyn: dyn, ns: fmt.Sprintf("smoke-%d", time.Now().UnixNano()%100000),
		envoyPort: l.Addr().(*net.TCPAddr).Port}
	checks := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"namespace", s.createNamespace},
		{"deployment spread over zones, pods Running/Ready on kwok nodes", func(ctx context.Context) error { return s.deployment(ctx, *zones) }},
		{"endpointslice endpoints carry nodeName and zone", s.endpointSlices},
		{"pods/portforward reaches the address a PortForward names", s.portForward},
		{"pods/portforward over WebSocket (kube-rs's protocols)", s.portForwardWebSocket},
		{"LoadBalancer service gets an address", s.loadBalancer},
		{"a Job's pod completes (helm hooks wait for Jobs)", s.job},
		{"istiod stand-in: caBundle patched, pod injected, validating webhook Fail", s.istioWebhooks},
		{"deployment delete garbage-collects replicaset and pods", s.garbageCollect},
		{"namespace delete runs finalizers and terminates", s.deleteNamespace},
	}
	for _, c := range checks {
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err := c.fn(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		fmt.Printf("ok   %-72s %6.2fs\n", c.name, time.Since(t0).Seconds())
	}
	return nil
}

// poll calls fn every 200ms until it returns true or an error, or ctx ends.
func poll(ctx context.Context, what string, fn func() (bool, error)) error {
	var last error
	for {
		ok, err := fn()
		if err != nil {
			last = err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (last error: %v)", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *smoke) createNamespace(ctx context.Context) error {
	_, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	// Pods need the namespace's default ServiceAccount (the serviceaccount controller).
	return poll(ctx, "default ServiceAccount", func() (bool, error) {
		_, err := s.cs.CoreV1().ServiceAccounts(s.ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}

func (s *smoke) deployment(ctx context.Context, zones int) error {
	labels := map[string]string{"app": "smoke"}
	replicas := int32(3)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: s.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "smoke:local", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
				},
			},
		},
	}
	if _, err := s.cs.AppsV1().Deployments(s.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: s.ns},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := s.cs.CoreV1().Services(s.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := poll(ctx, "deployment Available", func() (bool, error) {
		d, err := s.cs.AppsV1().Deployments(s.ns).Get(ctx, "smoke", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.ReadyReplicas == 3 {
				return true, nil
			}
		}
		return false, fmt.Errorf("ready replicas %d", d.Status.ReadyReplicas)
	}); err != nil {
		return err
	}
	pods, err := s.cs.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=smoke"})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			ready = ready || (c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue)
		}
		if p.Status.Phase != corev1.PodRunning || !ready || p.Status.PodIP == "" {
			return fmt.Errorf("pod %s: phase %s ready %v ip %q", p.Name, p.Status.Phase, ready, p.Status.PodIP)
		}
		node, err := s.cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Annotations["kwok.x-k8s.io/node"] != "fake" {
			return fmt.Errorf("pod %s on node %s, not a kwok node", p.Name, node.Name)
		}
		z := node.Labels["topology.kubernetes.io/zone"]
		seen[z] = true
		fmt.Printf("     pod %s on %s (%s), IP %s\n", p.Name, node.Name, z, p.Status.PodIP)
	}
	want := min(3, zones)
	if len(seen) != want {
		return fmt.Errorf("pods in %d zones, want %d", len(seen), want)
	}
	return nil
}

func (s *smoke) endpointSlices(ctx context.Context) error {
	return poll(ctx, "3 ready endpoints with nodeName and zone", func() (bool, error) {
		sl, err := s.cs.DiscoveryV1().EndpointSlices(s.ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=smoke"})
		if err != nil {
			return false, err
		}
		n := 0
		for _, es := range sl.Items {
			for _, ep := range es.Endpoints {
				if ep.NodeName == nil || *ep.NodeName == "" || ep.Zone == nil || *ep.Zone == "" {
					return false, fmt.Errorf("endpoint %v without nodeName/zone", ep.Addresses)
				}
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					n++
				}
			}
		}
		return n == 3, fmt.Errorf("%d ready endpoints", n)
	})
}

// portForward registers the stand-in "Envoy admin" with a kwok PortForward for one smoke
// pod's port 15000, and reads /clusters through pods/portforward (SPDY, as client-go).
func (s *smoke) portForward(ctx context.Context) error {
	pods, err := s.cs.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=smoke"})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Errorf("no smoke pod: %v", err)
	}
	pod := pods.Items[0].Name
	port := s.envoyPort
	pf := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "PortForward",
		"metadata": map[string]any{"name": pod, "namespace": s.ns},
		"spec": map[string]any{"forwards": []any{map[string]any{
			"ports":  []any{int64(15000)},
			"target": map[string]any{"address": "127.0.0.1", "port": int64(port)},
		}}},
	}}
	gvr := schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}
	if _, err := s.dyn.Resource(gvr).Namespace(s.ns).Create(ctx, pf, metav1.CreateOptions{}); err != nil {
		return err
	}
	return poll(ctx, "Envoy admin through pods/portforward", func() (bool, error) {
		body, err := s.portForwardGet(ctx, pod, 15000, "/clusters")
		if err != nil {
			return false, err
		}
		if !strings.Contains(body, "envoy stand-in /clusters") {
			return false, fmt.Errorf("unexpected answer %q", body)
		}
		fmt.Printf("     GET /clusters via pods/portforward %s:15000 -> %q\n", pod, strings.TrimSpace(body))
		return true, nil
	})
}

func (s *smoke) portForwardGet(ctx context.Context, pod string, port int, path string) (string, error) {
	rt, upgrader, err := spdy.RoundTripperFor(s.cfg)
	if err != nil {
		return "", err
	}
	u := s.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(s.ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	errCh := make(chan error, 1)
	go func() { errCh <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errCh:
		return "", err
	case <-ctx.Done():
		return "", ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get((&url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0].Local), Path: path}).String())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (s *smoke) loadBalancer(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke-lb", Namespace: s.ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "smoke"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := s.cs.CoreV1().Services(s.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	return poll(ctx, "load balancer ingress", func() (bool, error) {
		svc, err := s.cs.CoreV1().Services(s.ns).Get(ctx, "smoke-lb", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if in := svc.Status.LoadBalancer.Ingress; len(in) > 0 {
			fmt.Printf("     %s/smoke-lb: %s %s\n", s.ns, in[0].Hostname, in[0].IP)
			return true, nil
		}
		return false, nil
	})
}

// istioWebhooks installs webhook configurations shaped like istiod's chart's (when the
// istiod chart is not installed already), waits for the stand-in to patch them, and
// creates a pod in an injection-labelled namespace.
func (s *smoke) istioWebhooks(ctx context.Context) error {
	fail, ignore := admregv1.Fail, admregv1.Ignore
	none := admregv1.SideEffectClassNone
	port := int32(443)
	name := "smoke-istio-sidecar-injector-" + s.ns
	vname := "smoke-istio-validator-" + s.ns
	ns := "smoke-injected-" + s.ns
	mwc := &admregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"istio.io/rev": "default", "app": "sidecar-injector"}},
		Webhooks: []admregv1.MutatingWebhook{{
			Name: "namespace.sidecar-injector.istio.io",
			ClientConfig: admregv1.WebhookClientConfig{Service: &admregv1.ServiceReference{
				Name: "istiod", Namespace: "istio-system", Path: strPtr("/inject"), Port: &port}},
			Rules: []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create},
				Rule: admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1beta1", "v1"},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"smoke-injection": s.ns}},
		}},
	}
	vwc := &admregv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: vname, Labels: map[string]string{"istio.io/rev": "default"}},
		Webhooks: []admregv1.ValidatingWebhook{{
			Name: "rev.validation.istio.io",
			ClientConfig: admregv1.WebhookClientConfig{Service: &admregv1.ServiceReference{
				Name: "istiod", Namespace: "istio-system", Path: strPtr("/validate"), Port: &port}},
			Rules: []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create},
				Rule: admregv1.Rule{APIGroups: []string{"smoke.istio.io"}, APIVersions: []string{"*"}, Resources: []string{"*"}}}},
			FailurePolicy:           &ignore,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1beta1", "v1"},
		}},
	}
	// The Service the webhooks name, as istiod's chart makes it (443 -> 15017); kube-apiserver
	// resolves it to its ClusterIP.
	svcName := "istiod-smoke-" + s.ns
	for _, wh := range mwc.Webhooks {
		wh.ClientConfig.Service.Name = svcName
	}
	vwc.Webhooks[0].ClientConfig.Service.Name = svcName
	if _, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := s.cs.CoreV1().Services("istio-system").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "istiod"}, Ports: []corev1.ServicePort{
			{Name: "https-webhook", Port: 443, TargetPort: intstr.FromInt32(15017)}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer s.cs.CoreV1().Services("istio-system").Delete(context.Background(), svcName, metav1.DeleteOptions{})
	if _, err := s.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer s.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	if _, err := s.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, vwc, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer s.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), vname, metav1.DeleteOptions{})
	if err := poll(ctx, "caBundle and failurePolicy patched", func() (bool, error) {
		m, err := s.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		v, err := s.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, vname, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(m.Webhooks[0].ClientConfig.CABundle) > 0 && len(v.Webhooks[0].ClientConfig.CABundle) > 0 &&
			v.Webhooks[0].FailurePolicy != nil && *v.Webhooks[0].FailurePolicy == admregv1.Fail, nil
	}); err != nil {
		return err
	}
	if _, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"smoke-injection": s.ns}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer s.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	var pod *corev1.Pod
	if err := poll(ctx, "pod admitted through the sidecar injector", func() (bool, error) {
		p, err := s.cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "injected", Labels: map[string]string{"app": "injected"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "smoke:local"}}},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			p, err = s.cs.CoreV1().Pods(ns).Get(ctx, "injected", metav1.GetOptions{})
		}
		pod = p
		return err == nil, err
	}); err != nil {
		return err
	}
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if len(names) != 2 || names[1] != "istio-proxy" {
		return fmt.Errorf("pod containers %v, want [app istio-proxy]", names)
	}
	fmt.Printf("     pod %s/injected containers %v\n", ns, names)
	return nil
}

func strPtr(s string) *string { return &s }

func (s *smoke) job(ctx context.Context) error {
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke-job", Namespace: s.ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "job", Image: "job:local"}},
		}}},
	}
	if _, err := s.cs.BatchV1().Jobs(s.ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		return err
	}
	return poll(ctx, "Job Complete", func() (bool, error) {
		j, err := s.cs.BatchV1().Jobs(s.ns).Get(ctx, "smoke-job", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("succeeded %d", j.Status.Succeeded)
	})
}

func metav1ListSmoke() metav1.ListOptions { return metav1.ListOptions{LabelSelector: "app=smoke"} }

func (s *smoke) garbageCollect(ctx context.Context) error {
	if err := s.cs.AppsV1().Deployments(s.ns).Delete(ctx, "smoke", metav1.DeleteOptions{}); err != nil {
		return err
	}
	return poll(ctx, "replicasets and pods gone", func() (bool, error) {
		rs, err := s.cs.AppsV1().ReplicaSets(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods, err := s.cs.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=smoke"})
		if err != nil {
			return false, err
		}
		return len(rs.Items) == 0 && len(pods.Items) == 0, fmt.Errorf("%d replicasets, %d pods left", len(rs.Items), len(pods.Items))
	})
}

func (s *smoke) deleteNamespace(ctx context.Context) error {
	// Something for the namespace controller to delete, with a finalizer of ours it must wait for.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: s.ns, Finalizers: []string{"smoke.meshstack.local/hold"}}}
	if _, err := s.cs.CoreV1().ConfigMaps(s.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := s.cs.CoreV1().Namespaces().Delete(ctx, s.ns, metav1.DeleteOptions{}); err != nil {
		return err
	}
	if err := poll(ctx, "namespace Terminating and configmap marked for deletion", func() (bool, error) {
		ns, err := s.cs.CoreV1().Namespaces().Get(ctx, s.ns, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		cm, err := s.cs.CoreV1().ConfigMaps(s.ns).Get(ctx, "held", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return ns.Status.Phase == corev1.NamespaceTerminating && cm.DeletionTimestamp != nil, nil
	}); err != nil {
		return err
	}
	_, err := s.cs.CoreV1().ConfigMaps(s.ns).Patch(ctx, "held", "application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	if err != nil {
		return err
	}
	return poll(ctx, "namespace gone", func() (bool, error) {
		_, err := s.cs.CoreV1().Namespaces().Get(ctx, s.ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}
