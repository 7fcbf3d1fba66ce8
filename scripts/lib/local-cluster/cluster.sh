# shellcheck shell=bash
# LC_BIN_* and LC_REPO come from build.sh (lc_build_all) and the local-cluster script.
# shellcheck disable=SC2154
# start/stop of one local cluster in a directory. Layout of DIR:
#   kubeconfig        admin kubeconfig (client certificate in system:masters), 0600
#   env               sourceable: KUBECONFIG, PATH, MESHSTACK_CHART_MIRROR, MESHSTACK_KUBE_API,
#                     MESHSTACK_KUBE_CA_FILE, MESHSTACK_LOCAL_CLUSTER_DIR (+ HELM_*_HOME)
#   audit.log         the API server's audit log: a JSON line per request (user agent, verb, URI)
#   admin-token       a static bearer token for the same admin user (curl -H "Authorization: Bearer ...")
#   pki/              ca.crt (= MESHSTACK_KUBE_CA_FILE), ca.key, serving/client certificates
#   bin/              helm (the chosen major), helm3, helm4, testenv
#   logs/<name>.log   each process's output (kiali-operator.log: the Kiali operator stand-in)
#   pids/<name>.pid   "PID STARTTIME" of each process; each runs in its own process group
#   run/              addresses (*.addr), the egress socket, generated configs
#   etcd/             etcd's data (kept across stop/start)
#   helm/             HELM_CONFIG_HOME, HELM_CACHE_HOME, HELM_DATA_HOME of this cluster

LC_SERVICE_CIDR=10.96.0.0/16
LC_POD_CIDR=10.244.0.0/16
LC_KUBELET_PORT=10250

lc_die() {
	printf 'local-cluster: %s\n' "$*" >&2
	exit 1
}

lc_log() { printf 'local-cluster: %s\n' "$*" >&2; }

# "PID STARTTIME" of a live process, so stop never signals a recycled pid.
lc_proc_id() {
	local pid=$1 stat
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	# field 22 of stat is starttime; after "comm) " it is field 20
	printf '%s %s\n' "$pid" "$(awk '{print $20}' <<<"$stat")"
}

lc_alive() { # NAME: true if DIR/pids/NAME.pid names a live process (not a zombie)
	local f=$LC_DIR/pids/$1.pid rec stat
	[[ -f $f ]] || return 1
	rec=$(<"$f")
	[[ $(lc_proc_id "${rec%% *}" 2>/dev/null) == "$rec" ]] || return 1
	# An exited process stays a zombie until its parent (init, once start has returned) reaps it.
	stat=$(cat "/proc/${rec%% *}/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# lc_spawn NAME CMD...: runs CMD in its own session/process group (setsid: pid = pgid),
# output to logs/NAME.log, and records it.
lc_spawn() {
	local name=$1
	shift
	setsid "$@" </dev/null >>"$LC_DIR/logs/$name.log" 2>&1 &
	local pid=$!
	disown "$pid" # no job-control notices when stop kills it
	lc_proc_id "$pid" >"$LC_DIR/pids/$name.pid.tmp" || lc_die "$name exited at once; see $LC_DIR/logs/$name.log: $(tail -5 "$LC_DIR/logs/$name.log")"
	mv "$LC_DIR/pids/$name.pid.tmp" "$LC_DIR/pids/$name.pid"
	LC_STARTED+=("$name")
}

# lc_wait WHAT SECONDS NAME CMD...: polls CMD until it succeeds; fails early if process
# NAME died.
lc_wait() {
	local what=$1 secs=$2 name=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [[ -n $name ]] && ! lc_alive "$name"; then
			lc_die "$name exited while waiting for $what; last lines of $LC_DIR/logs/$name.log:
$(tail -15 "$LC_DIR/logs/$name.log")"
		fi
		((SECONDS < deadline)) || lc_die "timed out after ${secs}s waiting for $what (logs in $LC_DIR/logs)"
		sleep 0.2
	done
}

lc_wait_file() { [[ -s $1 ]]; }

# lc_wait_bound WHAT SECONDS NAME CMD...: lc_wait, except that it returns 1 when process NAME
# exited because its port was taken in the meantime (another cluster starting got it between
# `testenv freeport` and the bind), so the caller can pick other ports.
lc_wait_bound() {
	local what=$1 secs=$2 name=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! lc_alive "$name"; then
			tail -20 "$LC_DIR/logs/$name.log" | grep -q 'address already in use' && return 1
			lc_die "$name exited while waiting for $what; last lines of $LC_DIR/logs/$name.log:
$(tail -15 "$LC_DIR/logs/$name.log")"
		fi
		((SECONDS < deadline)) || lc_die "timed out after ${secs}s waiting for $what (logs in $LC_DIR/logs)"
		sleep 0.2
	done
}

# ECDSA P-256 keys (PKCS#8): a 2048-bit RSA key takes openssl ~0.3 s, seven of them were a
# third of a start; Go (kube-apiserver, client-go), rustls and openssl all take these.
lc_genkey() { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null); }

lc_openssl_cert() { # NAME SUBJ EXT: key + certificate signed by the cluster CA
	local name=$1 subj=$2 ext=$3 pki=$LC_DIR/pki
	[[ -s $pki/$name.crt && -s $pki/$name.key ]] && return 0
	lc_genkey "$pki/$name.key"
	openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
	openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 825 -sha256 -extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt" 2>/dev/null
	rm -f "$pki/$name.csr"
}

lc_pki() {
	local pki=$LC_DIR/pki
	(umask 077 && mkdir -p "$pki")
	if [[ ! -s $pki/ca.crt ]]; then
		lc_genkey "$pki/ca.key"
		openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=meshstack-local-cluster-ca" -days 3650 -sha256 \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
			-out "$pki/ca.crt" 2>/dev/null
	fi
	local server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
	local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	lc_openssl_cert apiserver "/CN=kube-apiserver" "$server
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
	lc_openssl_cert admin "/O=system:masters/CN=meshstack-local-admin" "$client"
	lc_openssl_cert istiod "/CN=istiod.istio-system.svc" "$server
subjectAltName=DNS:istiod.istio-system.svc,DNS:istiod.istio-system.svc.cluster.local,DNS:*.istio-system.svc,DNS:istiod.istio-system"
	lc_openssl_cert kubelet "/CN=kwok-kubelet" "$server
subjectAltName=IP:127.0.0.1,DNS:localhost"
	lc_openssl_cert authn "/CN=meshstack-local-authn" "$server
subjectAltName=IP:127.0.0.1,DNS:localhost"
	if [[ ! -s $pki/sa.key ]]; then
		lc_genkey "$pki/sa.key"
		openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	fi
	if [[ ! -s $LC_DIR/admin-token ]]; then
		(umask 077 && openssl rand -hex 24 >"$LC_DIR/admin-token")
	fi
	(umask 077 && printf '%s,meshstack-local-admin,meshstack-local-admin,system:masters\n' "$(<"$LC_DIR/admin-token")" >"$pki/tokens.csv")
	chmod 0600 "$pki"/*
}

lc_b64() { base64 -w0 <"$1"; }

lc_write_kubeconfig() { # PATH SERVER
	local tmp
	tmp=$(mktemp "$LC_DIR/.kubeconfig.XXXXXX")
	cat >"$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $2
    certificate-authority-data: $(lc_b64 "$LC_DIR/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(lc_b64 "$LC_DIR/pki/admin.crt")
    client-key-data: $(lc_b64 "$LC_DIR/pki/admin.key")
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
KC
	chmod 0600 "$tmp"
	mv "$tmp" "$1"
}

lc_curl_api() { # PATH: GET on the API server as admin
	curl -fsS --max-time 5 --cacert "$LC_DIR/pki/ca.crt" -H "Authorization: Bearer $(<"$LC_DIR/admin-token")" \
		"$LC_API$1"
}

lc_readyz() { [[ $(lc_curl_api /readyz) == ok ]]; }

lc_start() {
	local zones=us-east-1a,us-east-1b,us-east-1c per_zone=2 system_per_zone=1 node_labels="" cluster_name="" sts_endpoint="" aws_secret=""
	[[ $# -ge 1 ]] || lc_die "usage: local-cluster start DIR [--zones a,b,c] [--nodes-per-zone N] [--system-nodes-per-zone N] [--node-labels k=v,...] [--cluster-name NAME --sts-endpoint URL [--aws-secret-access-key KEY]]"
	local dir=$1
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
		--zones) zones=$2; shift 2 ;;
		--zones=*) zones=${1#*=}; shift ;;
		--nodes-per-zone) per_zone=$2; shift 2 ;;
		--nodes-per-zone=*) per_zone=${1#*=}; shift ;;
		--system-nodes-per-zone) system_per_zone=$2; shift 2 ;;
		--system-nodes-per-zone=*) system_per_zone=${1#*=}; shift ;;
		--node-labels) node_labels=$2; shift 2 ;;
		--node-labels=*) node_labels=${1#*=}; shift ;;
		--cluster-name) cluster_name=$2; shift 2 ;;
		--cluster-name=*) cluster_name=${1#*=}; shift ;;
		--sts-endpoint) sts_endpoint=$2; shift 2 ;;
		--sts-endpoint=*) sts_endpoint=${1#*=}; shift ;;
		--aws-secret-access-key) aws_secret=$2; shift 2 ;;
		--aws-secret-access-key=*) aws_secret=${1#*=}; shift ;;
		*) lc_die "unknown option $1" ;;
		esac
	done
	[[ $per_zone =~ ^[1-9][0-9]?$ ]] || lc_die "--nodes-per-zone: want 1..99"
	[[ $system_per_zone =~ ^[0-9]$ ]] || lc_die "--system-nodes-per-zone: want 0..9"
	[[ -z $node_labels || $node_labels =~ ^[^=,]+=[^=,]*(,[^=,]+=[^=,]*)*$ ]] || lc_die "--node-labels: want k=v,k2=v2"
	[[ $zones =~ ^[a-z0-9-]+(,[a-z0-9-]+)*$ ]] || lc_die "--zones: want a comma-separated list like us-east-1a,us-east-1b"
	[[ -n $cluster_name && -z $sts_endpoint || -z $cluster_name && -n $sts_endpoint ]] &&
		lc_die "--cluster-name and --sts-endpoint go together"
	local helm_major=${MESHSTACK_HELM_MAJOR:-3}
	[[ $helm_major == 3 || $helm_major == 4 ]] || lc_die "MESHSTACK_HELM_MAJOR must be 3 or 4"

	(umask 077 && mkdir -p "$dir")
	LC_DIR=$(cd "$dir" && pwd)
	local n
	for n in "$LC_DIR"/pids/*.pid; do
		[[ -e $n ]] || continue
		n=${n##*/}
		if lc_alive "${n%.pid}"; then
			lc_die "a cluster is already running in $LC_DIR (${n%.pid}); run: local-cluster stop $LC_DIR"
		fi
	done
	local t_start=$SECONDS
	lc_build_all
	local t_built=$SECONDS

	rm -rf "$LC_DIR/pids" "$LC_DIR/run" "$LC_DIR/env"
	(umask 077 && mkdir -p "$LC_DIR"/{pids,logs,run,bin,helm,etcd})
	LC_STARTED=()
	# Any failure from here on stops what was started.
	trap 'rc=$?; if ((rc != 0)); then lc_log "start failed; stopping what was started"; lc_stop_dir; fi' EXIT

	lc_pki
	local -a ports
	mapfile -t ports < <("$LC_BIN_testenv" freeport 4)
	local etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]} kwok_port=${ports[3]}
	LC_API=https://127.0.0.1:$api_port

	# Unix socket paths are limited to 107 bytes; a deep DIR gets a private temporary directory.
	local sock=$LC_DIR/run/egress.sock
	if ((${#sock} > 100)); then
		local sockdir
		sockdir=$(mktemp -d "${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/meshstack-lc-XXXXXX")
		printf '%s\n' "$sockdir" >"$LC_DIR/run/sockdir"
		sock=$sockdir/egress.sock
	fi

	# --- etcd
	local attempt
	for attempt in 1 2 3; do
		lc_spawn etcd "$LC_BIN_etcd" --name=default --data-dir="$LC_DIR/etcd" \
			--listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
			--listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
			--initial-cluster="default=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true --log-level=warn \
			--quota-backend-bytes=$((2 * 1024 * 1024 * 1024))
		lc_wait_bound "etcd" 30 etcd curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" && break
		((attempt < 3)) || lc_die "etcd: its ports were taken three times"
		lc_log "etcd: port taken meanwhile; trying others"
		mapfile -t ports < <("$LC_BIN_testenv" freeport 2)
		etcd_port=${ports[0]} peer_port=${ports[1]}
	done

	# --- EKS-style token authentication (optional)
	local -a authn_flags=()
	if [[ -n $cluster_name ]]; then
		lc_spawn authn "$LC_BIN_testenv" authn --cluster-name="$cluster_name" --sts-endpoint="$sts_endpoint" \
			${aws_secret:+--aws-secret-access-key="$aws_secret"} \
			--cert="$LC_DIR/pki/authn.crt" --key="$LC_DIR/pki/authn.key" --addr-file="$LC_DIR/run/authn.addr"
		lc_wait "token authenticator" 10 authn lc_wait_file "$LC_DIR/run/authn.addr"
		cat >"$LC_DIR/run/authn-webhook.kubeconfig" <<EOC
apiVersion: v1
kind: Config
clusters:
- name: authn
  cluster:
    server: https://$(<"$LC_DIR/run/authn.addr")/authenticate
    certificate-authority: $LC_DIR/pki/ca.crt
users:
- name: apiserver
  user: {}
contexts:
- name: authn
  context: {cluster: authn, user: apiserver}
current-context: authn
EOC
		authn_flags=(--authentication-token-webhook-config-file="$LC_DIR/run/authn-webhook.kubeconfig"
			--authentication-token-webhook-version=v1 --authentication-token-webhook-cache-ttl=10s)
	fi

	cat >"$LC_DIR/run/egress-selector.yaml" <<EOC
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: $sock
EOC

	# The audit log: one JSON line per request (who, user agent, verb, URI, code), so tests
	# count what meshstack and helm asked of the server (the server keeps no per-client count).
	cat >"$LC_DIR/run/audit-policy.yaml" <<EOC
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOC

	# --- kube-apiserver (its "cluster" egress socket is served by the egress process started
	# next; the API server dials it only when it calls a webhook Service or a kubelet)
	for attempt in 1 2 3; do
		LC_API=https://127.0.0.1:$api_port
		lc_write_kubeconfig "$LC_DIR/kubeconfig" "$LC_API"
		lc_spawn kube-apiserver "$LC_BIN_kube_apiserver" \
			--etcd-servers="http://127.0.0.1:$etcd_port" \
			--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
			--endpoint-reconciler-type=none \
			--tls-cert-file="$LC_DIR/pki/apiserver.crt" --tls-private-key-file="$LC_DIR/pki/apiserver.key" \
			--client-ca-file="$LC_DIR/pki/ca.crt" --token-auth-file="$LC_DIR/pki/tokens.csv" \
			--service-account-issuer=https://kubernetes.default.svc.cluster.local \
			--service-account-key-file="$LC_DIR/pki/sa.pub" --service-account-signing-key-file="$LC_DIR/pki/sa.key" \
			--service-cluster-ip-range="$LC_SERVICE_CIDR" \
			--authorization-mode=Node,RBAC --allow-privileged=true \
			--egress-selector-config-file="$LC_DIR/run/egress-selector.yaml" \
			--kubelet-client-certificate="$LC_DIR/pki/admin.crt" --kubelet-client-key="$LC_DIR/pki/admin.key" \
			--audit-policy-file="$LC_DIR/run/audit-policy.yaml" --audit-log-path="$LC_DIR/audit.log" \
			--audit-log-format=json --audit-log-maxsize=0 \
			--profiling=false "${authn_flags[@]}"
		lc_wait_bound "kube-apiserver /readyz" 90 kube-apiserver lc_readyz && break
		((attempt < 3)) || lc_die "kube-apiserver: its port was taken three times"
		lc_log "kube-apiserver: port taken meanwhile; trying another"
		api_port=$("$LC_BIN_testenv" freeport)
	done

	# --- the "cluster" egress: istiod stand-in + kubelet (kwok) routing; see testenv/cmd/testenv/egress.go
	lc_spawn egress "$LC_BIN_testenv" egress --socket="$sock" --kubeconfig="$LC_DIR/kubeconfig" \
		--kubelet-port="$LC_KUBELET_PORT" --kubelet-target-file="$LC_DIR/run/kwok.addr" \
		--cert="$LC_DIR/pki/istiod.crt" --key="$LC_DIR/pki/istiod.key" --ca="$LC_DIR/pki/ca.crt"
	lc_wait "egress socket" 10 egress test -S "$sock"

	local t_api=$SECONDS

	# --- controllers
	lc_spawn kube-controller-manager "$LC_BIN_kube_controller_manager" \
		--kubeconfig="$LC_DIR/kubeconfig" --secure-port=0 --leader-elect=false \
		--service-account-private-key-file="$LC_DIR/pki/sa.key" --root-ca-file="$LC_DIR/pki/ca.crt" \
		--cluster-signing-cert-file="$LC_DIR/pki/ca.crt" --cluster-signing-key-file="$LC_DIR/pki/ca.key" \
		--service-cluster-ip-range="$LC_SERVICE_CIDR" --cluster-cidr="$LC_POD_CIDR" --allocate-node-cidrs=false \
		--controllers='*' --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 --concurrent-gc-syncs=20
	lc_spawn kube-scheduler "$LC_BIN_kube_scheduler" --kubeconfig="$LC_DIR/kubeconfig" --secure-port=0 --leader-elect=false
	lc_spawn lb-controller "$LC_BIN_testenv" lb-controller --kubeconfig="$LC_DIR/kubeconfig"
	# Karpenter's effect on its nodes: a deleted NodePool's nodes go, and come back with it.
	lc_spawn karpenter "$LC_BIN_testenv" karpenter --kubeconfig="$LC_DIR/kubeconfig"
	# The Kiali operator's effect: a Kiali CR's Deployment/Service and finalizer, while the
	# kiali-operator chart's Deployment is Available (kwok runs no operator).
	lc_spawn kiali-operator "$LC_BIN_testenv" kiali-operator --kubeconfig="$LC_DIR/kubeconfig"

	# --- kwok: its port-forward CRDs, then the controller for nodes annotated kwok.x-k8s.io/node=fake.
	# --node-lease-duration-seconds must be given: with --config, kwok's default (40) is not
	# applied, no node Lease is renewed, and the node lifecycle controller marks every node
	# NotReady after 50 s (then kwok's node-initialize stage makes it Ready again: flapping).
	local kwok_share=${LC_BIN_kwok%/*}
	"$LC_BIN_testenv" apply --kubeconfig="$LC_DIR/kubeconfig" "$kwok_share/crds.yaml" >&2
	for attempt in 1 2 3; do
		printf '127.0.0.1:%s\n' "$kwok_port" >"$LC_DIR/run/kwok.addr.tmp"
		mv "$LC_DIR/run/kwok.addr.tmp" "$LC_DIR/run/kwok.addr"
		lc_spawn kwok "$LC_BIN_kwok" --kubeconfig="$LC_DIR/kubeconfig" --config="$kwok_share/stages.yaml" \
			--manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
			--node-port="$LC_KUBELET_PORT" --server-address="127.0.0.1:$kwok_port" \
			--tls-cert-file="$LC_DIR/pki/kubelet.crt" --tls-private-key-file="$LC_DIR/pki/kubelet.key" \
			--cidr=10.244.255.1/24 --enable-crds=PortForward,ClusterPortForward \
			--node-lease-duration-seconds=40
		lc_wait_bound "kwok's kubelet server" 30 kwok curl -fsSk --max-time 2 -o /dev/null "https://127.0.0.1:$kwok_port/healthz" && break
		((attempt < 3)) || lc_die "kwok: its port was taken three times"
		lc_log "kwok: port taken meanwhile; trying another"
		kwok_port=$("$LC_BIN_testenv" freeport)
	done

	# --- chart repository: the pinned chart folder the tests use, MESHSTACK_TEST_CHARTS (as
	# scripts/test sets it), else ../shared/charts beside the repository.
	local charts=${MESHSTACK_TEST_CHARTS:-$LC_REPO/../shared/charts} mirror=""
	if [[ -f $charts/index.yaml ]]; then
		charts=$(cd "$charts" && pwd)
		lc_spawn charts "$LC_BIN_testenv" serve-charts --dir="$charts" --addr-file="$LC_DIR/run/charts.addr"
		lc_wait "chart repository" 10 charts lc_wait_file "$LC_DIR/run/charts.addr"
		mirror=http://$(<"$LC_DIR/run/charts.addr")/
		lc_log "chart repository: $charts at $mirror"
	elif [[ -n ${MESHSTACK_TEST_CHARTS:-} ]]; then
		lc_die "MESHSTACK_TEST_CHARTS=$MESHSTACK_TEST_CHARTS holds no index.yaml: not a chart repository"
	else
		lc_log "no chart repository at $charts (set MESHSTACK_TEST_CHARTS to a chart folder); MESHSTACK_CHART_MIRROR not set"
	fi

	# --- nodes, and wait for them
	local nzones
	IFS=, read -ra nzones <<<"$zones"
	"$LC_BIN_testenv" nodes --kubeconfig="$LC_DIR/kubeconfig" --zones="$zones" --per-zone="$per_zone" \
		--system-per-zone="$system_per_zone" --node-labels="$node_labels" >&2
	"$LC_BIN_testenv" wait-ready --kubeconfig="$LC_DIR/kubeconfig" --nodes=$((${#nzones[@]} * (per_zone + system_per_zone))) --timeout=120s >&2 ||
		lc_die "nodes not Ready; see $LC_DIR/logs/kwok.log and kube-controller-manager.log"

	# --- a watchdog: if DIR is deleted without `stop` (a test's temporary directory removed
	# after a panic), it stops the cluster's process groups instead of leaving them running.
	local pgids="" f
	for f in "$LC_DIR"/pids/*.pid; do
		pgids+="${pgids:+,}$(cut -d' ' -f1 "$f")"
	done
	lc_spawn watchdog "$LC_BIN_testenv" watchdog --watch="$LC_DIR/kubeconfig" --pgids="$pgids"

	# --- bin/ and env
	ln -sfn "$LC_BIN_helm3" "$LC_DIR/bin/helm3"
	ln -sfn "$LC_BIN_helm4" "$LC_DIR/bin/helm4"
	ln -sfn "$LC_BIN_testenv" "$LC_DIR/bin/testenv"
	if [[ $helm_major == 4 ]]; then ln -sfn "$LC_BIN_helm4" "$LC_DIR/bin/helm"; else ln -sfn "$LC_BIN_helm3" "$LC_DIR/bin/helm"; fi
	(umask 077 && mkdir -p "$LC_DIR/helm/config" "$LC_DIR/helm/cache" "$LC_DIR/helm/data")
	local tmp
	tmp=$(mktemp "$LC_DIR/.env.XXXXXX")
	{
		printf '# local-cluster %s: source this file\n' "$LC_DIR"
		printf 'export KUBECONFIG=%q\n' "$LC_DIR/kubeconfig"
		# shellcheck disable=SC2016 # $PATH expands when env is sourced
		printf 'export PATH=%q:"$PATH"\n' "$LC_DIR/bin"
		[[ -n $mirror ]] && printf 'export MESHSTACK_CHART_MIRROR=%q\n' "$mirror"
		printf 'export MESHSTACK_KUBE_API=%q\n' "$LC_API"
		printf 'export MESHSTACK_KUBE_CA_FILE=%q\n' "$LC_DIR/pki/ca.crt"
		printf 'export MESHSTACK_LOCAL_CLUSTER_DIR=%q\n' "$LC_DIR"
		printf 'export HELM_CONFIG_HOME=%q HELM_CACHE_HOME=%q HELM_DATA_HOME=%q\n' \
			"$LC_DIR/helm/config" "$LC_DIR/helm/cache" "$LC_DIR/helm/data"
	} >"$tmp"
	chmod 0600 "$tmp"
	mv "$tmp" "$LC_DIR/env"
	trap - EXIT
	lc_log "cluster up in $LC_DIR: API $LC_API, ${#nzones[@]} zones x ($system_per_zone system + $per_zone app) nodes, helm $helm_major${mirror:+, charts $mirror}"
	lc_log "timing: build/cache check $((t_built - t_start))s, API ready $((t_api - t_built))s, nodes Ready $((SECONDS - t_built))s after build"
	printf '%s\n' "$LC_DIR/env"
}

# Stops every process recorded in LC_DIR/pids, newest first: SIGTERM to its process group,
# then SIGKILL after 10 s. Idempotent.
lc_stop_dir() {
	local order=(watchdog kwok charts kiali-operator karpenter lb-controller kube-scheduler kube-controller-manager kube-apiserver authn egress etcd)
	local name f rec pid
	for f in "$LC_DIR"/pids/*.pid; do
		[[ -e $f ]] || continue
		name=${f##*/}
		name=${name%.pid}
		[[ " ${order[*]} " == *" $name "* ]] || order=("$name" "${order[@]}")
	done
	local -a live=()
	for name in "${order[@]}"; do
		f=$LC_DIR/pids/$name.pid
		[[ -f $f ]] || continue
		if lc_alive "$name"; then
			rec=$(<"$f")
			pid=${rec%% *}
			kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
			live+=("$name")
			# etcd last, after the API server is gone. kube-apiserver's graceful shutdown waits
			# up to 60 s for requests still in flight (long-running ones from clients already
			# stopped); the cluster is disposable, so it gets 2 s, then SIGKILL.
			if [[ $name == kube-apiserver ]]; then
				local i
				for ((i = 0; i < 20; i++)); do lc_alive kube-apiserver || break; sleep 0.1; done
				lc_alive kube-apiserver && { kill -KILL -- "-$pid" 2>/dev/null || true; }
				for ((i = 0; i < 20; i++)); do lc_alive kube-apiserver || break; sleep 0.1; done
			fi
		else
			rm -f "$f"
		fi
	done
	local deadline=$((SECONDS + 10))
	for name in "${live[@]}"; do
		while lc_alive "$name" && ((SECONDS < deadline)); do sleep 0.1; done
		if lc_alive "$name"; then
			rec=$(<"$LC_DIR/pids/$name.pid")
			pid=${rec%% *}
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$LC_DIR/pids/$name.pid"
	done
	if [[ -f $LC_DIR/run/sockdir ]]; then
		local sd
		sd=$(<"$LC_DIR/run/sockdir")
		[[ $sd == */meshstack-lc-* ]] && rm -rf "$sd"
		rm -f "$LC_DIR/run/sockdir"
	fi
	((${#live[@]} == 0)) || lc_log "stopped ${live[*]} in $LC_DIR"
}

lc_stop() {
	[[ $# -eq 1 ]] || lc_die "usage: local-cluster stop DIR"
	[[ -d $1 ]] || return 0
	LC_DIR=$(cd "$1" && pwd)
	lc_stop_dir
	rm -f "$LC_DIR/env"
}
