//! Unit tests of the configuration: layering, defaults, every refusal naming its
//! setting, and secrets that never print.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let file = Layer::from_toml(
        "grpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\nissuer = \"https://file.test\"",
    )
    .unwrap();
    let env: HashMap<String, String> = [
        ("TESSERA_HTTP_ADDR".to_string(), "127.0.0.1:3".to_string()),
        ("TESSERA_ISSUER".into(), "https://env.test".into()),
    ]
    .into_iter()
    .collect();
    let flags = Layer {
        issuer: Some("https://flag.test".into()),
        ..Layer::default()
    };
    let c = Config::from_layers(flags.or(Layer::from_env(&env).unwrap()).or(file), &env).unwrap();
    assert_eq!(c.grpc_addr.port(), 1);
    assert_eq!(c.http_addr.port(), 3);
    assert_eq!(c.issuer, "https://flag.test");
    assert_eq!(c.data_dir, PathBuf::from("tessera-data"));
}

#[test]
fn durations_and_scope_caps() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(
        parse_duration("7d").unwrap(),
        Duration::from_secs(7 * 86_400)
    );
    assert!(parse_duration("7w").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("99999999999999999999d").is_err());
    let env: HashMap<String, String> = [(
        "TESSERA_SCOPE_TTL".to_string(),
        "write:payments=60s".to_string(),
    )]
    .into_iter()
    .collect();
    let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
    assert_eq!(
        c.scope_cap(&["read".into(), "write:payments".into()]),
        Duration::from_secs(60)
    );
    assert_eq!(c.scope_cap(&["read".into()]), Duration::from_secs(3600));
    let env: HashMap<String, String> = [("TESSERA_AUDIT_RETENTION".to_string(), "30d".to_string())]
        .into_iter()
        .collect();
    let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
    assert_eq!(c.audit_retention, Duration::from_secs(30 * 86_400));
    let c =
        Config::from_layers(Layer::from_toml("audit_retention = \"2d\"").unwrap(), &env).unwrap();
    assert_eq!(c.audit_retention, Duration::from_secs(2 * 86_400));
}

#[test]
fn refresh_reuse_grace_defaults_to_zero_and_is_capped_at_five_minutes() {
    let env = HashMap::new();
    let c = Config::from_layers(Layer::default(), &env).unwrap();
    assert_eq!(c.refresh_reuse_grace, Duration::ZERO);
    let env: HashMap<String, String> =
        [("TESSERA_REFRESH_REUSE_GRACE".to_string(), "30s".to_string())]
            .into_iter()
            .collect();
    let c = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap();
    assert_eq!(c.refresh_reuse_grace, Duration::from_secs(30));
    let c = Config::from_layers(
        Layer::from_toml("refresh_reuse_grace = \"5m\"").unwrap(),
        &env,
    )
    .unwrap();
    assert_eq!(c.refresh_reuse_grace, Duration::from_secs(300));
    let e = Config::from_layers(
        Layer::from_toml("refresh_reuse_grace = \"301s\"").unwrap(),
        &env,
    )
    .unwrap_err();
    assert!(e.contains("refresh_reuse_grace"), "{e}");
}

#[test]
fn bad_settings_are_named() {
    let bad = Layer {
        grpc_addr: Some("nope".into()),
        ..Layer::default()
    };
    assert!(
        Config::from_layers(bad, &HashMap::new())
            .unwrap_err()
            .contains("grpc_addr")
    );
    assert!(Layer::from_toml("unknown_key = 1").is_err());
    let short = Layer {
        audit_retention: Some("1h".into()),
        ..Layer::default()
    };
    assert!(
        Config::from_layers(short, &HashMap::new())
            .unwrap_err()
            .contains("audit_retention")
    );
    for (k, v) in [
        ("TESSERA_MAX_CONNECTIONS", "lots"),
        ("TESSERA_MAX_REQUEST_BYTES", "lots"),
        ("TESSERA_MAX_REQUEST_BYTES", "-1"),
        ("TESSERA_SCOPE_TTL", "write:payments"),
        ("TESSERA_SCOPE_TTL", "write:payments=60s,=5m"),
        ("TESSERA_SCOPE_TTL", "write:payments=soon"),
        ("TESSERA_LOG", "[[["),
        ("TESSERA_ISSUER", "not a url"),
        ("TESSERA_ISSUER", "ftp://tessera.test"),
        ("TESSERA_ISSUER", "https://tessera.test/#frag"),
        ("TESSERA_ISSUER", "https://tessera.test/?tenant=a"),
        ("TESSERA_ISSUER", "https://user@tessera.test"),
        ("TESSERA_ISSUER", "/relative"),
        ("TESSERA_SIGNING_ALG", "RS256"),
        ("TESSERA_DATA_DIR", ""),
        ("TESSERA_MASTER_KEY_FILE", ""),
        ("TESSERA_MASTER_KEY", "not-base64!"),
        ("TESSERA_BOOTSTRAP_ADMIN_KEY", "tsk_nope"),
        ("TESSERA_OTLP_ENDPOINT", "collector:4317"),
        ("TESSERA_REQUEST_TIMEOUT", "0s"),
        ("TESSERA_DRAIN_DELAY", "soon"),
        ("TESSERA_MAX_CONNECTIONS", "0"),
        ("TESSERA_HEADER_TIMEOUT", "0s"),
        ("TESSERA_IDLE_TIMEOUT", "5x"),
        ("TESSERA_METRICS_ADDR", "nope"),
        ("TESSERA_DATABASE_URL", "mysql://db.test/tessera"),
        ("TESSERA_DATABASE_URL", "sqlite://"),
        ("TESSERA_MAX_STALENESS", "0s"),
        ("TESSERA_MAX_STALENESS", "61m"),
        ("TESSERA_MAX_STALENESS", "soon"),
    ] {
        let env: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
        let e = load(&env).unwrap_err();
        let setting = k.trim_start_matches("TESSERA_");
        assert!(
            e.contains(setting) || e.contains(&setting.to_ascii_lowercase()),
            "{k}={v}: {e}"
        );
    }
}

#[test]
fn listener_defaults_and_overrides() {
    let c = Config::default();
    assert_eq!(c.metrics_addr, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.header_timeout, Duration::from_secs(5));
    let file = Layer::from_toml(
        "metrics_addr = \"127.0.0.1:9999\"\nheader_timeout = \"2s\"\nmax_connections = 7",
    )
    .unwrap();
    let env: HashMap<String, String> =
        [("TESSERA_IDLE_TIMEOUT".to_string(), "3m".to_string())].into();
    let c = Config::from_layers(Layer::from_env(&env).unwrap().or(file), &env).unwrap();
    assert_eq!(c.metrics_addr.port(), 9999);
    assert_eq!(c.header_timeout, Duration::from_secs(2));
    assert_eq!(c.idle_timeout, Duration::from_secs(180));
    assert_eq!(c.max_connections, 7);
}

#[test]
fn a_non_loopback_bind_needs_a_master_key() {
    for (k, v) in [
        ("TESSERA_GRPC_ADDR", "0.0.0.0:50051"),
        ("TESSERA_HTTP_ADDR", "[::]:8080"),
    ] {
        let mut env: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
        let e = Config::from_layers(Layer::from_env(&env).unwrap(), &env).unwrap_err();
        assert!(e.contains("master key") && e.contains(v), "{e}");
        env.insert("TESSERA_MASTER_KEY_FILE".into(), "/run/secrets/mk".into());
        assert!(Config::from_layers(Layer::from_env(&env).unwrap(), &env).is_ok());
    }
}

fn load(env: &HashMap<String, String>) -> Result<Config, String> {
    Config::from_layers(Layer::from_env(env)?, env)
}

#[test]
fn issuers_that_are_urls_are_kept_as_written() {
    for v in [
        "https://tessera.test",
        "https://tessera.test/",
        "http://127.0.0.1:8080",
        "https://auth.example/tenants/a",
    ] {
        let env: HashMap<String, String> = [("TESSERA_ISSUER".into(), v.into())].into();
        assert_eq!(load(&env).unwrap().issuer, v);
    }
    let env: HashMap<String, String> =
        [("TESSERA_SCOPE_TTL".into(), " a=1m , b = 2m ".into())].into();
    let c = load(&env).unwrap();
    assert_eq!(c.scope_ttl["a"], Duration::from_secs(60));
    assert_eq!(c.scope_ttl["b"], Duration::from_secs(120));
    let env: HashMap<String, String> = [("TESSERA_SCOPE_TTL".into(), String::new())].into();
    assert!(load(&env).unwrap().scope_ttl.is_empty());
}

#[test]
fn secret_values_are_never_echoed_in_errors() {
    for k in ["TESSERA_MASTER_KEY", "TESSERA_BOOTSTRAP_ADMIN_KEY"] {
        let env: HashMap<String, String> = [(k.into(), "hunter2-secret".into())].into();
        let e = load(&env).unwrap_err();
        assert!(e.contains(k) && !e.contains("hunter2"), "{e}");
    }
}

#[test]
fn unknown_tessera_variables_are_found() {
    let env: HashMap<String, String> = [
        ("TESSERA_SHUTDOWN_GRAC".to_string(), "5s".to_string()),
        ("TESSERA_SHUTDOWN_GRACE".into(), "5s".into()),
        ("TESSERA_MASTER_KEY".into(), "x".into()),
        ("TESSERA_LOG".into(), "info".into()),
        ("HOME".into(), "/".into()),
    ]
    .into();
    assert_eq!(Layer::unknown_env(&env), vec!["TESSERA_SHUTDOWN_GRAC"]);
}

#[test]
fn database_defaults_to_tessera_db_in_the_data_dir() {
    let c = Config::default();
    assert_eq!(c.database_url, None);
    assert_eq!(
        c.database(),
        DatabaseUrl::Sqlite(PathBuf::from("tessera-data").join("tessera.db"))
    );
    let env: HashMap<String, String> = [("TESSERA_DATA_DIR".into(), "/var/lib/t".into())].into();
    assert_eq!(
        load(&env).unwrap().database(),
        DatabaseUrl::Sqlite(PathBuf::from("/var/lib/t/tessera.db"))
    );
}

#[test]
fn database_urls_parse() {
    for (v, want) in [
        (
            "sqlite://state/t.db",
            DatabaseUrl::Sqlite(PathBuf::from("state/t.db")),
        ),
        (
            "sqlite:///var/lib/tessera/t.db",
            DatabaseUrl::Sqlite(PathBuf::from("/var/lib/tessera/t.db")),
        ),
        (
            "postgres://tessera:pw@db.test:5432/tessera?sslmode=require",
            DatabaseUrl::Postgres(
                "postgres://tessera:pw@db.test:5432/tessera?sslmode=require".into(),
            ),
        ),
        (
            "postgresql://db.test/tessera",
            DatabaseUrl::Postgres("postgresql://db.test/tessera".into()),
        ),
    ] {
        let env: HashMap<String, String> = [("TESSERA_DATABASE_URL".into(), v.into())].into();
        let c = load(&env).unwrap();
        assert_eq!(c.database_url.as_ref(), Some(&want), "{v}");
        assert_eq!(c.database(), want, "{v}");
    }
}

#[test]
fn database_url_from_toml_env_and_flag() {
    let file =
        Layer::from_toml("database_url = \"postgres://file.test/t\"\nmax_staleness = \"1h\"")
            .unwrap();
    let c = Config::from_layers(file, &HashMap::new()).unwrap();
    assert_eq!(
        c.database(),
        DatabaseUrl::Postgres("postgres://file.test/t".into())
    );
    assert_eq!(c.max_staleness, Duration::from_secs(3600));

    let file = Layer::from_toml("database_url = \"postgres://file.test/t\"").unwrap();
    let env: HashMap<String, String> = [
        (
            "TESSERA_DATABASE_URL".to_string(),
            "sqlite://env.db".to_string(),
        ),
        ("TESSERA_MAX_STALENESS".into(), "2m".into()),
    ]
    .into();
    let c = Config::from_layers(Layer::from_env(&env).unwrap().or(file), &env).unwrap();
    assert_eq!(c.database(), DatabaseUrl::Sqlite(PathBuf::from("env.db")));
    assert_eq!(c.max_staleness, Duration::from_secs(120));

    let flags = Layer {
        database_url: Some(Secret::new("postgresql://flag.test/t")),
        ..Layer::default()
    };
    let c = Config::from_layers(flags.or(Layer::from_env(&env).unwrap()), &env).unwrap();
    assert_eq!(
        c.database(),
        DatabaseUrl::Postgres("postgresql://flag.test/t".into())
    );
}

#[test]
fn bad_database_urls_are_named_and_never_echoed() {
    for v in [
        "mysql://u:hunter2@h/db",
        "POSTGRES://u:hunter2@h/db",
        " postgres://u:hunter2@h/db",
        "u:hunter2@h/db",
        "sqlite:",
        "sqlite://",
        "",
    ] {
        let env: HashMap<String, String> = [("TESSERA_DATABASE_URL".into(), v.into())].into();
        let e = load(&env).unwrap_err();
        assert!(e.starts_with("database_url: "), "{v}: {e}");
        assert!(!e.contains("hunter2"), "{v}: {e}");
        let e = Config::from_layers(
            Layer::from_toml(&format!("database_url = {v:?}")).unwrap(),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            e.starts_with("database_url: ") && !e.contains("hunter2"),
            "{e}"
        );
    }
}

#[test]
fn max_staleness_defaults_to_30s_and_is_capped_at_an_hour() {
    let env = HashMap::new();
    let c = Config::from_layers(Layer::default(), &env).unwrap();
    assert_eq!(c.max_staleness, Duration::from_secs(30));
    for (v, ok) in [
        ("1s", true),
        ("3600", true),
        ("1h", true),
        ("0s", false),
        ("3601s", false),
    ] {
        let env: HashMap<String, String> = [("TESSERA_MAX_STALENESS".into(), v.into())].into();
        match load(&env) {
            Ok(c) => {
                assert!(ok, "{v}");
                assert_eq!(c.max_staleness, parse_duration(v).unwrap());
            }
            Err(e) => assert!(!ok && e.contains("max_staleness"), "{v}: {e}"),
        }
    }
}

#[test]
fn secrets_do_not_print() {
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
}

#[test]
fn tls_settings_from_toml_and_env() {
    let file = Layer::from_toml(
        "tls_cert_file = \"/etc/tessera/tls.crt\"\ntls_key_file = \"/etc/tessera/tls.key\"\n\
         tls_client_ca_file = \"/etc/tessera/ca.crt\"\n\
         [spiffe_callers]\n\"spiffe://example.org/ns/mesh/sa/envoy\" = [\"tessera:introspect\"]\n",
    )
    .unwrap();
    let env = HashMap::new();
    let c = Config::from_layers(file, &env).unwrap();
    assert_eq!(c.tls_cert_file, Some(PathBuf::from("/etc/tessera/tls.crt")));
    assert_eq!(
        c.spiffe_callers["spiffe://example.org/ns/mesh/sa/envoy"],
        vec!["tessera:introspect".to_string()]
    );

    let env: HashMap<String, String> = [
        ("TESSERA_TLS_CERT_FILE", "/c"),
        ("TESSERA_TLS_KEY_FILE", "/k"),
        ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
        (
            "TESSERA_SPIFFE_CALLERS",
            "spiffe://a.test/x=tessera:introspect tessera:revoke, spiffe://b.test/y=tessera:issue",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = load(&env).unwrap();
    assert_eq!(c.tls_client_ca_file, Some(PathBuf::from("/ca")));
    assert_eq!(c.spiffe_callers["spiffe://a.test/x"].len(), 2);
    assert_eq!(
        c.spiffe_callers["spiffe://b.test/y"],
        vec!["tessera:issue".to_string()]
    );
}

#[test]
fn incomplete_or_malformed_tls_settings_are_refused() {
    let rows: [(&str, &[(&str, &str)]); 6] = [
        ("cert without key", &[("TESSERA_TLS_CERT_FILE", "/c")]),
        ("key without cert", &[("TESSERA_TLS_KEY_FILE", "/k")]),
        (
            "client CA without TLS",
            &[("TESSERA_TLS_CLIENT_CA_FILE", "/ca")],
        ),
        (
            "SPIFFE callers without client certificates",
            &[
                ("TESSERA_TLS_CERT_FILE", "/c"),
                ("TESSERA_TLS_KEY_FILE", "/k"),
                (
                    "TESSERA_SPIFFE_CALLERS",
                    "spiffe://a.test/x=tessera:introspect",
                ),
            ],
        ),
        (
            "not a SPIFFE id",
            &[
                ("TESSERA_TLS_CERT_FILE", "/c"),
                ("TESSERA_TLS_KEY_FILE", "/k"),
                ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
                (
                    "TESSERA_SPIFFE_CALLERS",
                    "https://a.test/x=tessera:introspect",
                ),
            ],
        ),
        (
            "a SPIFFE id without scopes",
            &[
                ("TESSERA_TLS_CERT_FILE", "/c"),
                ("TESSERA_TLS_KEY_FILE", "/k"),
                ("TESSERA_TLS_CLIENT_CA_FILE", "/ca"),
                ("TESSERA_SPIFFE_CALLERS", "spiffe://a.test/x="),
            ],
        ),
    ];
    for (name, vars) in rows {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(load(&env).is_err(), "{name}");
    }
}
