//! EKS bearer tokens, made in-process the way aws-iam-authenticator makes them, so neither the
//! `aws` CLI nor the authenticator binary is needed to reach a cluster.
//!
//! The token is a presigned STS `GetCallerIdentity` URL. The API server's authenticator calls
//! that URL and learns who signed it; the signed `x-k8s-aws-id` header binds the token to one
//! cluster, so a token for cluster A is refused by cluster B. Making one is pure computation
//! over credentials and a clock — no network call — which is what lets `meshstack token` run
//! as a kubectl exec plugin and the Kubernetes stages build their clients from the same
//! function.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningError, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;

/// What every EKS token starts with (the authenticator's "v1" token format).
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// The header that names the cluster; it is signed, so the token is valid for that cluster only.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";

/// The `apiVersion` of the ExecCredential kubectl expects from an exec plugin.
pub const EXEC_CREDENTIAL_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// The presigned URL's own lifetime (`X-Amz-Expires`), as aws-iam-authenticator sets it. EKS
/// does not go by it: it accepts a token for 15 minutes after `X-Amz-Date`.
pub const PRESIGN_EXPIRY: Duration = Duration::from_secs(60);

/// How long a client may keep using a token: one minute less than the 15 minutes EKS accepts
/// it, so that a client refreshing at `expirationTimestamp` never sends one that has just
/// expired (clock skew, a slow request). aws-iam-authenticator uses the same margin.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// An EKS bearer token and the time after which clients should fetch a new one.
#[derive(Clone, PartialEq, Eq)]
pub struct EksToken {
    /// `k8s-aws-v1.` + base64url (no padding) of the presigned URL. A credential: never log it.
    pub token: String,
    /// Signing time + [`TOKEN_LIFETIME`].
    pub expires_at: SystemTime,
}

// The token is as good as the credentials that signed it for 15 minutes; keep it out of logs.
impl std::fmt::Debug for EksToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &"** redacted **")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The cluster name is not one EKS allows (1–100 of letters, digits, `-` and `_`, starting
    /// with a letter or digit); it would not fit in the signed header either.
    #[error("invalid EKS cluster name {0:?}: use 1-100 letters, digits, '-' or '_', starting with a letter or digit")]
    InvalidCluster(String),
    /// The region is not a valid AWS region name, so it cannot be part of the STS host name.
    #[error("invalid AWS region {0:?}: expected a name like us-east-1")]
    InvalidRegion(String),
    /// The SigV4 signer refused the request.
    #[error("cannot presign the STS request")]
    Signing(#[source] SigningError),
}

/// The regional STS host of `region`, where the API server's authenticator sends the token.
/// China regions live under `amazonaws.com.cn`; every other commercial and GovCloud region under
/// `amazonaws.com`.
pub fn sts_host(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("sts.{region}.{suffix}")
}

fn valid_cluster_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 100
}

fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 50
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A bearer token for EKS cluster `cluster` in `region`, signed with `creds` at `now`.
///
/// Exactly what aws-iam-authenticator produces: a GET of
/// `https://sts.<region>.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15`, presigned
/// with SigV4 in the query string (service `sts`, `X-Amz-Expires=60`) with the header
/// `x-k8s-aws-id: <cluster>` signed (`X-Amz-SignedHeaders=host;x-k8s-aws-id`), then
/// `k8s-aws-v1.` + base64url-without-padding of the URL.
///
/// # Guarantees
/// Pure: no network call, no clock read, no environment lookup; the same inputs give the same
/// token. A session token in `creds` is signed into the URL as `X-Amz-Security-Token`.
///
/// # Errors
/// [`TokenError::InvalidCluster`] / [`TokenError::InvalidRegion`] for names that cannot be a
/// cluster or a region; [`TokenError::Signing`] if the signer refuses the request.
pub fn eks_token(
    cluster: &str,
    region: &str,
    creds: &Credentials,
    now: SystemTime,
) -> Result<EksToken, TokenError> {
    if !valid_cluster_name(cluster) {
        return Err(TokenError::InvalidCluster(cluster.to_string()));
    }
    if !valid_region(region) {
        return Err(TokenError::InvalidRegion(region.to_string()));
    }
    let url = format!(
        "https://{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_host(region)
    );

    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRY);
    let identity = Identity::from(creds.clone());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .expect("identity, region, name, time and settings are all set")
        .into();
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        // The GET has no body; the signature covers the hash of the empty payload, as the
        // authenticator's (and STS's) canonical request does.
        SignableBody::Bytes(&[]),
    )
    .map_err(TokenError::Signing)?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(TokenError::Signing)?
        .into_parts();

    // Let the signer's own query writer add its parameters, so the URL's encoding is the one
    // it signed.
    let mut request = http::Request::get(url.as_str())
        .body(())
        .expect("a URL built from a validated region is a valid URI");
    instructions.apply_to_request_http1x(&mut request);
    let presigned = request.uri().to_string();

    Ok(EksToken {
        token: format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
        ),
        expires_at: now + TOKEN_LIFETIME,
    })
}

/// The ExecCredential kubectl (or any client-go program) reads from an exec plugin's stdout.
pub fn exec_credential_json(token: &EksToken) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": EXEC_CREDENTIAL_API_VERSION,
        "kind": "ExecCredential",
        "spec": {},
        "status": {
            "expirationTimestamp": rfc3339_utc(token.expires_at),
            "token": token.token,
        },
    })
}

/// `2024-01-02T03:04:05Z`: RFC 3339 in UTC, whole seconds (rounded down, so a client never
/// holds a token longer than intended). Times before 1970 print as the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d, hh, mm, ss) = crate::clock::utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    /// 2024-01-02T03:04:05Z.
    const T: u64 = 1_704_164_645;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn creds(session: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session.map(str::to_string),
            None,
            "test",
        )
    }

    /// The token's URL: (scheme://host/path, decoded query pairs in order).
    fn decode(token: &str) -> (String, Vec<(String, String)>) {
        let b64 = token.strip_prefix(TOKEN_PREFIX).expect("prefix");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .expect("base64url without padding");
        let url = String::from_utf8(url).expect("utf-8");
        let (base, query) = url.split_once('?').expect("query");
        let pairs = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("k=v");
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        (base.to_string(), pairs)
    }

    fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// SigV4's URI encoding: everything but unreserved characters as %XX.
    fn sigv4_encode(s: &str) -> String {
        s.bytes()
            .map(|c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (c as char).to_string()
                }
                _ => format!("%{c:02X}"),
            })
            .collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What STS does with a presigned URL, written from the SigV4 specification and nothing of
    /// aws-sigv4: rebuild the canonical request from the URL's query (minus the signature) and
    /// the headers the URL says were signed, and compute the signature the URL must carry.
    fn expected_signature(
        host: &str,
        pairs: &[(String, String)],
        cluster: &str,
        secret: &str,
    ) -> String {
        let mut query: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "X-Amz-Signature")
            .map(|(k, v)| (sigv4_encode(k), sigv4_encode(v)))
            .collect();
        query.sort();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let canonical = format!(
            "GET\n/\n{}\nhost:{host}\nx-k8s-aws-id:{cluster}\n\nhost;x-k8s-aws-id\n{}",
            query.join("&"),
            hex(&Sha256::digest(b""))
        );
        let date = param(pairs, "X-Amz-Date").unwrap();
        let scope = param(pairs, "X-Amz-Credential")
            .unwrap()
            .split_once('/')
            .unwrap()
            .1;
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut parts = scope.split('/');
        let (day, region, service) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let k = hmac(format!("AWS4{secret}").as_bytes(), day);
        let k = hmac(&k, region);
        let k = hmac(&k, service);
        let k = hmac(&k, "aws4_request");
        hex(&hmac(&k, &string_to_sign))
    }

    #[test]
    fn token_is_a_presigned_get_caller_identity_url() {
        for (region, host) in [
            ("us-east-1", "sts.us-east-1.amazonaws.com"),
            ("eu-west-1", "sts.eu-west-1.amazonaws.com"),
            ("cn-north-1", "sts.cn-north-1.amazonaws.com.cn"),
        ] {
            let t = eks_token("demo", region, &creds(None), at(T)).unwrap();
            assert!(t.token.starts_with("k8s-aws-v1."), "{}", t.token);
            assert!(!t.token.contains('='), "padding in {}", t.token);
            assert!(!t.token.contains(['+', '/']), "not base64url: {}", t.token);

            let (base, pairs) = decode(&t.token);
            assert_eq!(base, format!("https://{host}/"));
            let want = [
                ("Action", "GetCallerIdentity".to_string()),
                ("Version", "2011-06-15".to_string()),
                ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
                (
                    "X-Amz-Credential",
                    format!("AKIDEXAMPLE/20240102/{region}/sts/aws4_request"),
                ),
                ("X-Amz-Date", "20240102T030405Z".to_string()),
                ("X-Amz-Expires", "60".to_string()),
                ("X-Amz-SignedHeaders", "host;x-k8s-aws-id".to_string()),
            ];
            for (k, v) in &want {
                assert_eq!(param(&pairs, k), Some(v.as_str()), "{k} in {region}");
            }
            let sig = param(&pairs, "X-Amz-Signature").expect("signature");
            assert_eq!(sig.len(), 64, "{sig}");
            assert!(sig
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert_eq!(param(&pairs, "X-Amz-Security-Token"), None);
            assert_eq!(
                pairs.len(),
                want.len() + 1,
                "unexpected parameters: {pairs:?}"
            );
        }
    }

    #[test]
    fn signature_matches_an_independent_sigv4_computation() {
        for (cluster, session) in [
            ("demo", None),
            ("other-cluster_2", None),
            (
                "demo",
                Some("FwoGZXIvYXdzEJr//////////wEaDA+session/token=="),
            ),
        ] {
            let c = creds(session);
            let t = eks_token(cluster, "us-east-1", &c, at(T)).unwrap();
            let (_, pairs) = decode(&t.token);
            assert_eq!(param(&pairs, "X-Amz-Security-Token"), session);
            assert_eq!(
                param(&pairs, "X-Amz-Signature").unwrap(),
                expected_signature(
                    "sts.us-east-1.amazonaws.com",
                    &pairs,
                    cluster,
                    c.secret_access_key()
                ),
                "cluster {cluster}, session token {session:?}"
            );
        }
    }

    #[test]
    fn the_cluster_name_and_time_are_signed() {
        let sig = |cluster: &str, secs: u64| {
            let t = eks_token(cluster, "us-east-1", &creds(None), at(secs)).unwrap();
            param(&decode(&t.token).1, "X-Amz-Signature")
                .unwrap()
                .to_string()
        };
        assert_eq!(sig("a", T), sig("a", T), "deterministic");
        assert_ne!(sig("a", T), sig("b", T), "x-k8s-aws-id must be signed");
        assert_ne!(sig("a", T), sig("a", T + 1));
    }

    #[test]
    fn expiry_is_fourteen_minutes_after_signing() {
        let t = eks_token("demo", "us-east-1", &creds(None), at(T)).unwrap();
        assert_eq!(t.expires_at, at(T + 14 * 60));
        let doc = exec_credential_json(&t);
        assert_eq!(doc["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(doc["kind"], "ExecCredential");
        assert_eq!(doc["status"]["token"], t.token.as_str());
        assert_eq!(doc["status"]["expirationTimestamp"], "2024-01-02T03:18:05Z");
    }

    #[test]
    fn rfc3339_formatting() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_799, "2024-02-28T23:59:59Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (T, "2024-01-02T03:04:05Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_utc(at(secs)), want, "{secs}");
        }
        // Sub-seconds round down; times before the epoch clamp to it.
        assert_eq!(
            rfc3339_utc(at(T) + Duration::from_millis(999)),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn bad_names_are_refused_before_signing() {
        let c = creds(None);
        let long = "a".repeat(101);
        for cluster in ["", "-x", "a b", "a\nb", "ä", long.as_str()] {
            assert!(
                matches!(
                    eks_token(cluster, "us-east-1", &c, at(T)),
                    Err(TokenError::InvalidCluster(_))
                ),
                "{cluster:?}"
            );
        }
        for region in ["", "US-EAST-1", "us-east-1/x", "evil.com/", "-a"] {
            assert!(
                matches!(
                    eks_token("demo", region, &c, at(T)),
                    Err(TokenError::InvalidRegion(_))
                ),
                "{region:?}"
            );
        }
        assert!(eks_token(&"a".repeat(100), "us-east-1", &c, at(T)).is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let t = eks_token("demo", "us-east-1", &creds(None), at(T)).unwrap();
        assert!(!format!("{t:?}").contains(TOKEN_PREFIX));
    }
}
