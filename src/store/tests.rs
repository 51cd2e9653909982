//! Tests of the store handle: batched writes and reads that fail alone, migrations
//! (old schemas brought forward, a newer database refused, idempotence, WAL).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_leaves_no_trace_and_spares_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(move |c| {
                revocation::block_jti(c, &format!("jti-{i}"), 1_000 + i)?;
                if i % 10 == 0 {
                    return Err(Error::InvalidArgument("refused".into()));
                }
                Ok(i)
            })
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 180);
    let rows = store
        .read(|c| revocation::load_blocklist(c, 0))
        .await
        .unwrap();
    assert_eq!(rows.len(), 180);
    assert!(!rows.iter().any(|(j, _)| j == "jti-0" || j == "jti-10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rotation_leaves_no_trace_and_spares_its_batch() {
    use refresh::{FamilyRow, Rotation, TokenRow};
    let token = |n: u8, expires_at: i64| TokenRow {
        token_hash: [n; 32],
        family_id: "f".into(),
        id: format!("rt-{n}"),
        issued_at: 0,
        expires_at,
        used_at: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .write(move |c| {
            refresh::insert_family(
                c,
                &FamilyRow {
                    id: "f".into(),
                    subject: "s".into(),
                    client_id: "c".into(),
                    audience: vec![],
                    scopes: vec![],
                    claims: "{}".into(),
                    created_at: 0,
                    absolute_expires_at: 1_000,
                    revoked_at: None,
                },
            )?;
            (1..=9).try_for_each(|n| refresh::insert_token(c, &token(n, 1_000)))
        })
        .await
        .unwrap();
    // The writer is kept busy, so that every rotation below waits for the same batch.
    let busy = store.clone();
    let busy = tokio::spawn(async move {
        busy.write(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut rotations = Vec::new();
    for n in 1..=8u8 {
        // Token 5's successor would take token 9's hash: its insert fails after its
        // token was marked used.
        let successor = if n == 5 { 9 } else { 10 + n };
        let rotation = Rotation {
            used: [n; 32],
            successor: token(successor, 1_000),
            jti: format!("jti-{n}"),
            access_expires_at: 500,
            grace: None,
        };
        let entry = audit::AuditEntry {
            kind: "refresh.rotated".into(),
            token_id: format!("rt-{n}"),
            ..Default::default()
        };
        let s = store.clone();
        rotations.push(tokio::spawn(async move {
            s.rotate_refresh(rotation, entry, 100).await
        }));
    }
    busy.await.unwrap().unwrap();
    for (n, r) in (1..=8u8).zip(rotations) {
        match (n, r.await.unwrap()) {
            (5, Err(Error::Internal(_))) => {}
            (5, other) => panic!("token 5: {other:?}"),
            (_, won) => assert!(won.unwrap(), "token {n}"),
        }
    }
    store
        .read(|c| {
            for n in 1..=8u8 {
                let (t, _) = refresh::find(c, &[n; 32])?.unwrap();
                assert_eq!(t.used_at.is_some(), n != 5, "token {n} used");
            }
            let audited = audit::recent(c, 100)?;
            assert_eq!(audited.len(), 7);
            assert!(audited.iter().all(|e| e.token_id != "rt-5"));
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_record_queued_behind_answers_is_committed_by_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                let entry = audit::AuditEntry {
                    kind: "token.issued".into(),
                    token_id: format!("jti-{i}-{j}"),
                    ..Default::default()
                };
                s.audit_later(entry).await.unwrap();
                // Durable writes in between, so records are queued while batches run.
                if j % 7 == 0 {
                    s.write(move |c| revocation::block_jti(c, &format!("r-{i}-{j}"), 99))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.flush().await.unwrap();
    let recorded = store.read(|c| audit::recent(c, 5_000)).await.unwrap();
    assert_eq!(recorded.len(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_panics_fails_alone_and_leaves_its_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // More panics than there are reader connections, each inside a read transaction.
    for _ in 0..8 {
        let failed = store
            .read(|c| c.snapshot(|_| -> Result<()> { panic!("a bug in a read") }))
            .await;
        assert!(matches!(failed, Err(Error::Internal(_))), "{failed:?}");
    }
    store
        .write(|c| revocation::block_jti(c, "after", i64::MAX))
        .await
        .unwrap();
    // Every reader still works and sees the latest commit (none was left inside
    // the transaction the panic interrupted).
    for _ in 0..8 {
        let rows = store
            .read(|c| revocation::load_blocklist(c, 0))
            .await
            .unwrap();
        assert!(rows.iter().any(|(j, _)| j == "after"));
    }
}

#[test]
fn space_joined_lists_of_version_2_become_json_lists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("tessera.db")).unwrap();
        c.execute_batch(sqlite::MIGRATIONS[0]).unwrap();
        c.execute_batch(sqlite::MIGRATIONS[1]).unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute_batch(
            "INSERT INTO api_keys (id, secret_hash, owner, name, environment, scopes, created_at, expires_at)
             VALUES ('k', x'00', 'o', 'n', 'test', 'read write', 0, 9999999999);
             INSERT INTO refresh_families (id, subject, client_id, audience, scopes, claims, created_at, absolute_expires_at)
             VALUES ('f', 's', 'c', 'api  other', '', '{}', 0, 99);
             INSERT INTO refresh_tokens (token_hash, family_id, id, issued_at, expires_at)
             VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', 'f', 't', 0, 99);
             INSERT INTO oauth_clients (id, name, public, redirect_uris, scopes, created_at)
             VALUES ('c', 'app', 1, 'https://a.example/cb https://b.example/cb', 'read', 0);",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    store
        .read_now(|c| {
            let keys = apikeys::load_live(c, 1)?;
            assert_eq!(keys[0].scopes, vec!["read", "write"]);
            assert!(keys[0].exchange_audiences.is_empty());
            let (_, f) = refresh::find(c, &[1; 32])?.unwrap();
            assert_eq!(f.audience, vec!["api", "other"]);
            assert!(f.scopes.is_empty());
            let client = clients::find(c, "c")?.unwrap();
            assert_eq!(
                client.redirect_uris,
                vec!["https://a.example/cb", "https://b.example/cb"]
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn old_audit_records_get_kinds_columns_and_json_details() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("tessera.db")).unwrap();
        for m in &sqlite::MIGRATIONS[..4] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 4).unwrap();
        c.execute_batch(
            "INSERT INTO audit_log (at, request_id, caller, action, target, detail) VALUES
               (1, 'r1', 'k1', 'issue.access_token', 'jti-1', 'sub=alice aud=api scopes=read'),
               (2, 'r2', 'k1', 'bump_token_version', 'alice', 'logout'),
               (3, 'r3', 'k1', 'exchange.token_exchange', 'jti-2', ''),
               (4, '-', '-', 'revoke.unknown', '-', '');",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let rows = store.read_now(|c| audit::recent(c, 10)).unwrap();
    let kinds: Vec<_> = rows.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "revoke.noop",
            "token.exchanged",
            "token_version.bumped",
            "token.issued"
        ]
    );
    assert!(kinds.iter().all(|k| audit::KINDS.contains(k)));
    assert_eq!(rows[3].token_id, "jti-1");
    assert_eq!(rows[3].detail["note"], "sub=alice aud=api scopes=read");
    assert_eq!(
        (rows[2].subject.as_str(), rows[2].token_id.as_str()),
        ("alice", "")
    );
    assert_eq!(rows[1].detail["grant"], "token_exchange");
    assert_eq!(rows[0].token_id, "");
    // New records continue the id sequence.
    store
        .read_now(|c| {
            audit::append(
                c,
                &audit::AuditEntry {
                    kind: "token.issued".into(),
                    ..Default::default()
                },
            )?;
            assert_eq!(audit::recent(c, 1)?[0].id, 5);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    Connection::open(dir.path().join("tessera.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    // The operator's message (as start-up prints it), not the caller's.
    let err = crate::error::StartupError::from(Store::open(dir.path()).unwrap_err());
    assert!(err.0.contains("newer than this binary"), "{err}");
}

#[test]
fn migrations_are_idempotent_and_wal_is_on() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let store = Store::open(dir.path()).unwrap();
    let (mode, version): (String, i64) = store
        .read_now(|c| {
            let m = c.query_row("PRAGMA journal_mode", params![], |r| r.get(0))?;
            let v = c.query_row("PRAGMA user_version", params![], |r| r.get(0))?;
            Ok((m, v))
        })
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version as usize, sqlite::MIGRATIONS.len());
}
