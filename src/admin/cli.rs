//! The `tessera admin` command tree and its dispatch: parse, run one command, print
//! its output (table, or one JSON document with `--json`), exit with a code from
//! `remote::exit`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use super::remote::{AuditFilter, Failure, Output, Remote, exit, normalize_addr};
use super::{offline, render};
use crate::clock::Clock;
use crate::config::parse_duration;

/// Default server address of the online commands.
pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

/// `tessera admin`: options shared by every subcommand, then the subcommand.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// gRPC address of the running server [env: TESSERA_ADDR] [default: http://127.0.0.1:50051].
    #[arg(long, global = true, value_name = "URL")]
    addr: Option<String>,
    /// File holding the caller's API key (else the key itself in TESSERA_API_KEY).
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Print one JSON document instead of a table (`audit tail --follow`: one per line).
    #[arg(long, global = true)]
    json: bool,
}

// The doc comments are clap's help text: `[tessera:admin]` is the scope the commands
// need, as `tessera admin --help` prints it, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// API keys: list, show, revoke, rotate [tessera:admin].
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// OAuth clients [tessera:admin].
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Token-signing keys: list, rotate, revoke [tessera:admin].
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
    /// The audit trail [tessera:admin].
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Is the server up? Health, published keys, and (with an admin key) the signing key.
    Status,
    /// Offline: mint a fresh admin API key into DIR/admin.key (mode 0600), audited;
    /// prints the file's path, never the key. The server must be stopped.
    Recover {
        /// The data dir of the (stopped) service.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Offline: seal an existing RSA private key (PEM, >= 2048 bits) into the data dir;
    /// it signs from the server's next start. The server must be stopped.
    ImportKey {
        /// RS256 or PS256.
        #[arg(long)]
        alg: String,
        /// PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE KEY") file.
        #[arg(long, value_name = "FILE")]
        pem: PathBuf,
        /// The data dir of the (stopped) service.
        #[arg(long)]
        data_dir: PathBuf,
        /// The server's TOML config file, for its master key and token lifetimes
        /// (TESSERA_* env applies too, as for `serve`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Offline: seal every secret sealed under the current master key (from the same
    /// configuration as `serve`) under a new one, in one transaction, audited. The
    /// server must be stopped, and started with the new key afterwards.
    Reseal {
        /// The data dir of the (stopped) service.
        #[arg(long)]
        data_dir: PathBuf,
        /// File holding the new master key (32 bytes, base64url), mode 0600 or stricter.
        #[arg(long, value_name = "FILE")]
        new_master_key_file: PathBuf,
        /// The server's TOML config file, for its current master key (TESSERA_* env
        /// applies too, as for `serve`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Offline, safe while serving: a consistent copy of the database (SQLite online
    /// backup) into a new file (mode 0600). The master key is not in it.
    Backup {
        /// The data dir to back up (the server may be running on it).
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the copy; never overwritten.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// The API keys, newest first (live ones; --all adds revoked and expired).
    List {
        /// Only this owner's keys.
        #[arg(long)]
        owner: Option<String>,
        /// Only keys of this environment.
        #[arg(long)]
        environment: Option<String>,
        /// Include revoked and expired keys.
        #[arg(long)]
        all: bool,
    },
    /// One API key by id (never its secret).
    Show {
        /// The key id.
        key_id: String,
    },
    /// Revoke an API key by id: it stops working at once.
    Revoke {
        /// The key id.
        key_id: String,
    },
    /// Issue a successor with the same owner, name, environment and scopes; prints the
    /// new key (only it) on stdout. The old key works for the overlap, then stops.
    Rotate {
        /// The key id to rotate.
        key_id: String,
        /// How long the old key keeps working (e.g. 24h, 7d) [server default: 24h].
        #[arg(long, value_name = "DURATION")]
        overlap: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// The registered OAuth clients, newest first.
    List,
}

#[derive(Subcommand, Debug)]
enum SigningKeysCommand {
    /// Every signing key with its state, newest first.
    List,
    /// Publish a new signing key; it signs after `key_publish_lead`, and the old one
    /// verifies until its tokens expire.
    Rotate {
        /// Emergency: sign with the new key at once. Verifiers that cached the JWKS
        /// meet an unknown kid until they refetch it.
        #[arg(long)]
        now: bool,
    },
    /// Emergency: tokens signed by KID are inactive at once; it leaves the JWKS.
    Revoke {
        /// The key id (RFC 7638 thumbprint).
        // A kid is base64url, so it may well begin with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// The newest events, oldest first; --follow keeps printing new ones.
    Tail {
        /// How many of the newest events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Poll for new events every second until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only this kind (e.g. token.revoked).
        #[arg(long)]
        kind: Option<String>,
        /// Only events by this caller key id.
        #[arg(long)]
        key_id: Option<String>,
        /// Only events about this subject.
        #[arg(long)]
        subject: Option<String>,
    },
}

/// Runs one `tessera admin` command and returns the process exit code.
pub fn run(args: AdminArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match rt.block_on(dispatch(args)) {
        Ok(Some(out)) => {
            if let Some(note) = &out.note {
                eprintln!("{note}");
            }
            let mut stdout = std::io::stdout().lock();
            let written = if json {
                writeln!(stdout, "{}", out.json)
            } else {
                write!(stdout, "{}", out.text)
            };
            if written.and_then(|_| stdout.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::from(out.code)
        }
        // Streamed commands have printed already.
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tessera admin: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(args: AdminArgs) -> Result<Option<Output>, Failure> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let clock = Clock::system();
    match &args.command {
        AdminCommand::Recover { data_dir } => {
            offline::offline_config(data_dir, None, &env)?;
            offline::recover(data_dir, &clock).await.map(Some)
        }
        AdminCommand::ImportKey {
            alg,
            pem,
            data_dir,
            config,
        } => offline::import_key(alg, pem, data_dir, config.as_deref(), &env, &clock)
            .await
            .map(Some),
        AdminCommand::Reseal {
            data_dir,
            new_master_key_file,
            config,
        } => offline::reseal(
            data_dir,
            new_master_key_file,
            config.as_deref(),
            &env,
            &clock,
        )
        .await
        .map(Some),
        AdminCommand::Backup { data_dir, to } => {
            offline::offline_config(data_dir, None, &env)?;
            offline::run_backup(data_dir, to).map(Some)
        }
        AdminCommand::Status => connect(&args, &env).await?.status().await.map(Some),
        AdminCommand::Keys { command } => {
            let remote = connect(&args, &env).await?;
            let now = clock.now();
            match command {
                KeysCommand::List {
                    owner,
                    environment,
                    all,
                } => {
                    remote
                        .keys_list(
                            owner.as_deref().unwrap_or_default(),
                            environment.as_deref().unwrap_or_default(),
                            *all,
                            now,
                        )
                        .await
                }
                KeysCommand::Show { key_id } => remote.keys_show(key_id, now).await,
                KeysCommand::Revoke { key_id } => remote.keys_revoke(key_id).await,
                KeysCommand::Rotate { key_id, overlap } => {
                    let overlap = overlap
                        .as_deref()
                        .map(parse_duration)
                        .transpose()
                        .map_err(|e| Failure::usage(format!("--overlap: {e}")))?;
                    remote.keys_rotate(key_id, overlap).await
                }
            }
            .map(Some)
        }
        AdminCommand::Clients {
            command: ClientsCommand::List,
        } => connect(&args, &env).await?.clients_list().await.map(Some),
        AdminCommand::SigningKeys { command } => {
            let remote = connect(&args, &env).await?;
            match command {
                SigningKeysCommand::List => remote.signing_keys_list().await,
                SigningKeysCommand::Rotate { now } => remote.signing_keys_rotate(*now).await,
                SigningKeysCommand::Revoke { kid } => remote.signing_keys_revoke(kid).await,
            }
            .map(Some)
        }
        AdminCommand::Audit {
            command:
                AuditCommand::Tail {
                    lines,
                    follow,
                    kind,
                    key_id,
                    subject,
                },
        } => {
            let remote = connect(&args, &env).await?;
            let filter = AuditFilter {
                subject: subject.clone().unwrap_or_default(),
                key_id: key_id.clone().unwrap_or_default(),
                kind: kind.clone().unwrap_or_default(),
            };
            audit_tail(&remote, &filter, *lines, *follow, args.json).await
        }
    }
}

/// The caller's API key: `--key-file` first, else `TESSERA_API_KEY`; `None` if neither.
fn api_key(
    key_file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Option<Zeroizing<String>>, Failure> {
    let key = match key_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("--key-file {}: {e}", path.display())))?,
        ),
        None => match env.get("TESSERA_API_KEY") {
            Some(k) => Zeroizing::new(k.clone()),
            None => return Ok(None),
        },
    };
    let trimmed = key.trim();
    if trimmed.is_empty() {
        return Err(Failure::usage(match key_file {
            Some(path) => format!("--key-file {} is empty", path.display()),
            None => "TESSERA_API_KEY is empty".into(),
        }));
    }
    Ok(Some(Zeroizing::new(trimmed.to_string())))
}

async fn connect(args: &AdminArgs, env: &HashMap<String, String>) -> Result<Remote, Failure> {
    let addr = args
        .addr
        .clone()
        .or_else(|| env.get("TESSERA_ADDR").cloned())
        .unwrap_or_else(|| DEFAULT_ADDR.into());
    let addr = normalize_addr(&addr)?;
    let key = api_key(args.key_file.as_deref(), env)?;
    Remote::connect(&addr, key).await
}

async fn audit_tail(
    remote: &Remote,
    filter: &AuditFilter,
    lines: u32,
    follow: bool,
    json: bool,
) -> Result<Option<Output>, Failure> {
    let events = remote.audit_newest(filter, lines).await?;
    if !follow {
        let text: String = events
            .iter()
            .map(|e| format!("{}\n", render::audit_line(e)))
            .collect();
        let doc = json!({ "events": events.iter().map(render::audit_json).collect::<Vec<_>>() });
        return Ok(Some(Output {
            text,
            json: doc,
            note: None,
            code: 0,
        }));
    }
    // Following: one line per event as it comes (JSON Lines with --json).
    let print = |events: &[crate::proto::AuditEvent]| -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        for e in events {
            let line = if json {
                render::audit_json(e).to_string()
            } else {
                render::audit_line(e)
            };
            writeln!(out, "{line}").map_err(|_| Failure::new(exit::FAILURE, "stdout closed"))?;
        }
        out.flush()
            .map_err(|_| Failure::new(exit::FAILURE, "stdout closed"))
    };
    print(&events)?;
    let mut last = events.last().map(|e| (e.id, e.at));
    if lines == 0 {
        // Nothing printed, but following starts after the newest event, not at the start.
        last = remote
            .audit_newest(filter, 1)
            .await?
            .last()
            .map(|e| (e.id, e.at));
    }
    // On stderr, so stdout stays pure data; it also marks that the cursor is set.
    eprintln!("following new audit events every second (Ctrl-C to stop)");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let (after, since) = last.map_or((0, None), |(id, at)| (id, at));
        let fresh = remote.audit_after(filter, after, since).await?;
        print(&fresh)?;
        if let Some(e) = fresh.last() {
            last = Some((e.id, e.at));
        }
    }
}
