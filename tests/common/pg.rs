//! The PostgreSQL side of the backend parameter: one database per test process,
//! created on first use and named after the process, and one schema per data dir in
//! it, so servers in one test run never see each other's state (and a server restarted
//! on the same data dir finds its own). Databases left by earlier test processes that
//! are no longer running are dropped on first use.

use std::path::Path;
use std::sync::OnceLock;

use tessera::config::DatabaseUrl;

/// Whether `TESSERA_TEST_BACKEND=postgres`.
pub fn enabled() -> bool {
    std::env::var("TESSERA_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// The server URL without a database.
pub fn server_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// The server's `host:port`, from [`server_url`].
pub fn server_addr() -> String {
    let url = server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// Runs `sql` (statements separated by `;`) on `database`, on a thread of its own so
/// any caller (sync or async) may use it.
pub fn admin(database: &str, sql: &str) -> Result<Vec<String>, String> {
    let url = format!("{}/{database}", server_url());
    let sql = sql.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot reach the test PostgreSQL: {e}"))?;
            tokio::spawn(conn);
            let mut out = Vec::new();
            for msg in client.simple_query(&sql).await.map_err(|e| e.to_string())? {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
                    out.push(r.get(0).unwrap_or_default().to_string());
                }
            }
            Ok(out)
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
}

/// This process's database, created on first use.
pub fn database() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        drop_stale();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tessera_test_{}_{nanos}", std::process::id());
        admin("postgres", &format!("CREATE DATABASE {name}")).expect("create the test database");
        name
    })
}

/// Drops test databases whose process is gone.
fn drop_stale() {
    let Ok(names) = admin(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'tessera\\_test\\_%'",
    ) else {
        return;
    };
    for name in names {
        let pid = name.split('_').nth(2).unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = admin(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A schema name for `data_dir`: the same dir always maps to the same schema.
fn schema_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("s{:016x}", h.finish())
}

/// A URL whose connections work in `schema` of this process's database.
pub fn url_in(schema: &str) -> String {
    format!(
        "{}/{}?options=-csearch_path%3D{schema}",
        server_url(),
        database()
    )
}

/// The database for a server on `data_dir`: `None` (its SQLite file) unless this run
/// is on PostgreSQL, else a schema of its own, created if need be.
pub fn backend_for(data_dir: &Path) -> Option<DatabaseUrl> {
    if !enabled() {
        return None;
    }
    let schema = schema_for(data_dir);
    admin(database(), &format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .expect("create the test schema");
    Some(DatabaseUrl::Postgres(url_in(&schema)))
}

/// A new, empty schema `name` (dropped first if an earlier run left it) and the URL of
/// connections working in it: for tests that start servers sharing one database.
pub fn fresh_schema(name: &str) -> String {
    let schema = format!("{name}_{}", std::process::id());
    admin(
        database(),
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )
    .expect("create the test schema");
    url_in(&schema)
}

/// Every text and binary value stored in the schema of the server on `data_dir`, as
/// bytes (text as UTF-8), each named `table.column`: what tests that look for secrets
/// in the SQLite file's bytes look through on PostgreSQL.
pub fn stored_values(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    use tessera::test_support::params;
    assert!(enabled(), "stored_values reads a PostgreSQL schema");
    super::with_database(data_dir, |db| {
        let columns = db.query_map(
            "SELECT quote_ident(table_name::text), quote_ident(column_name::text), data_type::text
             FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb')
             ORDER BY table_name, column_name",
            params![],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for (table, column, data_type) in columns {
            let value = if data_type == "bytea" {
                column.clone()
            } else {
                format!("convert_to({column}::text, 'UTF8')")
            };
            let sql = format!("SELECT {value} FROM {table} WHERE {column} IS NOT NULL");
            for v in db.query_map(&sql, params![], |r| r.get::<Vec<u8>>(0))? {
                out.push((format!("{table}.{column}"), v));
            }
        }
        Ok(out)
    })
}
