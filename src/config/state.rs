//! Where the journal and lock live: the local state folder, or an S3 location.

use super::resolve::is_region;
use super::*;

// ---------------------------------------------------------------------------------------
// State location
// ---------------------------------------------------------------------------------------

/// Where a stack's journal and lock live, and how S3 state is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateSpec {
    /// `state:`; `None` means the local state folder (`--state-dir`). `--state` wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<StateLocation>,
    /// `state_require_versioning: true`: refuse S3 state in a bucket without versioning
    /// (by default meshstack only warns).
    pub require_versioning: bool,
    /// `state_kms_key`: encrypt state objects with this KMS key (SSE-KMS) instead of S3's
    /// own keys (SSE-S3, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
}

impl StateSpec {
    pub(crate) fn is_default(&self) -> bool {
        *self == StateSpec::default()
    }
}

/// A state location: the local folder, or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// `local`: the state folder (`--state-dir`, default `.meshstack`).
    Local,
    /// `s3://BUCKET/PREFIX[?region=REGION]`.
    S3(S3Location),
}

/// An S3 prefix holding the state of many stacks: stack `NAME` keeps
/// `PREFIX/NAME/state.json` and `PREFIX/NAME/lock.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `?region=`: the bucket's region, when it is not the stack's.
    pub region: Option<String>,
    /// `?owner=`: the account that owns the bucket, when it is not the caller's. Every S3
    /// request says so (`x-amz-expected-bucket-owner`): a bucket of the same name that
    /// another account owns answers 403 instead of receiving the journal.
    pub owner: Option<String>,
}

impl S3Location {
    /// The key of `file` of stack `stack`: `PREFIX/STACK/FILE`.
    pub fn key(&self, stack: &str, file: &str) -> String {
        format!("{}{stack}/{file}", self.key_prefix())
    }

    /// `PREFIX/` (empty for a bucket's root).
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// `s3://BUCKET/KEY`.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

impl fmt::Display for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateLocation::Local => write!(f, "local"),
            StateLocation::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                if !s3.prefix.is_empty() {
                    write!(f, "/{}", s3.prefix)?;
                }
                let options = [("region", &s3.region), ("owner", &s3.owner)];
                let mut sep = '?';
                for (key, value) in options {
                    if let Some(value) = value {
                        write!(f, "{sep}{key}={value}")?;
                        sep = '&';
                    }
                }
                Ok(())
            }
        }
    }
}

impl Serialize for StateLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for StateLocation {
    type Err = String;

    /// `local`, or `s3://BUCKET[/PREFIX][?region=REGION][&owner=ACCOUNT]`; the error says how
    /// to write it.
    fn from_str(text: &str) -> Result<StateLocation, String> {
        const FORM: &str = "write s3://BUCKET/PREFIX for state shared in S3 (e.g. \
                            s3://my-team-state/meshstack), or `local` for the state folder";
        if text == "local" {
            return Ok(StateLocation::Local);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(format!("`{text}` is not a state location; {FORM}"));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket).map_err(|why| format!("`{text}`: {why}"))?;
        let prefix = prefix.trim_end_matches('/');
        check_state_prefix(prefix).map_err(|why| format!("`{text}`: {why}"))?;
        let mut region = None;
        let mut owner = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("region", r)) if is_region(r) => region = Some(r.to_string()),
                Some(("region", r)) => {
                    return Err(format!(
                        "`{text}`: `{r}` is not an AWS region name; write ?region=eu-west-1"
                    ))
                }
                Some(("owner", a)) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => {
                    owner = Some(a.to_string())
                }
                Some(("owner", a)) => {
                    return Err(format!(
                        "`{text}`: `{a}` is not an AWS account ID; write ?owner= and the 12 \
                         digits of the account that owns the bucket"
                    ))
                }
                _ => {
                    return Err(format!(
                        "`{text}`: unknown option `{pair}`; the options are ?region=REGION \
                         (the bucket's region, when it is not the stack's) and \
                         &owner=ACCOUNT (the account that owns the bucket, when it is not \
                         yours)"
                    ))
                }
            }
        }
        Ok(StateLocation::S3(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region,
            owner,
        }))
    }
}

/// S3's bucket naming rules (general purpose buckets).
pub(super) fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket name is missing; write s3://BUCKET/PREFIX".into());
    }
    let len = bucket.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "S3 bucket names have 3 to 63 characters; `{bucket}` has {len}"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "bucket name `{bucket}` contains {c:?}; S3 bucket names use lowercase letters, \
             digits, '-' and '.'"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err(format!(
            "bucket name `{bucket}` must begin and end with a letter or digit"
        ));
    }
    if bucket.contains("..") {
        return Err(format!("bucket name `{bucket}` must not contain \"..\""));
    }
    if bucket.parse::<Ipv4Addr>().is_ok() {
        return Err(format!(
            "bucket name `{bucket}` is an IP address, which S3 does not allow"
        ));
    }
    Ok(())
}

/// Longest state prefix: S3 keys have at most 1024 bytes, and the stack name and file follow.
pub(super) const STATE_PREFIX_MAX: usize = 960;

pub(super) fn check_state_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > STATE_PREFIX_MAX {
        return Err(format!(
            "the prefix has {} bytes; use at most {STATE_PREFIX_MAX}",
            prefix.len()
        ));
    }
    for segment in prefix.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "the prefix `{prefix}` has an empty segment (\"//\" or a leading '/'); \
                 write it like team/meshstack"
            ));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "the prefix `{prefix}` has a `{segment}` segment; S3 keys are not paths, write \
                 the prefix out"
            ));
        }
    }
    // AWS's "safe characters" for object keys.
    let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()/".contains(c);
    if let Some(c) = prefix.chars().find(|c| !safe(*c)) {
        return Err(format!(
            "the prefix `{prefix}` contains {c:?}; use letters, digits and ! - _ . * ' ( ) /"
        ));
    }
    Ok(())
}

pub(super) fn resolve_state(
    location: Option<String>,
    require_versioning: Option<bool>,
    kms_key: Option<String>,
) -> Check<StateSpec> {
    let location = location
        .map(|text| {
            text.parse::<StateLocation>()
                .map_err(|e| invalid("state", e))
        })
        .transpose()?;
    let kms_key = match kms_key {
        None => None,
        Some(key) if is_kms_key(&key) => Some(key),
        Some(key) => {
            return Err(invalid(
                "state_kms_key",
                format!(
                    "`{key}` is not a KMS key; give a key ID \
                     (1234abcd-12ab-34cd-56ef-1234567890ab), a key ARN \
                     (arn:aws:kms:REGION:ACCOUNT:key/ID) or an alias (alias/my-key)"
                ),
            ))
        }
    };
    Ok(StateSpec {
        location,
        require_versioning: require_versioning.unwrap_or(false),
        kms_key,
    })
}

/// A KMS key ID, multi-region key ID, key or alias ARN, or alias name.
pub(super) fn is_kms_key(key: &str) -> bool {
    let id = |s: &str| {
        let parts: Vec<usize> = s.split('-').map(str::len).collect();
        parts == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
    };
    let mrk = |s: &str| {
        s.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let alias = |s: &str| {
        s.strip_prefix("alias/").is_some_and(|a| {
            !a.is_empty()
                && !a.starts_with("aws/")
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        })
    };
    if let Some(rest) = key.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or :alias/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return parts.len() == 5
            && parts[1] == "kms"
            && is_region(parts[2])
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && (parts[4]
                .strip_prefix("key/")
                .is_some_and(|k| id(k) || mrk(k))
                || alias(parts[4]));
    }
    id(key) || mrk(key) || alias(key)
}
