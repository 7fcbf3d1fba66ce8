#!/usr/bin/env bash
# A recording stand-in for the helm CLI, for the Kubernetes stage tests. It appends every
# call's arguments to calls.log (one line, tab-separated) and keeps each release's `helm list`
# entry in releases/<namespace>.<name> and the values it was last given in
# values/<namespace>.<name> (answered by `get values` as given, YAML — meshstack reads helm's
# JSON with a YAML parser), so idempotence can be observed: a second `up` must find the release
# deployed with the same values and call nothing but `list` and `get values`.
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
  local chart="$1" spec="${MESHSTACK_FAKE_HELM_DELAYS:-}" d="0" entry
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
    if [ -f "$dir/releases/$ns.$3" ]; then cat "$dir/values/$ns.$3"
    else echo "Error: release: not found" >&2; exit 1; fi ;;
  uninstall) ns=$(arg --namespace "$@"); rm -f "$dir/releases/$ns.$2" "$dir/last/$ns.$2" "$dir/values/$ns.$2" ;;
  rollback)
    ns=$(arg --namespace "$@"); file="$dir/releases/$ns.$2"
    if [ -f "$dir/last/$ns.$2" ]; then mv "$dir/last/$ns.$2" "$file"; fi ;;
  *) echo "fake helm: unexpected command $1" >&2; exit 1 ;;
esac
