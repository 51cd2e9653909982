//! The `token_lineage` table: which access token was minted from which by token
//! exchange. Revocations walk it inside their own write, so a derived token dies in
//! the same transaction as its ancestor.

use super::db::{Db, OptionalExt, params};

use super::changes::{self, Change};
use super::revocation as revocation_rows;
use crate::error::Result;
use crate::revocation::cascade;

/// Records that `child_jti` was minted from `parent_jti`.
pub(crate) fn record(conn: &Db, parent_jti: &str, child_jti: &str, child_exp: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO token_lineage (parent_jti, child_jti, child_expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        params![parent_jti, child_jti, child_exp],
    )?;
    Ok(())
}

/// The tokens minted directly from `parent_jti`, with their expiry.
pub(crate) fn children(conn: &Db, parent_jti: &str) -> Result<Vec<(String, i64)>> {
    Ok(conn.query_map(
        "SELECT child_jti, child_expires_at FROM token_lineage WHERE parent_jti = ?1",
        params![parent_jti],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Blocklists `roots` and, transitively, every token derived from them, each until its
/// own expiry, and records each in the change log (at `now`). Returns everything
/// blocklisted, for the in-memory blocklist.
pub(crate) fn block_with_descendants(
    conn: &Db,
    roots: Vec<(String, i64)>,
    now: i64,
) -> Result<Vec<(String, i64)>> {
    let all = cascade(roots, |parent| children(conn, parent))?;
    for (jti, exp) in &all {
        revocation_rows::block_jti(conn, jti, *exp)?;
        changes::append(
            conn,
            now,
            &Change::RevokedJti {
                jti: jti.clone(),
                expires_at: *exp,
            },
        )?;
    }
    Ok(all)
}

/// Is the access token `jti` of `subject`, stamped with version `ver`, still live as
/// far as the store knows: not blocklisted and its subject's version not bumped past
/// `ver`? Asked inside the write that derives a token from it, so no revocation can
/// slip between the check and the derivation. A token minted from a since-revoked
/// refresh family is on the blocklist: the family's revocation put it there in the
/// same write (see [`refresh::revoke_family`](super::refresh::revoke_family)).
pub(crate) fn still_live(conn: &Db, jti: &str, subject: &str, ver: u64) -> Result<bool> {
    let blocked = conn
        .query_row(
            "SELECT 1 FROM jti_blocklist WHERE jti = ?1",
            params![jti],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let bumped = revocation_rows::version(conn, subject)? > ver;
    Ok(!blocked && !bumped)
}

/// Drops links whose child expired before `before`: everything below it expired no
/// later, so nothing live is left to reach through it.
pub(crate) fn purge(conn: &Db, before: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM token_lineage WHERE child_expires_at < ?1",
        params![before],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    use crate::store::refresh;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        for sql in crate::store::sqlite::MIGRATIONS {
            c.execute_batch(sql).unwrap();
        }
        c
    }

    #[test]
    fn revoking_a_root_blocks_its_whole_tree_with_each_own_expiry() {
        let c_conn = db();
        let c = Db::Sqlite(&c_conn);
        record(&c, "root", "a", 50).unwrap();
        record(&c, "a", "b", 40).unwrap();
        record(&c, "b", "a", 50).unwrap(); // a corrupted link back up: still terminates
        record(&c, "other", "x", 90).unwrap();
        let mut all = block_with_descendants(&c, vec![("root".into(), 60)], 1).unwrap();
        all.sort();
        assert_eq!(
            all,
            vec![("a".into(), 50), ("b".into(), 40), ("root".into(), 60)]
        );
        let blocked = revocation_rows::load_blocklist(&c, 0).unwrap();
        assert_eq!(blocked.len(), 3);
        assert!(!blocked.iter().any(|(j, _)| j == "x"));
        let logged = changes::after(&c, 0).unwrap();
        assert_eq!(logged.len(), 3, "every blocked jti is in the change log");
        assert_eq!(purge(&c, 45).unwrap(), 1, "only b's link has expired");
    }

    #[test]
    fn still_live_sees_blocklist_revoked_family_and_version() {
        let c_conn = db();
        let c = Db::Sqlite(&c_conn);
        assert!(still_live(&c, "j", "alice", 0).unwrap());
        revocation_rows::bump_version(&c, "alice", 1).unwrap();
        assert!(!still_live(&c, "j", "alice", 0).unwrap());
        assert!(still_live(&c, "j", "alice", 1).unwrap());
        revocation_rows::block_jti(&c, "j", 10).unwrap();
        assert!(!still_live(&c, "j", "alice", 1).unwrap());

        // A token minted from a family, then the family revoked as every revocation
        // does it: the family's live tokens blocklisted in the same write.
        let family = refresh::FamilyRow {
            id: "f".into(),
            subject: "bo".into(),
            client_id: "c".into(),
            audience: vec![],
            scopes: vec![],
            claims: "{}".into(),
            created_at: 0,
            absolute_expires_at: 99,
            revoked_at: None,
        };
        refresh::insert_family(&c, &family).unwrap();
        refresh::record_access_token(&c, "f", "k", 99).unwrap();
        assert!(still_live(&c, "k", "bo", 0).unwrap());
        let minted = refresh::revoke_family(&c, "f", 5).unwrap();
        block_with_descendants(&c, minted, 5).unwrap();
        assert!(!still_live(&c, "k", "bo", 0).unwrap());
    }
}
