//! Errors: what a stack file did wrong, and serde_yaml's messages turned into them (with the
//! field path recovered and a did-you-mean for misspelt keys and values).

use super::*;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a stack file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read the stack file", path.display())]
    Io {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// One setting is wrong: bad value, wrong type or unknown key.
    #[error("{file}: {field}: {message}")]
    Field {
        /// What the caller called the file (a path, or a description for built-in text).
        file: String,
        /// Dotted path with list indices, like `node_group.instance_types[0]`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The file as a whole is wrong: not YAML, empty, or not a mapping.
    #[error("{file}: {message}")]
    File {
        /// What the caller called the file.
        file: String,
        /// What is wrong and how to fix it; YAML syntax errors include the line.
        message: String,
    },
}

impl ConfigError {
    /// The dotted path of the offending setting, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            ConfigError::Io { .. } | ConfigError::File { .. } => None,
        }
    }
}

/// A validation failure before the file name is attached.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) field: String,
    pub(super) message: String,
}

pub(super) type Check<T> = Result<T, Invalid>;

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// serde_yaml errors -> ConfigError
// ---------------------------------------------------------------------------------------

/// Turns a serde_yaml error into a `ConfigError`, recovering the field path serde_yaml puts
/// in front of its message (`network.nat: unknown variant ...`).
pub(super) fn yaml_error(file: &str, yaml: &str, err: &serde_yaml::Error) -> ConfigError {
    let text = err.to_string();
    // serde_yaml appends " at line L column C" (omitted for line 1 column 1); libyaml syntax
    // errors carry their positions inside the text, and those are left alone.
    let (body, location) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            match text.strip_suffix(&suffix) {
                Some(body) => (body.to_owned(), Some((loc.line(), loc.column()))),
                None if text.contains(" at line ") => (text.clone(), None),
                None => (text.clone(), Some((loc.line(), loc.column()))),
            }
        }
        None => (text.clone(), None),
    };
    let at = location
        .map(|(line, column)| format!(" (line {line}, column {column})"))
        .unwrap_or_default();
    let (path, body) = split_path(&body);
    let join = |key: &str| match path {
        Some(path) => format!("{path}.{key}"),
        None => key.to_owned(),
    };
    let field_error = |field: String, message: String| ConfigError::Field {
        file: file.to_owned(),
        field,
        message,
    };

    if body.starts_with("unknown field `") || body.starts_with("unknown variant `") {
        let mut ticked = backticked(body);
        let word = ticked.next().unwrap_or_default();
        let hint = closest(word, ticked)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let field = if body.starts_with("unknown field") {
            join(word)
        } else {
            path.unwrap_or(".").to_owned()
        };
        return field_error(field, format!("{body}{at}{hint}"));
    }
    if let Some(key) = body
        .strip_prefix("duplicate entry with key \"")
        .and_then(|rest| rest.strip_suffix('"'))
    {
        // serde_yaml points at the mapping that holds the key twice, not at the key.
        let within = location
            .map(|(line, column)| format!(" in the mapping at line {line}, column {column}"))
            .unwrap_or_default();
        return field_error(
            join(key),
            format!("`{key}` appears more than once{within}; each key may appear only once"),
        );
    }
    if let Some(path) = path {
        return field_error(path.to_owned(), format!("{}{at}", humanize(body)));
    }
    let message = if body.contains("more than one document") {
        "the file holds more than one YAML document (`---` separators); a stack file holds \
         exactly one stack"
            .to_owned()
    } else {
        // libyaml's complaint about a tab ("cannot start any token") does not say "tab".
        let tabbed = err
            .location()
            .and_then(|loc| yaml.lines().nth(loc.line().saturating_sub(1)))
            .is_some_and(|line| line.starts_with(char::is_whitespace) && line.contains('\t'));
        let hint = if tabbed {
            "; indent with spaces, not tabs"
        } else {
            ""
        };
        format!("invalid YAML: {body}{at}{hint}")
    };
    ConfigError::File {
        file: file.to_owned(),
        message,
    }
}

/// Splits serde_yaml's `path: message` into its parts. A path never contains whitespace
/// or quotes, and none of serde's messages starts with a spaceless word and ": ".
pub(super) fn split_path(text: &str) -> (Option<&str>, &str) {
    match text.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && !head.contains(|c: char| c.is_whitespace() || c == '`' || c == '"') =>
        {
            (Some(head), rest)
        }
        _ => (None, text),
    }
}

/// Replaces Rust type names in serde messages with words a stack author knows.
pub(super) fn humanize(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(start) = out.find("struct Raw") {
        let rest = &out[start + "struct ".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        out.replace_range(
            start..start + "struct ".len() + end,
            "a mapping of settings",
        );
    }
    for ty in ["u64", "i64", "u32", "usize"] {
        if let Some(head) = out.strip_suffix(&format!("expected {ty}")) {
            out = format!("{head}expected a whole number");
        }
    }
    if let Some(head) = out.strip_suffix("expected f64") {
        out = format!("{head}expected a number");
    }
    if out.ends_with("expected a boolean") {
        out.push_str(" (true or false)");
    }
    out
}

/// The `backticked` words of a serde message, in order.
pub(super) fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = norm(word);
    candidates
        .map(|c| (edit_distance(&word, &norm(c)), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting a swap of neighbours as two edits.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = prev[j] + usize::from(ca != *cb);
            cur.push(cost.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn yaml_scalar(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}
