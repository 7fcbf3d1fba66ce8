#!/usr/bin/env bash
# A recording stand-in for the helm CLI, for the Kubernetes stage tests. It appends every
# call's arguments to calls.log (one line, tab-separated) and keeps each release's `helm list`
# entry in releases/<namespace>.<name> and the values it was last given in
# values/<namespace>.<name> (answered by `get values` as given, YAML — meshstack reads helm's
# JSON with a YAML parser), so idempotence can be observed: a second `up` must find the release
# deployed with the same values and call nothing but `list` and `get values`. tests/support/k8s.rs copies this file with
# @DIR@ replaced by the test's own folder.
set -eu
dir='@DIR@'
mkdir -p "$dir/releases" "$dir/values"
(IFS=$'\t'; printf '%s\n' "$*") >> "$dir/calls.log"

# The value after a flag.
arg() {
  local flag="$1"; shift
  while [ $# -gt 0 ]; do
    if [ "$1" = "$flag" ]; then printf '%s' "$2"; return; fi
    shift
  done
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
    printf '[{"name":"%s","namespace":"%s","revision":"1","status":"deployed","chart":"%s-%s"}]\n' \
      "$name" "$ns" "$chart" "$ver" > "$dir/releases/$ns.$name"
    cp "$(arg --values "$@")" "$dir/values/$ns.$name" ;;
  get)
    [ "$2" = values ] || { echo "fake helm: unexpected get $2" >&2; exit 1; }
    ns=$(arg --namespace "$@")
    if [ -f "$dir/releases/$ns.$3" ]; then cat "$dir/values/$ns.$3"
    else echo "Error: release: not found" >&2; exit 1; fi ;;
  uninstall) ns=$(arg --namespace "$@"); rm -f "$dir/releases/$ns.$2" "$dir/values/$ns.$2" ;;
  rollback) ;;
  *) echo "fake helm: unexpected command $1" >&2; exit 1 ;;
esac
