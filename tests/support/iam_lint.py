"""Lint IAM documents with parliament (the tests' venv has it, pinned by scripts/lib/moto-venv.sh).

Reads JSON on stdin: [{"name": ..., "document": {...}}, ...]. Writes JSON on stdout:
{"parliament": VERSION, "documents": [{"name": ..., "findings": [FINDING, ...]}, ...]}, where a
FINDING is parliament's own (issue, severity, title, detail, location) plus the statement it
is about (index and Sid, or null for the whole document) and, for RESOURCE_MISMATCH, which of
the (action, required ARN format) pairs another Allow statement of the same document grants
(parliament checks each statement alone; IAM authorises a request when any statement allows
each resource, and Karpenter's policy grants ec2:RunInstances' resource types over three
statements). Coverage uses parliament's own ARN matching.

Community auditors (privilege escalation, permissions management, ...) run too, with their
severities, as parliament's CLI runs them with --include-community-auditors.
"""

import json
import sys
from pathlib import Path

import parliament
from parliament import analyze_policy_string, enhance_finding, is_arn_strictly_valid, override_config

try:
    from importlib.metadata import version

    VERSION = version("parliament")
except Exception:  # pragma: no cover - metadata always present in a pip install
    VERSION = "unknown"

override_config(Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml")


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def grants(statement, action, arn_format):
    """Whether an Allow statement grants `action` on some resource of `arn_format`."""
    if statement.get("Effect") != "Allow" or "NotAction" in statement:
        return False
    actions = [a.lower() for a in as_list(statement.get("Action"))]
    if action.lower() not in actions:
        return False
    for resource in as_list(statement.get("Resource")):
        if resource == "*":
            return True
        if arn_format != "*" and is_arn_strictly_valid("", arn_format, resource):
            return True
    return False


def plain(value):
    return json.loads(json.dumps(value, default=str))


def lint(name, document):
    text = json.dumps(document, indent=2)
    policy = analyze_policy_string(text, filepath=name, include_community_auditors=True)
    statements = as_list(document.get("Statement"))
    located = []
    for index, stmt in enumerate(policy.statements):
        for f in stmt.findings:
            located.append((index, f))
    seen = {id(f) for _, f in located}
    located += [(None, f) for f in policy.findings if id(f) not in seen]
    out = []
    for index, f in located:
        f = enhance_finding(f)
        sid = None
        if index is not None and index < len(statements):
            sid = statements[index].get("Sid")
        finding = {
            "issue": f.issue,
            "severity": f.severity,
            "title": f.title,
            "detail": plain(f.detail),
            "location": plain({k: v for k, v in f.location.items() if k != "filepath"}),
            "statement": index,
            "sid": sid,
        }
        if f.issue == "RESOURCE_MISMATCH" and isinstance(f.detail, list):
            pairs = []
            for pair in f.detail:
                others = [
                    statements[i].get("Sid", str(i))
                    for i in range(len(statements))
                    if i != index and grants(statements[i], pair["action"], pair["required_format"])
                ]
                pairs.append({**pair, "granted_by": others})
            finding["pairs"] = pairs
        out.append(finding)
    return out


def main():
    docs = json.load(sys.stdin)
    result = {
        "parliament": VERSION,
        "documents": [{"name": d["name"], "findings": lint(d["name"], d["document"])} for d in docs],
    }
    json.dump(result, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
