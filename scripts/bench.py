"""meshstack benchmarks against moto (driven by scripts/bench).

moto's EKS clusters have no Kubernetes API, so the AWS scenarios select the AWS stages.

Measures, per scenario: wall time (median, min, max over runs), AWS API calls as meshstack
counts them (reads and writes, from `--output json`), and the peak RSS of the meshstack process.
Then the same `up`s with the state in S3 (`--state s3://...`, moto's S3) next to local state:
the state's own S3 requests and the wall time they add. Prints Markdown tables for
BENCHMARKS.md. Standard library only.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

AWS_STAGES = "network,iam,cluster,nodegroup,karpenter-infra"
STATE_URL = "s3://bench-state/meshstack"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    proc = subprocess.Popen(
        [os.environ["MESHSTACK_MOTO_SERVER"], "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2)
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto did not start")


class Runner:
    def __init__(self, binary, workdir, endpoint):
        self.binary = os.path.abspath(binary)
        self.workdir = workdir
        self.aws_env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
        }

    def run(self, args, aws=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MESHSTACK_"))}
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        if aws:
            env.update(self.aws_env)
        with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
            start = time.perf_counter()
            proc = subprocess.Popen([self.binary, *args], cwd=self.workdir, env=env, stdout=so, stderr=se, text=True)
            # wait4 gives this child's own rusage, so the peak RSS is the run's, not a maximum
            # over every child so far.
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
        rss_kib = usage.ru_maxrss
        if proc.returncode != 0:
            sys.exit(f"meshstack {' '.join(args)} failed ({proc.returncode}):\n{stdout}\n{stderr}")
        calls = None
        self.state_calls = None
        for line in stdout.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == "api-calls":
                calls = (doc["reads"], doc["writes"])
                if "state" in doc:
                    self.state_calls = (doc["state"]["reads"], doc["state"]["writes"])
            elif "api_calls" in doc and doc["api_calls"]:
                calls = (doc["api_calls"]["reads"], doc["api_calls"]["writes"])
        return wall, calls, rss_kib

    def run_state(self, args):
        """Like run, with the state's S3 requests (reads, writes) as a fourth element."""
        wall, calls, rss = self.run(args)
        return wall, calls, rss, self.state_calls


def most_calls(samples):
    """(reads, writes) of the run with the most writes, then reads: a converged run that wrote
    even once must show it, which the last or the median run might not."""
    calls = [s[1] for s in samples if s[1]]
    if not calls:
        return ("-", "-")
    return max(calls, key=lambda c: (c[1], c[0]))


def summarize(name, samples):
    walls = [s[0] * 1000 for s in samples]
    rss = max(s[2] for s in samples)
    reads, writes = most_calls(samples)
    return (
        f"| {name} | {len(samples)} | {statistics.median(walls):.0f} | {min(walls):.0f} | {max(walls):.0f} "
        f"| {reads} | {writes} | {rss / 1024:.1f} |"
    )


def summarize_state(name, samples):
    walls = [s[0] * 1000 for s in samples]
    reads, writes = most_calls(samples)
    s3 = samples[-1][3]
    s3_reads, s3_writes = s3 if s3 else ("-", "-")
    return (
        f"| {name} | {len(samples)} | {statistics.median(walls):.0f} | {min(walls):.0f} | {max(walls):.0f} "
        f"| {reads} | {writes} | {s3_reads} | {s3_writes} |"
    )


def stack(workdir, name):
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\nregion: us-east-1\n")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    moto, port = start_moto()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            r = Runner(args.binary, workdir, f"http://127.0.0.1:{port}")
            # Warm moto up (its first request of each service loads models).
            warm = stack(workdir, "warm")
            r.run(["up", "--stack", warm, "--only", AWS_STAGES])
            r.run(["down", "--yes", "--stack", warm, "--only", AWS_STAGES])

            rows.append(summarize("plan, offline (`plan --offline`)", [r.run(["plan", "--offline", "-o", "json"], aws=False) for _ in range(args.runs * 4)]))
            rows.append(summarize("plan, no credentials (README command)", [r.run(["plan", "-o", "json"], aws=False) for _ in range(args.runs * 4)]))

            full, converged, plans, downs = [], [], [], []
            for i in range(args.runs):
                s = stack(workdir, f"bench-{i}")
                full.append(r.run(["up", "--stack", s, "--only", AWS_STAGES, "-o", "json"]))
                converged.append(r.run(["up", "--stack", s, "--only", AWS_STAGES, "-o", "json"]))
                plans.append(r.run(["plan", "--stack", s, "--only", AWS_STAGES, "-o", "json"]))
                downs.append(r.run(["down", "--yes", "--stack", s, "--only", AWS_STAGES, "-o", "json"]))
            rows.append(summarize("full AWS `up` (empty account)", full))
            rows.append(summarize("converged `up` (nothing to do)", converged))
            rows.append(summarize("`plan` against a converged stack", plans))
            rows.append(summarize("`down` (everything)", downs))

            # Local and S3 state, alternating run by run so that moto's drift hits both alike.
            # One stack at a time: moto gives every cluster the same OIDC issuer.
            r.run(["state", "init", STATE_URL])
            state_rows = []
            samples = {k: [] for k in ("lf", "lc", "sf", "sc")}
            up = ["up", "--only", AWS_STAGES, "-o", "json"]
            for i in range(args.runs):
                for kind, extra in (("l", []), ("s", ["--state", STATE_URL])):
                    s = stack(workdir, f"state-{kind}-{i}")
                    samples[kind + "f"].append(r.run_state([*up, "--stack", s, *extra]))
                    samples[kind + "c"].append(r.run_state([*up, "--stack", s, *extra]))
                    r.run(["down", "--yes", "--stack", s, "--only", AWS_STAGES, *extra])
            state_rows.append(summarize_state("full AWS `up`, local state", samples["lf"]))
            state_rows.append(summarize_state("full AWS `up`, S3 state", samples["sf"]))
            state_rows.append(summarize_state("converged `up`, local state", samples["lc"]))
            state_rows.append(summarize_state("converged `up`, S3 state", samples["sc"]))
    finally:
        moto.kill()

    print("| scenario | runs | median ms | min ms | max ms | API reads | API writes (max over runs) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print("| scenario | runs | median ms | min ms | max ms | API reads | API writes (max over runs) | S3 state reads | S3 state writes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in state_rows:
        print(row)


if __name__ == "__main__":
    main()
