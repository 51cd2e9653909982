//! `DatabaseUrl`: where the state lives (a SQLite file or a PostgreSQL URL), how the
//! setting is parsed, and how any password in it is kept out of logs and errors.

use std::path::PathBuf;

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded default: one SQLite file, locked to one process.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by any number of replicas (the URL as given).
    Postgres(String),
}

impl DatabaseUrl {
    /// The URL with any password replaced by `***`: fit for logs and error messages.
    /// A PostgreSQL URL is masked both where RFC 3986 puts the password (the user
    /// info, up to the last `@` before the path) and where the driver reads it (up to
    /// the first `@`, and a `password=` query parameter).
    pub(crate) fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_postgres_url(url),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;
    /// `sqlite://PATH` (the database file; a relative path is from the working
    /// directory) or `postgres://…` / `postgresql://…`. The value may carry a password,
    /// so errors never repeat it.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs the path of the database file (e.g. sqlite://tessera-data/tessera.db)"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(s.to_string()));
        }
        Err("must start with sqlite:// or postgres:// (or postgresql://)".into())
    }
}

/// [`DatabaseUrl::redacted`] for a PostgreSQL URL: every byte range that could hold
/// the password becomes `***`.
fn redact_postgres_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let mut masked: Vec<(usize, usize)> = Vec::new();
    // The user info: up to the last `@` before the path, or, with none there, the first
    // `@` anywhere (the driver takes everything up to the first `@` as `user:password`,
    // so a password with an unescaped `/` ends there).
    let path_start = rest.find('/').unwrap_or(rest.len());
    let driver_creds_end = rest.find('@');
    if let Some(end) = rest[..path_start].rfind('@').or(driver_creds_end)
        && let Some(colon) = rest[..end].find(':')
    {
        masked.push((colon + 1, end));
    }
    // Query parameters, split as the driver splits them: `key` up to `=`, value up to
    // `&`; a (percent-decoded) `password` key's value is masked.
    let after_creds = driver_creds_end.map_or(0, |i| i + 1);
    let query_start = rest[after_creds..].find(['/', '?']).and_then(|i| {
        let i = after_creds + i;
        if rest[i..].starts_with('?') {
            Some(i + 1)
        } else {
            rest[i..].find('?').map(|j| i + j + 1)
        }
    });
    if let Some(mut at) = query_start {
        while let Some(eq) = rest[at..].find('=') {
            let key = &rest[at..at + eq];
            let value_start = at + eq + 1;
            let value_end = rest[value_start..]
                .find('&')
                .map_or(rest.len(), |i| value_start + i);
            if percent_decode(key).eq_ignore_ascii_case(b"password") {
                masked.push((value_start, value_end));
            }
            at = (value_end + 1).min(rest.len());
        }
    }
    masked.sort_unstable();
    let mut out = format!("{scheme}://");
    let mut pos = 0;
    for (start, end) in masked {
        if start >= pos {
            out.push_str(&rest[pos..start]);
            out.push_str("***");
            pos = end;
        } else {
            // Overlaps the range just masked: stretch it.
            pos = pos.max(end);
        }
    }
    out.push_str(&rest[pos..]);
    out
}

/// `%XX` escapes decoded; anything else kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{Config, Layer};

    #[test]
    fn database_passwords_do_not_print() {
        for (v, shown) in [
            ("postgres://u:hunter2@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u:hunter2@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            // Unescaped `@` and `/` in the password.
            ("postgres://u:p@hunter2@h/db", "postgres://u:***@h/db"),
            ("postgres://u:hunter2/x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
            // The driver's `password` parameter, also percent-encoded.
            (
                "postgres://u@h/db?sslmode=disable&password=hunter2&application_name=t",
                "postgres://u@h/db?sslmode=disable&password=***&application_name=t",
            ),
            (
                "postgres://h?%70assword=hunter2",
                "postgres://h?%70assword=***",
            ),
            (
                "postgres://u:hunter2@h/db?password=hunter2",
                "postgres://u:***@h/db?password=***",
            ),
            // Nothing secret: kept whole.
            ("postgres://alice@h/db", "postgres://alice@h/db"),
            (
                "postgres://h:5432,h2:5433/db?sslmode=require",
                "postgres://h:5432,h2:5433/db?sslmode=require",
            ),
        ] {
            let url = DatabaseUrl::Postgres(v.into());
            assert_eq!(url.redacted(), shown, "{v}");
            assert_eq!(url.to_string(), shown, "{v}");
            assert_eq!(format!("{url:?}"), format!("Postgres({shown:?})"), "{v}");
        }
        let env: HashMap<String, String> = [(
            "TESSERA_DATABASE_URL".into(),
            "postgres://u:hunter2@h/db".into(),
        )]
        .into();
        let layer = Layer::from_env(&env).unwrap();
        assert!(!format!("{layer:?}").contains("hunter2"));
        let c = Config::from_layers(layer, &env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            format!("{:?}", DatabaseUrl::Sqlite("t.db".into())),
            "Sqlite(\"t.db\")"
        );
        assert_eq!(
            DatabaseUrl::Sqlite("t.db".into()).redacted(),
            "sqlite://t.db"
        );
    }
}
