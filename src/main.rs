//! `tessera` — launcher only: parse flags, load config, start logs, bind, run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera::clock::Clock;
use tessera::config::{Config, Layer};
use tessera::server::{self, Listeners};

#[derive(Parser)]
#[command(name = "tessera", version, about = "A gRPC security-token service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Print a fresh, well-formed API key (nothing is stored): for
    /// TESSERA_BOOTSTRAP_ADMIN_KEY or a secret store.
    Keygen {
        /// Environment label embedded in the key (1-16 of [a-z0-9]).
        #[arg(long, default_value = "admin")]
        environment: String,
    },
    /// Operate a server: over gRPC with an API key (keys, clients, signing-keys,
    /// audit, status), or offline on a data dir (recover, import-key, reseal, backup).
    Admin(tessera::admin::cli::AdminArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    grpc_addr: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    http_addr: Option<String>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:9464].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// State directory [default: ./tessera-data].
    #[arg(long)]
    data_dir: Option<String>,
    /// Database: sqlite://FILE or postgres://… [default: sqlite://<data dir>/tessera.db].
    ///
    /// Other local users can read command lines: give a URL with a password in
    /// TESSERA_DATABASE_URL or the config file instead.
    #[arg(long)]
    database_url: Option<String>,
    /// Token issuer (`iss`) [default: http://127.0.0.1:8080].
    #[arg(long)]
    issuer: Option<String>,
    /// Signing algorithm for new keys: EdDSA or ES256 [default: EdDSA].
    #[arg(long)]
    signing_alg: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    log_format: Option<String>,
}

fn load_config(args: ServeArgs) -> Result<Config, String> {
    let env = environment()?;
    // Before logging is set up, and names only: a value could be a secret.
    for name in Layer::unknown_env(&env) {
        eprintln!("tessera: warning: {name} is not a Tessera setting; ignored");
    }
    let flags = Layer {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        metrics_addr: args.metrics_addr,
        data_dir: args.data_dir,
        database_url: args.database_url.map(tessera::config::Secret::from),
        issuer: args.issuer,
        signing_alg: args.signing_alg,
        log_format: args.log_format,
        ..Layer::default()
    };
    Config::load(flags, args.config, &env)
}

/// The process environment. `std::env::vars` would panic on a value that is not
/// UTF-8; ours must be UTF-8, anyone else's is not our business.
fn environment() -> Result<HashMap<String, String>, String> {
    let mut env = HashMap::new();
    for (k, v) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        match v.into_string() {
            Ok(v) => {
                env.insert(k, v);
            }
            Err(_) if k.starts_with("TESSERA_") => {
                return Err(format!("{k}: the value is not valid UTF-8"));
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// The server's runtime: tokio's multi-threaded one, without the LIFO slot. With the
/// slot, a call that finishes wakes its connection's task into it, the task runs next
/// and flushes that one answer: a `writev` (and a wake-up of the peer) per answer.
/// Without it the connection's task queues behind the other calls ready on the worker
/// and sends their answers together. On one core that made health 44 % and Issue 30 %
/// faster (BENCHMARKS.md). Turning the slot off is tokio's unstable API, enabled by
/// `--cfg tokio_unstable` in `.cargo/config.toml`; a build without it (`RUSTFLAGS` in
/// the environment replaces the file's flags) works the same, only slower.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A flag that does not parse is a usage error like any other bad setting
            // (clap's own code is 2); --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Keygen { environment } => {
            if !tessera::apikeys::valid_environment(&environment) {
                eprintln!("tessera: environment must be 1-16 characters of [a-z0-9]");
                return ExitCode::from(64);
            }
            let (_, key) = tessera::apikeys::generate(&environment);
            println!("{}", key.expose());
            return ExitCode::SUCCESS;
        }
        Command::Admin(args) => return tessera::admin::cli::run(args),
    };
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tessera: bad configuration: {e}");
            return ExitCode::from(64); // EX_USAGE
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's channel must be built inside the runtime.
    let telemetry = {
        let _entered = rt.enter();
        tessera::telemetry::init(&config)
    };
    let result = rt.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        server::run(
            config,
            Clock::system(),
            listeners,
            server::shutdown_signal(),
        )
        .await
    });
    drop(telemetry); // flush spans before the runtime goes
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("tessera stopped: {e:#}");
            // Logs may go to a collector; the operator starting it reads stderr.
            eprintln!("tessera: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kid_beginning_with_a_hyphen_is_a_kid_not_a_flag() {
        let cli = Cli::try_parse_from(["tessera", "admin", "signing-keys", "revoke", "-gX2k"]);
        assert!(cli.is_ok(), "{:?}", cli.err());
    }

    /// The project's cargo configuration reaches the build (see `runtime`): without
    /// it the server still runs, but every answer leaves in a write of its own.
    #[test]
    fn built_with_tokio_unstable() {
        #[cfg(not(tokio_unstable))]
        panic!(
            "built without --cfg tokio_unstable: is .cargo/config.toml there, or RUSTFLAGS set?"
        );
        runtime().expect("runtime");
    }
}
