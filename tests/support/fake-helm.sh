#!/usr/bin/env bash
# A recording stand-in for the helm CLI, for the Kubernetes stage tests. It appends every
# call's arguments to calls.log (one line, tab-separated) and keeps each release's `helm list`
# entry in releases/<namespace>.<name> and the values it was last given in
# values/<namespace>.<name>, so idempotence can be observed: a second `up` must find the release
# deployed with the same values and call nothing but `list` and `get values`. `get values`
# answers as helm does: helm decodes the values file into Go's interface{} (every number a
# float64) and `-o json` marshals that back, so `sampling: 100.0` comes back as `100` (with
# @PYTHON@, which has PyYAML, doing the round trip).
#
# Like helm, `uninstall` first records the release `uninstalling`, then "deletes" for
# MESHSTACK_FAKE_HELM_UNINSTALL_DELAYS (same format as the install delays), then forgets it: a
# run killed meanwhile leaves it `uninstalling`, and `upgrade` then fails as helm's does ("has
# no deployed releases", pkg/action/upgrade.go) until an `uninstall` finishes the job. An
# `upgrade` of a pending release fails as helm's does too ("another operation ... is in
# progress"). Not modelled: chart contents, hooks, `--skip-crds` (the API server's chart
# controller decides which CRDs a chart makes), `--wait`'s readiness checks.
#
# Like helm, `upgrade --install` first records the release as pending (pending-install at
# revision 1, pending-upgrade at the next revision), then "waits" and records it deployed. The
# wait is MESHSTACK_FAKE_HELM_DELAYS, `chart=seconds,...` with `*` for any other chart (e.g.
# `kube-prometheus-stack=6,*=3`), divided by MESHSTACK_WAIT_SCALE like meshstack's own waits:
# a run killed meanwhile leaves the release pending, as a real one would. `rollback` returns a
# pending release to its last deployed revision.
#
# tests/support/k8s.rs copies this file with @DIR@ replaced by the test's own folder.
set -eu
dir='@DIR@'
mkdir -p "$dir/releases" "$dir/values" "$dir/last"
(IFS=$'\t'; printf '%s\n' "$*") >> "$dir/calls.log"
# The mode of the folder of every file meshstack hands over (kubeconfig, values, registry
# config), as a pseudo-call: meshstack must keep them private (0700).
modes=()
prev=""
for a in "$@"; do
  case "$prev" in --kubeconfig|--values|--registry-config) modes+=("$(stat -c %a "$(dirname "$a")")") ;; esac
  prev="$a"
done
if [ ${#modes[@]} -gt 0 ]; then (IFS=$'\t'; printf 'private-files\t%s\n' "${modes[*]}") >> "$dir/calls.log"; fi

# The value after a flag.
arg() {
  local flag="$1"; shift
  while [ $# -gt 0 ]; do
    if [ "$1" = "$flag" ]; then printf '%s' "$2"; return; fi
    shift
  done
}

# The configured wait for a chart, in seconds (may be fractional), scaled.
delay_for() {
  local chart="$1" spec="${2-${MESHSTACK_FAKE_HELM_DELAYS:-}}" d="0" entry
  IFS=',' read -ra entries <<< "$spec"
  for entry in "${entries[@]}"; do
    case "$entry" in
      "$chart="*) d="${entry#*=}"; break ;;
      "*="*) d="${entry#*=}" ;;
    esac
  done
  awk -v d="$d" -v s="${MESHSTACK_WAIT_SCALE:-1}" 'BEGIN { printf "%.3f", d / (s > 0 ? s : 1) }'
}

# A `helm list` entry.
entry() { # name namespace revision status chart
  printf '[{"name":"%s","namespace":"%s","revision":"%s","status":"%s","chart":"%s"}]\n' "$@"
}

# A field of the recorded entry.
field() { # file key
  sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$1"
}

case "$1" in
  version) echo "v3.14.2+gfake" ;;
  list)
    ns=$(arg --namespace "$@"); name=$(arg --filter "$@"); name=${name#^}; name=${name%\$}
    if [ -f "$dir/releases/$ns.$name" ]; then cat "$dir/releases/$ns.$name"; else echo "[]"; fi ;;
  upgrade)
    name="$3"; chart="$4"
    case "$chart" in oci://*) chart=${chart##*/} ;; esac
    ver=$(arg --version "$@"); ns=$(arg --namespace "$@")
    file="$dir/releases/$ns.$name"
    if [ -f "$file" ]; then
      case "$(field "$file" status)" in
        uninstalling)
          echo "Error: UPGRADE FAILED: \"$name\" has no deployed releases" >&2; exit 1 ;;
        pending-*)
          echo "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress" >&2; exit 1 ;;
      esac
      rev=$(( $(field "$file" revision) + 1 )); pending=pending-upgrade
      cp "$file" "$dir/last/$ns.$name"
    else
      rev=1; pending=pending-install
    fi
    entry "$name" "$ns" "$rev" "$pending" "$chart-$ver" > "$file"
    cp "$(arg --values "$@")" "$dir/values/$ns.$name"
    delay=$(delay_for "$chart")
    [ "$delay" = "0.000" ] || sleep "$delay"
    entry "$name" "$ns" "$rev" deployed "$chart-$ver" > "$file"
    rm -f "$dir/last/$ns.$name" ;;
  get)
    [ "$2" = values ] || { echo "fake helm: unexpected get $2" >&2; exit 1; }
    ns=$(arg --namespace "$@")
    if [ -f "$dir/releases/$ns.$3" ]; then
      '@PYTHON@' -c 'import json, sys, yaml
def go(v):
    if isinstance(v, dict): return {k: go(x) for k, x in v.items()}
    if isinstance(v, list): return [go(x) for x in v]
    if isinstance(v, float) and v.is_integer(): return int(v)
    return v
print(json.dumps(go(yaml.safe_load(open(sys.argv[1])))))' "$dir/values/$ns.$3"
    else echo "Error: release: not found" >&2; exit 1; fi ;;
  uninstall)
    ns=$(arg --namespace "$@"); file="$dir/releases/$ns.$2"
    if [ -f "$file" ]; then
      entry "$2" "$ns" "$(field "$file" revision)" uninstalling "$(field "$file" chart)" > "$file.tmp"
      mv "$file.tmp" "$file"
      delay=$(delay_for "$(field "$file" chart | sed 's/-[0-9][0-9.]*$//')" "${MESHSTACK_FAKE_HELM_UNINSTALL_DELAYS:-}")
      [ "$delay" = "0.000" ] || sleep "$delay"
    fi
    rm -f "$file" "$dir/last/$ns.$2" "$dir/values/$ns.$2" ;;
  rollback)
    ns=$(arg --namespace "$@"); file="$dir/releases/$ns.$2"
    if [ -f "$dir/last/$ns.$2" ]; then mv "$dir/last/$ns.$2" "$file"; fi ;;
  *) echo "fake helm: unexpected command $1" >&2; exit 1 ;;
esac
