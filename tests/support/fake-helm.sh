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
# Charts, as helm finds them (helm's FindChartInRepoURL in its repo package, which `pull` and
# `upgrade` go through; the messages below are the ones helm v3.21.4 and v4.3.2 printed when
# run against the pinned repository, 2026-12-07):
# - `pull CHART --repo URL --version V --destination D` (or `pull oci://PREFIX/CHART ...`)
#   reads the repository's index, finds the chart at that version and writes the archive the
#   index points to into D under the name in its URL, byte for byte. An unknown chart or a
#   version not in the index fails with helm's `chart "C" version "V" not found in URL
#   repository`; a repository that does not answer with `looks like "URL" is not a valid chart
#   repository or cannot be reached`.
# - Which repository: meshstack's default repositories (Istio's, Karpenter's OCI prefix,
#   prometheus-community's, Kiali's) are served from the pinned local repository @CHARTS@
#   (the test chart folder, whose index.yaml holds each version's digest), each holding
#   only its own charts, so a chart asked of the wrong repository is not found there. Any
#   other http(s) URL is asked for real: its index.yaml and the archive are fetched over HTTP
#   (a test's own chart server, such as one serving tampered bytes).
# - `upgrade --install NAME CHART`: CHART is a chart archive on disk (helm reads the name and
#   version from its Chart.yaml, and installs whatever archive it is given, as helm does), or
#   a chart in a repository (`--repo URL --version V`, or an oci:// reference), looked up as
#   `pull` does, with the same errors, before anything is recorded.
# Not modelled: other OCI registries (refused), chart signatures (`--verify`), `helm repo add`
# names, dependencies, the index's own digest (helm does not check it on pull either).
#
# The cluster: with `--kubeconfig`, every command that talks to the cluster (list, get,
# upgrade, uninstall, rollback) first makes one authenticated request, as helm's client would:
# the kubeconfig's current context names the server, its CA and its user; the user's exec
# plugin (meshstack's own `meshstack token`) is run as client-go runs it
# (KUBERNETES_EXEC_INFO set, an ExecCredential read from its stdout) and its token sent as
# `Authorization: Bearer` to GET /version over TLS verified against the kubeconfig's CA. A
# plugin that fails, or an answer of 401, fails the command as helm does ("Kubernetes cluster
# unreachable: ..."; the wording after the colon is client-go's and not copied exactly); an
# answer with Retry-After (429, or a 5xx with one) is retried after that wait, up to 10 times,
# as client-go's REST client does.
# Without `--kubeconfig` (the stage tests, whose helm is given none) no request is made;
# helm would then use ~/.kube/config. Not modelled: token caching between calls (client-go
# caches an exec credential until it expires; this runs the plugin on every call), client
# certificates, tokens in the kubeconfig itself, proxies.
#
# tests/support/k8s.rs copies this file with @DIR@ replaced by the test's own folder, @CHARTS@
# by the pinned chart folder and @PYTHON@ by a Python with PyYAML.
set -eu
dir='@DIR@'
mkdir -p "$dir/releases" "$dir/values" "$dir/last"
(IFS=$'\t'; printf '%s\n' "$*") >> "$dir/calls.log"
# The mode of the folder of every file meshstack hands over (kubeconfig, values, registry
# config) and of the folder a chart is pulled into, as a pseudo-call: meshstack must keep them private (0700).
modes=()
prev=""
for a in "$@"; do
  case "$prev" in
    --kubeconfig|--values|--registry-config) modes+=("$(stat -c %a "$(dirname "$a")")") ;;
    --destination) modes+=("$(stat -c %a "$a")") ;;
  esac
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

# The Python half: the chart repositories and the cluster request (see the header).
py() {
  '@PYTHON@' - "$@" <<'PY'
import base64, json, os, ssl, subprocess, sys, tarfile, tempfile, time, urllib.error, urllib.parse, urllib.request
import yaml

CHARTS = '@CHARTS@'
# meshstack's default repositories (src/charts.rs) and the charts each holds.
DEFAULTS = {
    'https://blob.istio.io/istio-release/charts': {'base', 'istiod', 'gateway'},
    'oci://public.ecr.aws/karpenter': {'karpenter', 'karpenter-crd'},
    'https://prometheus-community.github.io/helm-charts': {'kube-prometheus-stack'},
    'https://kiali.org/helm-charts': {'kiali-operator'},
}

def fail(msg):
    print('Error: ' + msg, file=sys.stderr)
    sys.exit(1)

def read(url):
    if url.startswith('file://'):
        with open(url[len('file://'):], 'rb') as f:
            return f.read()
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()

def locate(repo, chart, version):
    # (archive bytes, file name) of chart at version in repo, as helm's pull finds them.
    shown, repo = repo, repo.rstrip('/')
    if repo in DEFAULTS:
        if not os.path.isfile(os.path.join(CHARTS, 'index.yaml')):
            fail('fake helm: the pinned chart repository %s is not there' % CHARTS)
        base, held = 'file://' + CHARTS + '/', DEFAULTS[repo]
    elif repo.startswith('oci://'):
        fail('fake helm: OCI registry %s is not modelled' % repo)
    else:
        base, held = repo + '/', None
    try:
        index = yaml.safe_load(read(base + 'index.yaml'))
    except Exception as e:
        fail('looks like "%s" is not a valid chart repository or cannot be reached: %s' % (shown, e))
    entries = [] if held is not None and chart not in held else (index.get('entries') or {}).get(chart) or []
    found = [e for e in entries if str(e.get('version')) == version]
    if not found:
        if repo.startswith('oci://'):
            fail('failed to perform "FetchReference" on source: %s/%s:%s: not found'
                 % (repo[len('oci://'):], chart, version))
        fail('chart "%s" version "%s" not found in %s repository' % (chart, version, shown))
    url = urllib.parse.urljoin(base, found[0]['urls'][0])
    try:
        data = read(url)
    except Exception as e:
        fail('failed to fetch %s : %s' % (url, e))
    return data, os.path.basename(urllib.parse.urlparse(url).path)

def metadata(path):
    # name and version from a chart archive's Chart.yaml, as helm's loader reads them.
    try:
        with tarfile.open(path, 'r:gz') as t:
            for m in t.getmembers():
                parts = m.name.split('/')
                if len(parts) == 2 and parts[1] == 'Chart.yaml':
                    meta = yaml.safe_load(t.extractfile(m).read())
                    return meta['name'], str(meta['version'])
    except Exception as e:
        fail('file \'%s\' does not appear to be a gzipped archive; got \'%s\'' % (path, e))
    fail('Chart.yaml file is missing')

def pull(chart, repo, version, dest):
    if chart.startswith('oci://'):
        repo, chart = chart.rsplit('/', 1)
    data, name = locate(repo, chart, version)
    with open(os.path.join(dest, name), 'wb') as f:
        f.write(data)

def chart_of(chart, repo, version):
    # `<name>-<version>` of what `upgrade` installs: a local archive, or one from a repository.
    if os.path.isfile(chart):
        name, ver = metadata(chart)
        return '%s-%s' % (name, ver)
    if chart.startswith('oci://'):
        repo, chart = chart.rsplit('/', 1)
    if not repo:
        fail('non-absolute URLs should be in form of repo_name/path_to_chart, got: %s' % chart)
    data, _ = locate(repo, chart, version)
    with tempfile.NamedTemporaryFile(suffix='.tgz') as f:
        f.write(data)
        f.flush()
        name, ver = metadata(f.name)
    return '%s-%s' % (name, ver)

def authenticate(kubeconfig):
    try:
        config = yaml.safe_load(open(kubeconfig))
    except OSError as e:
        fail('Kubernetes cluster unreachable: %s' % e)
    ctx_name = config.get('current-context')
    ctx = next(c['context'] for c in config['contexts'] if c['name'] == ctx_name)
    cluster = next(c['cluster'] for c in config['clusters'] if c['name'] == ctx['cluster'])
    user = next(u['user'] for u in config['users'] if u['name'] == ctx['user'])
    token = user.get('token')
    if 'exec' in user:
        ex = user['exec']
        env = dict(os.environ)
        env.update({e['name']: e['value'] for e in ex.get('env') or []})
        env['KUBERNETES_EXEC_INFO'] = json.dumps({
            'apiVersion': ex['apiVersion'], 'kind': 'ExecCredential',
            'spec': {'interactive': False}})
        run = subprocess.run([ex['command']] + list(ex.get('args') or []), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if run.returncode != 0:
            fail('Kubernetes cluster unreachable: Get "%s/version": getting credentials: exec: '
                 'executable %s failed with exit code %d: %s' % (cluster['server'], ex['command'],
                 run.returncode, run.stderr.decode(errors='replace').strip()))
        token = json.loads(run.stdout)['status']['token']
    tls = ssl.create_default_context()
    if cluster.get('certificate-authority-data'):
        tls.load_verify_locations(cadata=base64.b64decode(cluster['certificate-authority-data']).decode())
    elif cluster.get('certificate-authority'):
        tls.load_verify_locations(cafile=cluster['certificate-authority'])
    req = urllib.request.Request(cluster['server'].rstrip('/') + '/version')
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    # client-go's REST client retries an answer with Retry-After (429, or a 5xx that has one)
    # up to 10 times, waiting as told (rest/request.go, checkWait and maxRetries).
    for attempt in range(11):
        try:
            urllib.request.urlopen(req, context=tls, timeout=10).read()
            return
        except urllib.error.HTTPError as e:
            wait = e.headers.get('Retry-After')
            if attempt < 10 and wait and (e.code == 429 or e.code >= 500):
                time.sleep(float(wait))
                continue
            if e.code == 401:
                fail('Kubernetes cluster unreachable: the server has asked for the client to provide credentials')
            fail('Kubernetes cluster unreachable: %s' % e)
        except Exception as e:
            fail('Kubernetes cluster unreachable: %s' % e)

cmd = sys.argv[1]
if cmd == 'pull':
    pull(*sys.argv[2:6])
elif cmd == 'chart':
    print(chart_of(*sys.argv[2:5]))
elif cmd == 'auth':
    authenticate(sys.argv[2])
PY
}

# One authenticated request through --kubeconfig, for the commands that talk to the cluster.
case "$1" in
  list|get|upgrade|uninstall|rollback)
    kc=$(arg --kubeconfig "$@")
    if [ -n "$kc" ]; then py auth "$kc"; fi ;;
esac

case "$1" in
  version) echo "v3.14.2+gfake" ;;
  pull)
    dest=$(arg --destination "$@")
    py pull "$2" "$(arg --repo "$@")" "$(arg --version "$@")" "${dest:-.}" ;;
  list)
    ns=$(arg --namespace "$@"); name=$(arg --filter "$@"); name=${name#^}; name=${name%\$}
    if [ -f "$dir/releases/$ns.$name" ]; then cat "$dir/releases/$ns.$name"; else echo "[]"; fi ;;
  upgrade)
    name="$3"
    listed=$(py chart "$4" "$(arg --repo "$@")" "$(arg --version "$@")")
    chart=${listed%-*}; ver=${listed##*-}; ns=$(arg --namespace "$@")
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
