package main

// kiali-operator: a stand-in for what the Kiali operator (kiali/kiali-operator, an Ansible
// operator) does with a Kiali CR, because kwok runs no containers and meshstack's `kiali`
// stage waits for the Deployment the operator makes. Read from kiali-operator's watches.yaml
// (finalizer kiali.io/finalizer, playbook kiali-remove.yml on deletion), its
// roles/default/kiali-deploy (tasks/main.yml: deployment.namespace defaults to the CR's
// namespace, the same in 1.73 and 2.x; templates/kubernetes/{deployment,service}.yaml) and the
// kiali-operator chart (Deployment named after the release, labelled
// app.kubernetes.io/name=kiali-operator, watching all namespaces: WATCH_NAMESPACE "").
//
// For each kiali.io/v1alpha1 Kiali (while the CRD kialis.kiali.io exists; it may come later
// and go again), and only while an operator Deployment (label
// app.kubernetes.io/name=kiali-operator, any namespace) exists and is Available:
//   - adds the finalizer kiali.io/finalizer;
//   - in spec.deployment.namespace (default: the CR's namespace) creates a ServiceAccount
//     <instance>-service-account, a Service <instance> (port 20001 "http", 9090 "http-metrics")
//     and a Deployment <instance> (spec.deployment.instance_name, default "kiali"), labelled as
//     the operator labels them (app: kiali, app.kubernetes.io/name: kiali,
//     app.kubernetes.io/instance: <instance>, app.kubernetes.io/part-of: kiali, version), with
//     spec.deployment.replicas (default 1), the operator's strategy (rollingUpdate maxSurge 1,
//     maxUnavailable 1), container "kiali" with image
//     quay.io/kiali/kiali:<operator version> (the operator chart's appVersion, as the CR's
//     version "default" means), spec.deployment.node_selector and spec.deployment.tolerations;
//     a Deployment whose replicas/nodeSelector/tolerations differ from the CR is updated;
//   - sets status.deployment {instanceName, namespace} and the Ansible operator's conditions
//     (Running/Successful "Awaiting next reconciliation", Successful, Failure False);
//   - like the real operator (reconcilePeriod 0s, watchDependentResources false) it reconciles
//     a CR once per generation, and all CRs again when the operator becomes Available again
//     (a restarted operator does): a Deployment deleted by hand in between is not recreated;
//   - when the CR is being deleted: deletes that Deployment, Service and ServiceAccount, then
//     removes the finalizer, so the CR goes.
// When the operator is not Available (its chart uninstalled first, or not yet ready) nothing
// is done: a deleted CR keeps its finalizer and stays, as with the real operator gone.
//
// Not modelled: no Kiali server runs (nothing listens on 20001); no ConfigMap, Roles,
// RoleBindings, ClusterRoles, Ingress/Route, HPA, PDB or signing-key Secret; no reconcile of
// any other spec field (auth, external_services, server, resources, affinity, pod
// labels/annotations, image overrides, version mapping); no namespace discovery
// (accessible_namespaces / discovery_selectors / cluster_wide_access are ignored); no
// validation (e.g. instance_name or namespace changes, ALLOW_AD_HOC_* checks); no
// OSSMConsole; status.progress and status.environment are not written; no leader election.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"reflect"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

const (
	kialiFinalizer     = "kiali.io/finalizer"
	kialiOperatorLabel = "app.kubernetes.io/name=kiali-operator"
)

var kialiGVR = schema.GroupVersionResource{Group: "kiali.io", Version: "v1alpha1", Resource: "kialis"}

func runKialiOperator(ctx context.Context, args []string) error {
	fs := newFlags("kiali-operator")
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	interval := fs.Duration("interval", 500*time.Millisecond, "how often to look")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, dyn, _, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	k := &kialiOperator{cs: cs, kialis: dyn.Resource(kialiGVR), done: map[string]int64{}, lastErr: map[string]string{}}
	state := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
		op, version, err := k.operator(ctx)
		now := "operator available (" + op + ", " + version + ")"
		switch {
		case err != nil:
			now = "cannot list operator Deployments: " + err.Error()
		case op == "":
			now = "no Available kiali-operator Deployment: Kiali CRs are left alone"
		}
		if now != state {
			log.Print(now)
			state = now
		}
		if err != nil || op == "" {
			clear(k.done) // an operator that comes (back) reconciles every CR
			continue
		}
		list, err := k.kialis.Namespace("").List(ctx, metav1.ListOptions{})
		if err != nil {
			continue // the CRD is not installed (yet, or any more)
		}
		for i := range list.Items {
			cr := &list.Items[i]
			err := k.reconcile(ctx, cr, version)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if uid := string(cr.GetUID()); msg != k.lastErr[uid] { // each error once, not every tick
				if msg != "" {
					log.Printf("kiali %s/%s: %s (retrying)", cr.GetNamespace(), cr.GetName(), msg)
				}
				k.lastErr[uid] = msg
			}
		}
	}
}

type kialiOperator struct {
	cs      *kubernetes.Clientset
	kialis  dynamic.NamespaceableResourceInterface
	done    map[string]int64  // CR uid -> generation reconciled (status written)
	lastErr map[string]string // CR uid -> last reconcile error logged
}

// operator returns "namespace/name" and version (its app.kubernetes.io/version label, the
// chart's appVersion) of an Available kiali-operator Deployment, or "" if there is none.
func (k *kialiOperator) operator(ctx context.Context) (string, string, error) {
	deps, err := k.cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: kialiOperatorLabel})
	if err != nil {
		return "", "", err
	}
	for _, d := range deps.Items {
		if d.DeletionTimestamp != nil {
			continue
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				v := d.Labels["app.kubernetes.io/version"]
				if v == "" {
					v = "unknown"
				}
				return d.Namespace + "/" + d.Name, v, nil
			}
		}
	}
	return "", "", nil
}

// kialiDeploy is what the stand-in reads of a Kiali CR's spec.deployment.
type kialiDeploy struct {
	InstanceName string              `json:"instance_name"`
	Namespace    string              `json:"namespace"`
	Replicas     *int32              `json:"replicas"`
	NodeSelector map[string]string   `json:"node_selector"`
	Tolerations  []corev1.Toleration `json:"tolerations"`
}

func kialiSpec(cr *unstructured.Unstructured) (kialiDeploy, error) {
	var d kialiDeploy
	if raw, ok, _ := unstructured.NestedFieldNoCopy(cr.Object, "spec", "deployment"); ok && raw != nil {
		b, err := json.Marshal(raw)
		if err != nil {
			return d, err
		}
		if err := json.Unmarshal(b, &d); err != nil {
			return d, fmt.Errorf("spec.deployment: %w", err)
		}
	}
	if d.InstanceName == "" {
		d.InstanceName = "kiali"
	}
	if d.Namespace == "" {
		d.Namespace = cr.GetNamespace()
	}
	if d.Replicas == nil {
		one := int32(1)
		d.Replicas = &one
	}
	return d, nil
}

func (k *kialiOperator) reconcile(ctx context.Context, cr *unstructured.Unstructured, version string) error {
	spec, err := kialiSpec(cr)
	if err != nil {
		return err
	}
	// What was installed is recorded in status.deployment (the operator refuses to change it).
	if ns, ok, _ := unstructured.NestedString(cr.Object, "status", "deployment", "namespace"); ok && ns != "" {
		spec.Namespace = ns
	}
	if n, ok, _ := unstructured.NestedString(cr.Object, "status", "deployment", "instanceName"); ok && n != "" {
		spec.InstanceName = n
	}
	has := false
	for _, f := range cr.GetFinalizers() {
		has = has || f == kialiFinalizer
	}
	if cr.GetDeletionTimestamp() != nil {
		if !has {
			return nil
		}
		return k.remove(ctx, cr, spec)
	}
	if !has {
		cr.SetFinalizers(append(cr.GetFinalizers(), kialiFinalizer))
		updated, err := k.kialis.Namespace(cr.GetNamespace()).Update(ctx, cr, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("add finalizer: %w", err)
		}
		log.Printf("kiali %s/%s: finalizer %s added", cr.GetNamespace(), cr.GetName(), kialiFinalizer)
		cr = updated
	}
	if k.done[string(cr.GetUID())] == cr.GetGeneration() {
		return nil
	}
	if err := k.deploy(ctx, cr, spec, version); err != nil {
		return err
	}
	if err := k.writeStatus(ctx, cr, spec); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	k.done[string(cr.GetUID())] = cr.GetGeneration()
	return nil
}

func kialiLabels(instance, version string) map[string]string {
	return map[string]string{
		"app":                        "kiali",
		"version":                    version,
		"app.kubernetes.io/name":     "kiali",
		"app.kubernetes.io/version":  version,
		"app.kubernetes.io/instance": instance,
		"app.kubernetes.io/part-of":  "kiali",
	}
}

func (k *kialiOperator) deploy(ctx context.Context, cr *unstructured.Unstructured, spec kialiDeploy, version string) error {
	ns, name := spec.Namespace, spec.InstanceName
	labels := kialiLabels(name, version)
	where := fmt.Sprintf("kiali %s/%s:", cr.GetNamespace(), cr.GetName())

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name + "-service-account", Namespace: ns, Labels: labels}}
	if _, err := k.cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err == nil {
		log.Printf("%s serviceaccount %s/%s created", where, ns, sa.Name)
	} else if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount: %w", err)
	}

	selector := map[string]string{"app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": name}
	http := "http"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, AppProtocol: &http, Port: 20001, TargetPort: intstr.FromInt32(20001)},
				{Name: "http-metrics", Protocol: corev1.ProtocolTCP, AppProtocol: &http, Port: 9090, TargetPort: intstr.FromInt32(9090)},
			},
		},
	}
	if _, err := k.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err == nil {
		log.Printf("%s service %s/%s created", where, ns, name)
	} else if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service: %w", err)
	}

	image := "quay.io/kiali/kiali:" + version
	if !strings.HasPrefix(version, "v") {
		image = "quay.io/kiali/kiali:latest"
	}
	one := intstr.FromInt32(1) // the operator's rollingUpdate
	podSpec := corev1.PodSpec{
		ServiceAccountName: sa.Name,
		NodeSelector:       spec.NodeSelector,
		Tolerations:        spec.Tolerations,
		Containers: []corev1.Container{{
			Name:    "kiali",
			Image:   image,
			Command: []string{"/opt/kiali/kiali", "-config", "/kiali-configuration/config.yaml"},
			Ports: []corev1.ContainerPort{
				{Name: "api-port", ContainerPort: 20001},
				{Name: "http-metrics", ContainerPort: 9090},
			},
			Env: []corev1.EnvVar{{Name: "ACTIVE_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
		}},
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: spec.Replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &one, MaxUnavailable: &one}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
					Annotations: map[string]string{"kiali.io/dashboards": "go,kiali"}},
				Spec: podSpec,
			},
		},
	}
	deps := k.cs.AppsV1().Deployments(ns)
	cur, err := deps.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := deps.Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("deployment: %w", err)
		}
		log.Printf("%s deployment %s/%s created (image %s, nodeSelector %v)", where, ns, name, image, spec.NodeSelector)
		return nil
	}
	if err != nil {
		return fmt.Errorf("deployment: %w", err)
	}
	// The fields modelled follow the CR.
	ps := &cur.Spec.Template.Spec
	if *cur.Spec.Replicas == *spec.Replicas && mapsEqual(ps.NodeSelector, spec.NodeSelector) &&
		(len(ps.Tolerations) == 0 && len(spec.Tolerations) == 0 || reflect.DeepEqual(ps.Tolerations, spec.Tolerations)) {
		return nil
	}
	cur.Spec.Replicas = spec.Replicas
	ps.NodeSelector = spec.NodeSelector
	ps.Tolerations = spec.Tolerations
	if _, err := deps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("deployment update: %w", err)
	}
	log.Printf("%s deployment %s/%s updated (replicas %d, nodeSelector %v)", where, ns, name, *spec.Replicas, spec.NodeSelector)
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// writeStatus sets what the Ansible operator and the kiali-deploy role leave in the status
// after a successful reconcile (conditions as operator-sdk's Ansible operator writes them).
func (k *kialiOperator) writeStatus(ctx context.Context, cr *unstructured.Unstructured, spec kialiDeploy) error {
	now := time.Now().UTC().Format(time.RFC3339)
	status := map[string]any{
		"deployment": map[string]any{
			"instanceName": spec.InstanceName,
			"namespace":    spec.Namespace,
		},
		"conditions": []any{
			map[string]any{"type": "Failure", "status": "False", "reason": "", "message": "", "lastTransitionTime": now},
			map[string]any{"type": "Running", "status": "True", "reason": "Successful",
				"message": "Awaiting next reconciliation", "lastTransitionTime": now},
			map[string]any{"type": "Successful", "status": "True", "reason": "Successful",
				"message": "Last reconciliation succeeded", "lastTransitionTime": now},
		},
	}
	for attempt := 0; ; attempt++ {
		cr.Object["status"] = status
		_, err := k.kialis.Namespace(cr.GetNamespace()).UpdateStatus(ctx, cr, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) || attempt == 3 {
			if err == nil {
				log.Printf("kiali %s/%s: status Successful (generation %d)", cr.GetNamespace(), cr.GetName(), cr.GetGeneration())
			}
			return err
		}
		if cr, err = k.kialis.Namespace(cr.GetNamespace()).Get(ctx, cr.GetName(), metav1.GetOptions{}); err != nil {
			return err
		}
	}
}

// remove is kiali-remove.yml: the resources go, then the finalizer, so the CR goes.
func (k *kialiOperator) remove(ctx context.Context, cr *unstructured.Unstructured, spec kialiDeploy) error {
	ns, name := spec.Namespace, spec.InstanceName
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	for _, del := range []struct {
		kind, name string
		fn         func() error
	}{
		{"deployment", name, func() error { return k.cs.AppsV1().Deployments(ns).Delete(ctx, name, opts) }},
		{"service", name, func() error { return k.cs.CoreV1().Services(ns).Delete(ctx, name, opts) }},
		{"serviceaccount", name + "-service-account", func() error {
			return k.cs.CoreV1().ServiceAccounts(ns).Delete(ctx, name+"-service-account", opts)
		}},
	} {
		err := del.fn()
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", del.kind, err)
		}
		if err == nil {
			log.Printf("kiali %s/%s deleted: %s %s/%s deleted", cr.GetNamespace(), cr.GetName(), del.kind, ns, del.name)
		}
	}
	var keep []string
	for _, f := range cr.GetFinalizers() {
		if f != kialiFinalizer {
			keep = append(keep, f)
		}
	}
	cr.SetFinalizers(keep)
	if _, err := k.kialis.Namespace(cr.GetNamespace()).Update(ctx, cr, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	delete(k.done, string(cr.GetUID()))
	log.Printf("kiali %s/%s deleted: finalizer %s removed", cr.GetNamespace(), cr.GetName(), kialiFinalizer)
	return nil
}
