//! Secrets out of every log line: `-v`, `-vv` and `-vvv` print what the AWS SDK, kube and
//! hyper trace, and that output gets pasted into issues and CI logs.
//!
//! The SDK redacts only the headers on its own list, which misses `x-amz-sso_bearer_token`
//! (the SSO portal token: credentials for every account and role its user has), and its
//! signer traces the canonical request of a presigned URL with `X-Amz-Security-Token` in it
//! (every EKS token meshstack makes). So everything meshstack's tracing writes goes through
//! [`redact`], which knows the secrets by their shapes rather than by who printed them:
//!
//! - a value after a secret's name, in every notation the libraries print: `name=value`
//!   (query strings, form bodies: presigned URLs' `X-Amz-Signature`, `X-Amz-Credential`,
//!   `X-Amz-Security-Token`; STS's `WebIdentityToken`), `"name": "value"` (JSON bodies,
//!   Debug maps of headers: `authorization`, `x-amz-security-token`,
//!   `x-amz-sso_bearer_token`; SSO's `accessToken`, `secretAccessKey`, `sessionToken`), the
//!   same escaped inside a Debug-printed byte string, `name: value` (a header line, a
//!   canonical request), and `<Name>value</Name>` (STS's XML answers);
//! - `Bearer <token>`, EKS tokens (`k8s-aws-v1.` and what follows), and JWTs (web identity
//!   tokens) wherever they are.
//!
//! What it cannot know: a secret printed with no name and no recognisable shape. The tests
//! (`tests/integration/redaction.rs`) run the binary at each verbosity with canary
//! credentials from each credential source and look for the canaries in everything it
//! wrote.

use std::io::Write;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// The names whose values are secret, lower-case, in each spelling the libraries use. A name
/// counts only as a whole word (`x-amz-signature` is one, `SignedHeaders` is not).
const NAMES: &[&str] = &[
    "x-amz-sso_bearer_token",
    "x-amz-sso-bearer-token",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-credential",
    "proxy-authorization",
    "authorization",
    "aws_secret_access_key",
    "secret_access_key",
    "secretaccesskey",
    "secret_key",
    "secretkey",
    "aws_session_token",
    "session_token",
    "sessiontoken",
    "security_token",
    "securitytoken",
    "access_token",
    "accesstoken",
    "refresh_token",
    "refreshtoken",
    "id_token",
    "idtoken",
    "client_secret",
    "clientsecret",
    "web_identity_token",
    "webidentitytoken",
    "bearer_token",
    "signature",
    "password",
];

/// Authentication schemes that may stand between a header's name and its secret.
const SCHEMES: &[&str] = &["bearer ", "basic ", "aws4-hmac-sha256 "];

/// `text` with every secret it recognises replaced by [`REDACTED`].
///
/// A scanner rather than regular expressions: at `-vvv` this runs on every event, thousands
/// of them and some whole response bodies, and regex-lite's matcher made a `plan` ten times
/// slower.
///
/// # Guarantees
/// Idempotent (redacting twice changes nothing more), and the names stay: a reader still sees
/// *which* header or field was there.
pub fn redact(text: &str) -> String {
    let out = replace(text, &shaped(text));
    let out = replace(&out, &named(&out));
    replace(&out, &bearer(&out))
}

/// `text` with each of `ranges` (sorted, not overlapping) replaced by [`REDACTED`].
fn replace(text: &str, ranges: &[(usize, usize)]) -> String {
    if ranges.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in ranges {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The length of the run of `text[from..]` whose bytes satisfy `keep`.
fn run(text: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    text[from.min(text.len())..]
        .iter()
        .take_while(|b| keep(**b))
        .count()
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)
}

/// Secrets known by their shape alone: EKS tokens (`k8s-aws-v1.` and the URL after it) and
/// JWTs (three base64url parts, the first two starting `eyJ`).
fn shaped(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut ranges = Vec::new();
    for (at, _) in text.match_indices("k8s-aws-v1.") {
        let start = at + "k8s-aws-v1.".len();
        let len = run(b, start, |c| b64url(c) || c == b'=');
        if len > 0 {
            ranges.push((start, start + len));
        }
    }
    for (at, _) in text.match_indices("eyJ") {
        if at > 0 && (b64url(b[at - 1]) || b[at - 1] == b'.') {
            continue;
        }
        let first = run(b, at, b64url);
        if b.get(at + first) != Some(&b'.') || !text[at + first + 1..].starts_with("eyJ") {
            continue;
        }
        let second = run(b, at + first + 1, b64url);
        let mut end = at + first + 1 + second;
        if b.get(end) == Some(&b'.') {
            end += 1 + run(b, end + 1, b64url);
        }
        ranges.push((at, end));
    }
    tidy(ranges)
}

/// Sorted, and without a range that starts inside an earlier one.
fn tidy(mut ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    ranges.sort();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last() {
            Some(last) if r.0 < last.1 => {}
            _ => out.push(r),
        }
    }
    out
}

/// The values after a secret's name: `name=value`, `name: value`, `"name": "value"`,
/// `name: Some("value")`, `\"name\":\"value\"` (inside a Debug-printed string) and
/// `<Name>value</Name>`.
fn named(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let b = text.as_bytes();
    let mut names: Vec<(usize, usize)> = Vec::new();
    for name in NAMES {
        for (at, _) in lower.match_indices(name) {
            let end = at + name.len();
            let whole = (at == 0 || !is_word(b[at - 1])) && b.get(end).is_none_or(|c| !is_word(*c));
            if whole {
                names.push((at, end));
            }
        }
    }
    // The longest name at each place (`x-amz-signature`, not `signature` inside it).
    names.sort_by_key(|&(at, end)| (at, std::cmp::Reverse(end)));
    let mut ranges = Vec::new();
    let mut done = 0;
    for (at, end) in names {
        if at < done {
            continue;
        }
        if let Some(value) = value_after(text, at, end) {
            done = value.1;
            if !text[value.0..].starts_with(REDACTED) && value.1 > value.0 {
                ranges.push(value);
            }
        }
    }
    tidy(ranges)
}

/// Where the value of the name at `text[at..end]` is, if a value follows it.
fn value_after(text: &str, at: usize, end: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let rest = |i: usize| &text[i.min(text.len())..];
    let spaces = |i: usize| i + run(b, i, |c| c == b' ' || c == b'\t');
    if at > 0 && b[at - 1] == b'<' && b.get(end) == Some(&b'>') {
        let start = end + 1;
        return Some((start, start + rest(start).find('<')?));
    }
    let mut i = end;
    if rest(i).starts_with("\\\"") {
        i += 2;
    } else if rest(i).starts_with('"') {
        i += 1;
    }
    i = spaces(i);
    match b.get(i) {
        Some(b':') | Some(b'=') => i += 1,
        _ => return None,
    }
    if b.get(i) == Some(&b'>') {
        i += 1; // `=>`
    }
    i = spaces(i);
    if rest(i).starts_with("Some(") {
        i += "Some(".len();
    }
    if rest(i).starts_with("\\\"") {
        let start = i + 2;
        return Some((start, start + rest(start).find("\\\"")?));
    }
    if rest(i).starts_with('"') {
        let start = i + 1;
        return Some((start, start + rest(start).find('"')?));
    }
    if rest(i).starts_with("** redacted") {
        return None; // the SDK's own redaction: `** redacted (length=257) **`
    }
    let lower = rest(i).get(..20).unwrap_or(rest(i)).to_ascii_lowercase();
    if let Some(scheme) = SCHEMES.iter().find(|s| lower.starts_with(*s)) {
        i = spaces(i + scheme.len());
    }
    let len = run(b, i, |c| {
        !c.is_ascii_whitespace() && !b"\"'\\&,;<>(){}[]".contains(&c)
    });
    Some((i, i + len))
}

/// `Bearer <token>` wherever it is.
fn bearer(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let b = text.as_bytes();
    let mut ranges = Vec::new();
    for (at, _) in lower.match_indices("bearer") {
        let after = at + "bearer".len();
        if (at > 0 && is_word(b[at - 1])) || b.get(after).is_none_or(|c| !c.is_ascii_whitespace()) {
            continue;
        }
        let start = after + run(b, after, |c| c.is_ascii_whitespace());
        let len = run(b, start, token_char);
        if len > 0 {
            ranges.push((start, start + len));
        }
    }
    tidy(ranges)
}

/// A `tracing_subscriber` writer that redacts each event before it reaches stderr: the
/// formatter writes one event per writer, so a secret is never split between two calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingStderr;

/// One event's bytes, redacted and written to stderr when dropped.
pub struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = redact(&String::from_utf8_lossy(&self.0));
        // A closed stderr has nowhere to report to.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer(Vec::with_capacity(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (what the libraries print, the secret in it) — shapes seen in `-vvv` output.
    const LEAKS: &[(&str, &str)] = &[
        // aws-sigv4's canonical request of a presigned URL (every EKS token).
        (
            "Action=GetCallerIdentity&X-Amz-Credential=AKIAEXAMPLE%2F20261206%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Security-Token=SeSsIoN%2Btok&X-Amz-SignedHeaders=host",
            "SeSsIoN%2Btok",
        ),
        ("X-Amz-Credential=AKIAEXAMPLE%2F2026", "AKIAEXAMPLE"),
        (
            "https://sts.amazonaws.com/?X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        ),
        // The SDK's Debug map of headers: the SSO portal token is not on its list.
        (
            r#"headers: {"x-amz-sso_bearer_token": "SsOtOkEn123", "user-agent": "aws-sdk-rust"}"#,
            "SsOtOkEn123",
        ),
        (r#"{"X-Amz-Security-Token": "FwoGZXIvYXdz"}"#, "FwoGZXIvYXdz"),
        (
            r#"Some("authorization": Some("AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, Signature=abcdef"))"#,
            "abcdef",
        ),
        ("authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("x-amz-security-token:FQoDYXdzEJr\nhost:sts", "FQoDYXdzEJr"),
        // Redacted by the SDK already (kept as it is), next to one it missed.
        (
            r#"{"authorization": ** redacted (length=257) **, "x-amz-sso_bearer_token": "t0k3n"}"#,
            "t0k3n",
        ),
        // Bodies: SSO's JSON, escaped inside a Debug byte string, and STS's XML.
        (
            r#"b"{\"roleCredentials\":{\"accessKeyId\":\"ASIA\",\"secretAccessKey\":\"SeCrEt/+k\",\"sessionToken\":\"SeSs\\\"x\",\"expiration\":1}}""#,
            "SeCrEt/+k",
        ),
        (
            r#"{"roleCredentials":{"secretAccessKey":"SeCrEt/+k","sessionToken":"SeSs"}}"#,
            "SeSs",
        ),
        (r#"{"accessToken": "aoaTOKEN", "expiresAt": "2099"}"#, "aoaTOKEN"),
        (
            "<Credentials><AccessKeyId>ASIA</AccessKeyId><SecretAccessKey>wJalr/K7MDENG</SecretAccessKey><SessionToken>FQoG+Zx</SessionToken></Credentials>",
            "wJalr/K7MDENG",
        ),
        ("<SessionToken>FQoG+Zx</SessionToken>", "FQoG+Zx"),
        (
            "Action=AssumeRoleWithWebIdentity&WebIdentityToken=opaque-token-1&RoleArn=x",
            "opaque-token-1",
        ),
        // Profile properties and Debug structs.
        ("aws_secret_access_key = wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        (r#"secret_access_key: "wJalrXUtnFEMI""#, "wJalrXUtnFEMI"),
        (r#"session_token: Some("IQoJb3Jp")"#, "IQoJb3Jp"),
        // Shapes that need no name.
        (
            r#"{"status":{"token":"k8s-aws-v1.aHR0cHM6Ly9zdHM"}}"#,
            "aHR0cHM6Ly9zdHM",
        ),
        (
            "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl end",
            "eyJzdWIiOiJ4In0",
        ),
    ];

    #[test]
    fn every_shape_is_redacted() {
        for (line, secret) in LEAKS {
            let out = redact(line);
            assert!(
                !out.contains(secret),
                "{secret:?} survives in {out:?} (from {line:?})"
            );
            assert!(out.contains(REDACTED), "{out:?}");
            assert_eq!(redact(&out), out, "redacting twice changes {out:?}");
        }
    }

    #[test]
    fn ordinary_lines_are_kept() {
        for line in [
            "DEBUG aws_smithy_runtime::client::orchestrator: beginning attempt #1",
            "headers: {\"content-type\": \"application/x-www-form-urlencoded\", \"content-length\": \"43\"}",
            "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=tag-key",
            "uri: https://ec2.us-east-1.amazonaws.com/, SignedHeaders",
            "role arn:aws:iam::123456789012:role/demo-node, access key AKIA is not a secret alone",
            "request-id: 7a62c49f-347e-4fc4-9331-6e8eEXAMPLE",
        ] {
            assert_eq!(redact(line), line);
        }
    }

    #[test]
    fn names_stay_to_say_what_was_there() {
        assert_eq!(
            redact(r#"{"x-amz-sso_bearer_token": "t0k"}"#),
            r#"{"x-amz-sso_bearer_token": "<redacted>"}"#
        );
        assert_eq!(
            redact("X-Amz-Security-Token=abc&X-Amz-Date=1"),
            "X-Amz-Security-Token=<redacted>&X-Amz-Date=1"
        );
    }
}
