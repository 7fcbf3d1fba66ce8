package main

// The API server's "cluster" egress, and the istiod admission stand-in behind it.
//
// How webhook and kubelet traffic reaches this process: kube-apiserver runs with
// --egress-selector-config-file naming an HTTPConnect proxy on a Unix socket in the cluster
// directory for the "cluster" egress. kube-apiserver dials everything "in the cluster"
// through it: webhook Services (it asks CONNECT istiod.istio-system.svc:443, the Service's DNS
// name, because --enable-aggregator-routing is off) and kubelets (CONNECT <node>:10250, for
// pods/log, pods/exec, pods/portforward). With --enable-aggregator-routing off (the default)
// kube-apiserver resolves a webhook Service to its ClusterIP, so the CONNECT names
// <clusterIP>:<port>; the proxy looks the ClusterIP up in its Service informer. It answers
//   - a Service istiod* in istio-system (by ClusterIP, or by its DNS name istiod*.istio-system.svc)
//     -> the admission stand-in, served in this process over TLS with a certificate for
//     istiod.istio-system.svc (and *.istio-system.svc) signed by the cluster CA;
//   - <anything>:<kubelet port>     -> kwok's kubelet server (one per cluster, on a free port);
//   - everything else               -> 503, so webhooks of other charts fail as their Service
//     would with no reachable endpoints (their failurePolicy decides).
// Nothing listens on a fixed port and the socket lives in the cluster's own directory, so two
// clusters run side by side.
//
// What the stand-in does not model: no xDS, no CA (no istio-ca-root-cert ConfigMap, no
// workload certificates), no real injection template (it adds a bare istio-proxy container
// and the status annotation, nothing else), no validation except of the one invalid
// Gateway istiod probes with before switching its validating webhook to failurePolicy Fail.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

func runEgress(ctx context.Context, args []string) error {
	fs := newFlags("egress")
	socket := fs.String("socket", "", "Unix socket to listen on (HTTP CONNECT)")
	kubeletPort := fs.String("kubelet-port", "10250", "port nodes advertise for their kubelet")
	kubeletTarget := fs.String("kubelet-target", "", "host:port of kwok's kubelet server")
	kubeletTargetFile := fs.String("kubelet-target-file", "", "file holding host:port of kwok's kubelet server (read per connection)")
	cert := fs.String("cert", "", "serving certificate of the istiod stand-in (PEM)")
	key := fs.String("key", "", "its key (PEM)")
	caFile := fs.String("ca", "", "CA bundle patched into istiod's webhook configurations")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig (for patching webhook configurations)")
	inject := fs.Bool("inject-sidecar", true, "add an istio-proxy container to pods sent to /inject")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ca, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	kp, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	cs, _, err := clientset(*kubeconfig)
	if err != nil {
		return err
	}
	go patchIstioWebhooks(ctx, cs, ca)
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	services := factory.Core().V1().Services().Informer()
	factory.Start(ctx.Done())
	// serviceAt names the Service whose ClusterIP is ip ("" if none).
	serviceAt := func(ip string) (namespace, name string) {
		for _, o := range services.GetStore().List() {
			if svc, ok := o.(*corev1.Service); ok && svc.Spec.ClusterIP == ip {
				return svc.Namespace, svc.Name
			}
		}
		return "", ""
	}

	// The admission stand-in: an HTTPS server fed with the connections CONNECT hands over.
	admission := newChanListener()
	mux := http.NewServeMux()
	mux.HandleFunc("/inject", admit(func(r *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
		return injectResponse(r, *inject)
	}))
	mux.HandleFunc("/inject/", admit(func(r *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
		return injectResponse(r, *inject)
	}))
	mux.HandleFunc("/", admit(validateResponse))
	asrv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "admission: ", log.LstdFlags),
	}
	go func() { _ = asrv.ServeTLS(admission, "", "") }()

	kubeletAddr := func() string {
		if *kubeletTargetFile != "" {
			if b, err := os.ReadFile(*kubeletTargetFile); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return *kubeletTarget
	}

	_ = os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(*socket, 0o600); err != nil {
		return err
	}
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		host, port, err := net.SplitHostPort(r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var upstream net.Conn
		istiod := isIstiod(host)
		if net.ParseIP(host) != nil {
			ns, name := serviceAt(host)
			istiod = ns == "istio-system" && strings.HasPrefix(name, "istiod")
		}
		switch {
		case istiod:
			// served in-process below
		case port == *kubeletPort && kubeletAddr() != "":
			upstream, err = net.DialTimeout("tcp", kubeletAddr(), 5*time.Second)
			if err != nil {
				log.Printf("CONNECT %s: kwok: %v", r.Host, err)
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		default:
			log.Printf("CONNECT %s: nothing serves it here", r.Host)
			http.Error(w, "no route to "+r.Host+" in the local test cluster", http.StatusServiceUnavailable)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "cannot hijack", http.StatusInternalServerError)
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			conn.Close()
			return
		}
		client := &bufferedConn{Conn: conn, r: buf.Reader}
		if upstream == nil {
			log.Printf("CONNECT %s: istiod stand-in", r.Host)
			admission.ch <- client
			return
		}
		pipe(client, upstream)
	})
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close(); asrv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func isIstiod(host string) bool {
	return strings.HasPrefix(host, "istiod") &&
		(strings.HasSuffix(host, ".istio-system.svc") || strings.HasSuffix(host, ".istio-system.svc.cluster.local"))
}

type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func pipe(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() { a.Close(); b.Close() }
	go func() { _, _ = io.Copy(a, b); once.Do(closeBoth) }()
	go func() { _, _ = io.Copy(b, a); once.Do(closeBoth) }()
}

// chanListener is a net.Listener whose connections are handed over on a channel.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "istiod-stand-in", Net: "unix"} }

// admit decodes an AdmissionReview, lets fn answer it, and encodes the response.
func admit(fn func(*admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "expected an AdmissionReview", http.StatusBadRequest)
			return
		}
		resp, err := fn(review.Request)
		if err != nil {
			resp = &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{Message: err.Error()}}
		}
		resp.UID = review.Request.UID
		review.Response = resp
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	}
}

// injectResponse allows the pod and, if inject, makes it look injected: an istio-proxy
// container, the sidecar.istio.io/status annotation and the security.istio.io/tlsMode label.
func injectResponse(r *admissionv1.AdmissionRequest, inject bool) (*admissionv1.AdmissionResponse, error) {
	resp := &admissionv1.AdmissionResponse{Allowed: true}
	if !inject || r.Kind.Kind != "Pod" {
		return resp, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(r.Object.Raw, &pod); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == "istio-proxy" {
			return resp, nil
		}
	}
	if pod.Annotations["sidecar.istio.io/inject"] == "false" || pod.Labels["sidecar.istio.io/inject"] == "false" || pod.Spec.HostNetwork {
		return resp, nil
	}
	var patch []map[string]any
	if pod.Annotations == nil {
		patch = append(patch, map[string]any{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
	}
	if pod.Labels == nil {
		patch = append(patch, map[string]any{"op": "add", "path": "/metadata/labels", "value": map[string]string{}})
	}
	status := `{"initContainers":null,"containers":["istio-proxy"],"volumes":[],"imagePullSecrets":null,"revision":"default"}`
	patch = append(patch,
		map[string]any{"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status", "value": status},
		map[string]any{"op": "add", "path": "/metadata/labels/security.istio.io~1tlsMode", "value": "istio"},
		map[string]any{"op": "add", "path": "/spec/containers/-", "value": corev1.Container{
			Name:  "istio-proxy",
			Image: "istio-proxy-stand-in:local",
			Args:  []string{"proxy", "sidecar"},
			Ports: []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: 15090, Protocol: corev1.ProtocolTCP}},
		}},
	)
	raw, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = raw, &pt
	return resp, nil
}

// validateResponse allows everything except the invalid Gateway (no servers) istiod's
// validation controller creates with dryRun to learn that its webhook works.
func validateResponse(r *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	if r.Kind.Group == "networking.istio.io" && r.Kind.Kind == "Gateway" {
		var gw struct {
			Spec struct {
				Servers []json.RawMessage `json:"servers"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(r.Object.Raw, &gw); err == nil && len(gw.Spec.Servers) == 0 {
			return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
				Message: "configuration is invalid: gateway must have at least one server (istiod stand-in)",
				Reason:  metav1.StatusReasonBadRequest, Code: 400,
			}}, nil
		}
	}
	return &admissionv1.AdmissionResponse{Allowed: true}, nil
}

// patchIstioWebhooks does what istiod does to its webhook configurations once it runs: the
// caBundle of every webhook that calls an istiod Service in istio-system (istiod patches
// the MutatingWebhookConfigurations labelled istio.io/rev=<its revision>, webhooks named
// *sidecar-injector.istio.io, and its revision's ValidatingWebhookConfigurations), and, for
// validating webhooks, failurePolicy Fail (istiod switches from the chart's Ignore to Fail
// after its dry-run probe is rejected). Polls every second; the stand-in serves any revision.
func patchIstioWebhooks(ctx context.Context, cs kubernetes.Interface, ca []byte) {
	fail := admregv1.Fail
	ours := func(cc admregv1.WebhookClientConfig) bool {
		return cc.Service != nil && cc.Service.Namespace == "istio-system" && strings.HasPrefix(cc.Service.Name, "istiod")
	}
	for {
		if mwcs, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{}); err == nil {
			for i := range mwcs.Items {
				c := &mwcs.Items[i]
				changed := false
				for j := range c.Webhooks {
					if ours(c.Webhooks[j].ClientConfig) && string(c.Webhooks[j].ClientConfig.CABundle) != string(ca) {
						c.Webhooks[j].ClientConfig.CABundle = ca
						changed = true
					}
				}
				if changed {
					_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, c, metav1.UpdateOptions{})
					log.Printf("patched caBundle of MutatingWebhookConfiguration %s: %v", c.Name, err)
				}
			}
		}
		if vwcs, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{}); err == nil {
			for i := range vwcs.Items {
				c := &vwcs.Items[i]
				changed := false
				for j := range c.Webhooks {
					wh := &c.Webhooks[j]
					if !ours(wh.ClientConfig) {
						continue
					}
					if string(wh.ClientConfig.CABundle) != string(ca) {
						wh.ClientConfig.CABundle = ca
						changed = true
					}
					if wh.FailurePolicy == nil || *wh.FailurePolicy != fail {
						wh.FailurePolicy = &fail
						changed = true
					}
				}
				if changed {
					_, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Update(ctx, c, metav1.UpdateOptions{})
					log.Printf("patched caBundle/failurePolicy of ValidatingWebhookConfiguration %s: %v", c.Name, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
