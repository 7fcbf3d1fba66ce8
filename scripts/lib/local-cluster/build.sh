# shellcheck shell=bash
# LC_BIN_* are read by cluster.sh and the local-cluster script.
# shellcheck disable=SC2034
# Builds (once) and caches the pinned binaries of the local control plane.
#
# Every binary is built from Go modules with the Go toolchain (no release downloads, no
# images) and cached by name and version:
#   ${MESHSTACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack}/bin/<name>-<version>/<binary>
# A build goes to a temporary directory next to its final place and is renamed into place,
# so a cache entry is either complete or absent; builds are serialized with a lock file so
# two clusters starting at once build each binary once. Directories are created 0700.
#
# The versions are the pins in testenv/*/go.mod (each names its source and date there).

LC_TESTENV=${LC_REPO:?}/testenv

lc_cache_bin() {
	printf '%s/bin' "${MESHSTACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshstack}"
}

# lc_pin MODULE_DIR MODULE_PATH: the version go.mod in MODULE_DIR requires for MODULE_PATH.
lc_pin() {
	awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { v = ($1 == "require") ? $3 : $2; print v; exit }' "$1/go.mod"
}

# lc_build NAME VERSION MODULE_DIR PACKAGE LDFLAGS: prints the cached binary's path,
# building it first if it is not cached. Progress and timing go to stderr.
lc_build() {
	local name=$1 version=$2 moddir=$3 pkg=$4 ldflags=$5
	local root dest
	root=$(lc_cache_bin)
	dest=$root/$name-$version/$name
	if [[ -x $dest ]]; then
		printf '%s\n' "$dest"
		return 0
	fi
	(umask 077 && mkdir -p "$root")
	local lockfd
	exec {lockfd}>>"$root/.build.lock"
	flock "$lockfd"
	if [[ ! -x $dest ]]; then
		local tmp t0=$SECONDS
		tmp=$(mktemp -d "$root/.tmp-$name-$version-XXXXXX")
		printf 'local-cluster: building %s %s (%s) ...\n' "$name" "$version" "$pkg" >&2
		if ! (cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$pkg") >&2; then
			rm -rf "$tmp"
			exec {lockfd}>&-
			printf 'local-cluster: building %s failed\n' "$name" >&2
			return 1
		fi
		# Extra files shipped with the binary (kwok's stages and CRDs).
		if declare -F "lc_extra_$name" >/dev/null; then
			"lc_extra_$name" "$moddir" "$tmp" || { rm -rf "$tmp"; exec {lockfd}>&-; return 1; }
		fi
		chmod 0700 "$tmp"
		mv -T "$tmp" "$root/$name-$version" 2>/dev/null || rm -rf "$tmp"
		printf 'local-cluster: built %s %s in %ss\n' "$name" "$version" "$((SECONDS - t0))" >&2
	fi
	exec {lockfd}>&-
	printf '%s\n' "$dest"
}

# kwok's stages (node-initialize, node heartbeat with lease, pod ready/complete/delete: the
# "fast" set kwokctl uses) and the CRDs of its port-forward API, from the pinned module source.
lc_extra_kwok() {
	local src
	src=$(cd "$1" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok) || return 1
	{
		local f first=1
		for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
			pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
			((first)) || printf -- '---\n'
			first=0
			cat "$src/kustomize/stage/$f"
		done
	} >"$2/stages.yaml"
	cat "$src/kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml" >"$2/crds.yaml"
	printf -- '---\n' >>"$2/crds.yaml"
	cat "$src/kustomize/crd/bases/kwok.x-k8s.io_clusterportforwards.yaml" >>"$2/crds.yaml"
}

# The Kubernetes version stamp kube's own build sets (hack/lib/version.sh): without it the
# API server reports v0.0.0 and charts' kubeVersion constraints fail.
lc_kube_ldflags() {
	local v=$1 minor
	minor=${v#v1.}
	minor=${minor%%.*}
	local f="-s -w" kv
	for kv in buildDate=2026-12-06T00:00:00Z gitCommit=$v gitTreeState=clean gitVersion=$v gitMajor=1 gitMinor=$minor; do
		f+=" -X k8s.io/client-go/pkg/version.$kv -X k8s.io/component-base/version.$kv"
	done
	printf '%s' "$f"
}

# helm's Makefile: internal/version.version, metadata "" for a tag, clean tree; Helm 3 also
# stamps the Kubernetes version its client-go is (chartutil / lint defaults).
lc_helm_ldflags() {
	local major=$1 v=$2 moddir=$3 f
	f="-s -w -X helm.sh/helm/v$major/internal/version.version=$v -X helm.sh/helm/v$major/internal/version.metadata="
	f+=" -X helm.sh/helm/v$major/internal/version.gitTreeState=clean"
	if [[ $major == 3 ]]; then
		local cg minor
		cg=$(lc_pin "$moddir" k8s.io/client-go)
		minor=${cg#v0.}
		minor=${minor%%.*}
		f+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
		f+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
	fi
	printf '%s' "$f"
}

# lc_build_all: builds what is missing and sets LC_BIN_<name> to each binary's path.
lc_build_all() {
	local kv ev wv h3 h4 th
	kv=$(lc_pin "$LC_TESTENV/k8s" k8s.io/kubernetes)
	ev=$(lc_pin "$LC_TESTENV/etcd" go.etcd.io/etcd/server/v3)
	wv=$(lc_pin "$LC_TESTENV/kwok" sigs.k8s.io/kwok)
	h3=$(lc_pin "$LC_TESTENV/helm3" helm.sh/helm/v3)
	h4=$(lc_pin "$LC_TESTENV/helm4" helm.sh/helm/v4)
	# The small programs are versioned by the hash of their sources.
	th=$(cd "$LC_TESTENV" && cat go.mod go.sum cmd/testenv/*.go | sha256sum | cut -c1-12)
	[[ -n $kv && -n $ev && -n $wv && -n $h3 && -n $h4 ]] || { echo "local-cluster: cannot read the pins in testenv/*/go.mod" >&2; return 1; }
	LC_BIN_testenv=$(lc_build testenv "$th" "$LC_TESTENV" ./cmd/testenv "-s -w")
	LC_BIN_etcd=$(lc_build etcd "$ev" "$LC_TESTENV/etcd" go.etcd.io/etcd/server/v3 "-s -w")
	local kf
	kf=$(lc_kube_ldflags "$kv")
	LC_BIN_kube_apiserver=$(lc_build kube-apiserver "$kv" "$LC_TESTENV/k8s" k8s.io/kubernetes/cmd/kube-apiserver "$kf")
	LC_BIN_kube_controller_manager=$(lc_build kube-controller-manager "$kv" "$LC_TESTENV/k8s" k8s.io/kubernetes/cmd/kube-controller-manager "$kf")
	LC_BIN_kube_scheduler=$(lc_build kube-scheduler "$kv" "$LC_TESTENV/k8s" k8s.io/kubernetes/cmd/kube-scheduler "$kf")
	LC_BIN_kwok=$(lc_build kwok "$wv" "$LC_TESTENV/kwok" sigs.k8s.io/kwok/cmd/kwok "-s -w")
	LC_BIN_helm3=$(lc_build helm3 "$h3" "$LC_TESTENV/helm3" helm.sh/helm/v3/cmd/helm "$(lc_helm_ldflags 3 "$h3" "$LC_TESTENV/helm3")")
	LC_BIN_helm4=$(lc_build helm4 "$h4" "$LC_TESTENV/helm4" helm.sh/helm/v4/cmd/helm "$(lc_helm_ldflags 4 "$h4" "$LC_TESTENV/helm4")")
}
