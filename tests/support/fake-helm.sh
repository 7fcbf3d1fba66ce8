#!/usr/bin/env bash
# A recording stand-in for the helm CLI, for the Kubernetes stage tests. It appends every
# call's arguments to calls.log (one line, tab-separated) and keeps each release's `helm list`
# entry in releases/<namespace>.<name>, so idempotence can be observed: a second `up` must find
# the release deployed and call nothing but `list`. tests/support/k8s.rs copies this file with
# @DIR@ replaced by the test's own folder.
set -eu
dir='@DIR@'
mkdir -p "$dir/releases"
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
      "$name" "$ns" "$chart" "$ver" > "$dir/releases/$ns.$name" ;;
  uninstall) ns=$(arg --namespace "$@"); rm -f "$dir/releases/$ns.$2" ;;
  rollback) ;;
  *) echo "fake helm: unexpected command $1" >&2; exit 1 ;;
esac
