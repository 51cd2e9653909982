//! Fills a data dir's `jti_blocklist` with revoked jtis straight through SQLite, to
//! measure start-up time and memory with a large blocklist (see BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example fill_blocklist -- --data-dir bench-data --count 1000000
//! ```
//!
//! The database is created (and migrated) if needed. Entries expire an hour from now,
//! so a server started within the hour loads every one of them.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Insert revoked jtis into a Tessera data dir")]
struct Args {
    /// Data dir of the server (holds tessera.db).
    #[arg(long, default_value = "tessera-data")]
    data_dir: PathBuf,
    /// Entries to insert.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Seconds from now until the entries' tokens expire.
    #[arg(long, default_value_t = 3600)]
    expires_in: i64,
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Creates and migrates the database exactly as the server would.
    drop(tessera::test_support::Store::open(&args.data_dir)?);
    let mut conn = rusqlite::Connection::open(args.data_dir.join("tessera.db"))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let exp = now + args.expires_in;
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT OR IGNORE INTO jti_blocklist (jti, expires_at) VALUES (?1, ?2)")?;
        for _ in 0..args.count {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&splitmix(&mut seed).to_be_bytes());
            b[8..].copy_from_slice(&splitmix(&mut seed).to_be_bytes());
            insert.execute(rusqlite::params![B64.encode(b), exp])?;
        }
    }
    tx.commit()?;
    let total: i64 = conn.query_row("SELECT count(*) FROM jti_blocklist", [], |r| r.get(0))?;
    println!(
        "inserted {} entries in {:.1} s; jti_blocklist now holds {total}",
        args.count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
