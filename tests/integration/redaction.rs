//! No secret in any log at any verbosity (issue 23, item 2): the binary at `-v`, `-vv` and
//! `-vvv`, with canary credentials from each credential source the SDK supports that runs
//! locally — static keys in the environment, a profile file, an SSO profile, web identity —
//! running `token` (a presigned STS URL: the EKS token) and `plan` (signed calls to moto).
//! Every canary, the EKS token printed on stdout and every value after a secret's name must
//! be absent from stderr.
//!
//! Not covered: container and instance metadata credentials (they need an endpoint at a fixed
//! link-local address) and `credential_process` (its secrets arrive the way a profile's do).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::support::{describe, Meshstack, Moto, ACCOUNT, REGION};

const STATIC_SECRET: &str = "CanaryStaticSecretKey0000000000000000000a";
const STATIC_SESSION: &str = "CanaryStaticSessionTokenIQoJb3JpZ2luX2VjEBoaCXVz";
const PROFILE_SECRET: &str = "CanaryProfileSecretKey000000000000000000b";
const PROFILE_SESSION: &str = "CanaryProfileSessionTokenFwoGZXIvYXdzEJr";
const SSO_BEARER: &str = "CanarySsoBearerTokenaoaAAAAAGd0cCI6ImhpIn0";
const SSO_SECRET: &str = "CanarySsoRoleSecretKey00000000000000000c";
const SSO_SESSION: &str = "CanarySsoRoleSessionTokenIQoJb3JpZ2luX2Vj";
/// A web identity token is a JWT; the payload and signature parts are the canaries.
const WEB_IDENTITY: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJDYW5hcnlXZWJJZGVudGl0eSJ9.Q2FuYXJ5V2ViU2lnbmF0dXJl";

/// The SSO start URL of the canary profile, and the name the SDK gives its token cache file:
/// the SHA-1 of the start URL, in hex (`echo -n URL | sha1sum`).
const SSO_START_URL: &str = "https://canary.awsapps.com/start";
const SSO_CACHE_FILE: &str = "7490baf9d6cb9e8eb1d7891fee24dc1ec785965b.json";

/// A stand-in for the SSO portal's `GetRoleCredentials` (`GET /federation/credentials`),
/// which moto does not serve: it answers every request with canary role credentials and
/// keeps the requests' header lines. Not modelled: every other portal operation, errors,
/// checking the bearer token.
struct SsoPortal {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl SsoPortal {
    fn start() -> SsoPortal {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().unwrap().push(head);
                let body = format!(
                    r#"{{"roleCredentials":{{"accessKeyId":"ASIACANARYSSO0000000","secretAccessKey":"{SSO_SECRET}","sessionToken":"{SSO_SESSION}","expiration":4102444800000}}}}"#
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.read(&mut [0u8; 0]);
            }
        });
        SsoPortal { port, requests }
    }
}

/// A credential source: its name, the environment that selects it, the canaries it holds.
struct Source {
    name: &'static str,
    env: Vec<(String, String)>,
    canaries: Vec<&'static str>,
}

fn sources(ms: &Meshstack, moto: &Moto, sso: &SsoPortal) -> Vec<Source> {
    let dir = ms.dir.path();
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".aws/sso/cache")).unwrap();
    let config = home.join(".aws/config");
    std::fs::write(
        &config,
        format!(
            "[profile canary-keys]\nregion = {REGION}\n\n\
             [profile canary-sso]\nsso_start_url = {SSO_START_URL}\nsso_region = {REGION}\n\
             sso_account_id = {ACCOUNT}\nsso_role_name = canary\nregion = {REGION}\n"
        ),
    )
    .unwrap();
    let credentials = home.join(".aws/credentials");
    std::fs::write(
        &credentials,
        format!(
            "[canary-keys]\naws_access_key_id = AKIACANARYPROFILE000\n\
             aws_secret_access_key = {PROFILE_SECRET}\naws_session_token = {PROFILE_SESSION}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/sso/cache").join(SSO_CACHE_FILE),
        format!(
            r#"{{"startUrl":"{SSO_START_URL}","region":"{REGION}","accessToken":"{SSO_BEARER}","expiresAt":"2099-01-01T00:00:00Z"}}"#
        ),
    )
    .unwrap();
    let token_file = dir.join("web-identity-token");
    std::fs::write(&token_file, WEB_IDENTITY).unwrap();
    let base = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        [
            ("HOME", home.display().to_string()),
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    };
    vec![
        Source {
            name: "static keys in the environment",
            env: base(&[
                ("AWS_ACCESS_KEY_ID", "AKIACANARYSTATIC0000".into()),
                ("AWS_SECRET_ACCESS_KEY", STATIC_SECRET.into()),
                ("AWS_SESSION_TOKEN", STATIC_SESSION.into()),
            ]),
            canaries: vec![STATIC_SECRET, STATIC_SESSION],
        },
        Source {
            name: "a profile file",
            env: base(&[("AWS_PROFILE", "canary-keys".into())]),
            canaries: vec![PROFILE_SECRET, PROFILE_SESSION],
        },
        Source {
            name: "an SSO profile",
            env: base(&[
                ("AWS_PROFILE", "canary-sso".into()),
                (
                    "AWS_ENDPOINT_URL_SSO",
                    format!("http://127.0.0.1:{}", sso.port),
                ),
            ]),
            canaries: vec![SSO_BEARER, SSO_SECRET, SSO_SESSION],
        },
        Source {
            name: "web identity (STS AssumeRoleWithWebIdentity, on moto)",
            env: base(&[
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    token_file.display().to_string(),
                ),
                (
                    "AWS_ROLE_ARN",
                    format!("arn:aws:iam::{ACCOUNT}:role/canary-web-identity"),
                ),
                ("AWS_ROLE_SESSION_NAME", "canary".into()),
            ]),
            canaries: WEB_IDENTITY.split('.').skip(1).collect(),
        },
    ]
}

/// Where a secret's name is followed by anything but the redaction marker.
fn unredacted_values(log: &str) -> Vec<String> {
    const NAMES: &[&str] = &[
        "x-amz-sso_bearer_token\": \"",
        "X-Amz-Security-Token=",
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "<SecretAccessKey>",
        "<SessionToken>",
        "secretAccessKey\\\":\\\"",
        "sessionToken\\\":\\\"",
        "WebIdentityToken=",
        "k8s-aws-v1.",
    ];
    let mut found = Vec::new();
    for name in NAMES {
        for (at, _) in log.match_indices(name) {
            let after = &log[at + name.len()..];
            if !after.starts_with("<redacted>") {
                found.push(format!(
                    "{name}{}",
                    after.chars().take(24).collect::<String>()
                ));
            }
        }
    }
    found
}

#[test]
fn no_secret_reaches_the_log_at_any_verbosity_from_any_credential_source() {
    let moto = Moto::start();
    let sso = SsoPortal::start();
    let mut ms = Meshstack::new(None);
    let sources = sources(&ms, &moto, &sso);
    let mut leaks = Vec::new();
    for source in &sources {
        ms.extra_env = source.env.clone();
        for verbosity in ["-v", "-vv", "-vvv"] {
            for args in [
                &["token", "--cluster", "demo", "--region", REGION][..],
                &["plan"][..],
            ] {
                let mut argv = vec![verbosity];
                argv.extend_from_slice(args);
                let out = ms.run(&argv);
                let what = format!("{} `meshstack {}`", source.name, argv.join(" "));
                assert_eq!(out.status.code(), Some(0), "{what}: {}", describe(&out));
                let log = String::from_utf8_lossy(&out.stderr);
                let mut secrets: Vec<String> =
                    source.canaries.iter().map(|c| c.to_string()).collect();
                if args[0] == "token" {
                    // The token itself is the output; it must not be in the log as well.
                    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    let token = doc["status"]["token"].as_str().unwrap().to_string();
                    assert!(token.starts_with("k8s-aws-v1."), "{doc}");
                    secrets.push(token["k8s-aws-v1.".len()..].to_string());
                }
                for secret in &secrets {
                    if log.contains(secret.as_str()) {
                        let line = log.lines().find(|l| l.contains(secret.as_str())).unwrap();
                        leaks.push(format!("{what}: {secret} in: {}", cut(line)));
                    }
                }
                for value in unredacted_values(&log) {
                    leaks.push(format!("{what}: unredacted {value}"));
                }
                if verbosity == "-vvv" && args[0] == "plan" {
                    // The credentials came from where the source says: the SDK's trace names
                    // the call that fetched them.
                    let sign = match source.name {
                        n if n.starts_with("an SSO") => "x-amz-sso_bearer_token",
                        n if n.starts_with("web identity") => "AssumeRoleWithWebIdentity",
                        _ => "x-amz-security-token",
                    };
                    assert!(
                        log.contains(sign),
                        "{what}: no `{sign}` in the trace, so this source was not exercised"
                    );
                }
            }
        }
    }
    let portal = sso.requests.lock().unwrap();
    assert!(
        portal
            .iter()
            .any(|r| r.contains(&format!("x-amz-sso_bearer_token: {SSO_BEARER}"))),
        "the SSO stand-in never got the canary bearer token: {portal:?}"
    );
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}

fn cut(line: &str) -> String {
    line.chars().take(300).collect()
}
