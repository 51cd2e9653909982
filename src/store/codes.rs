//! The `authorization_codes` table. Codes are stored as hashes; redeeming one is a
//! conditional update, so of two concurrent redemptions exactly one wins.

use super::db::{Db, OptionalExt, params};

use super::lists;
use crate::error::Result;

/// One authorization code (only its hash) and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRow {
    /// SHA-256 of the code text.
    pub(crate) code_hash: [u8; 32],
    /// Public id, for the audit log.
    pub(crate) id: String,
    /// The client it was issued to.
    pub(crate) client_id: String,
    /// The redirect URI of the authorization request, to be repeated exactly.
    pub(crate) redirect_uri: String,
    /// The authenticated user.
    pub(crate) subject: String,
    /// Granted scopes.
    pub(crate) scopes: Vec<String>,
    /// PKCE `S256` challenge.
    pub(crate) code_challenge: String,
    /// Unix seconds.
    pub(crate) issued_at: i64,
    /// Unix seconds; dead from this instant.
    pub(crate) expires_at: i64,
    /// Set when redeemed.
    pub(crate) used_at: Option<i64>,
    /// The refresh family the redemption started.
    pub(crate) family_id: Option<String>,
    /// The access token the redemption minted, and its expiry.
    pub(crate) access_jti: Option<(String, i64)>,
}

/// Inserts a new code.
pub(crate) fn insert(conn: &Db, c: &CodeRow) -> Result<()> {
    conn.execute(
            "INSERT INTO authorization_codes
           (code_hash, id, client_id, redirect_uri, subject, scopes, code_challenge, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
        &c.code_hash[..],
        c.id,
        c.client_id,
        c.redirect_uri,
        c.subject,
        lists::encode(&c.scopes),
        c.code_challenge,
        c.issued_at,
        c.expires_at
    ])?;
    Ok(())
}

/// Looks a code up by hash.
pub(crate) fn find(conn: &Db, code_hash: &[u8; 32]) -> Result<Option<CodeRow>> {
    Ok(conn
        .query_row(
            "SELECT code_hash, id, client_id, redirect_uri, subject, scopes, code_challenge,
                    issued_at, expires_at, used_at, family_id, access_jti, access_expires_at
             FROM authorization_codes WHERE code_hash = ?1",
            params![&code_hash[..]],
            |r| {
                let h: Vec<u8> = r.get(0)?;
                let mut code_hash = [0u8; 32];
                if h.len() == 32 {
                    code_hash.copy_from_slice(&h);
                }
                let jti: Option<String> = r.get(11)?;
                let jti_exp: Option<i64> = r.get(12)?;
                Ok(CodeRow {
                    code_hash,
                    id: r.get(1)?,
                    client_id: r.get(2)?,
                    redirect_uri: r.get(3)?,
                    subject: r.get(4)?,
                    scopes: lists::get(r, 5)?,
                    code_challenge: r.get(6)?,
                    issued_at: r.get(7)?,
                    expires_at: r.get(8)?,
                    used_at: r.get(9)?,
                    family_id: r.get(10)?,
                    access_jti: jti.zip(jti_exp),
                })
            },
        )
        .optional()?)
}

/// Redeems a code: marks it used and records what the redemption issued. False if it
/// was already used or has expired at `at` (the caller lost a race, or it is a replay).
pub(crate) fn redeem(
    conn: &Db,
    code_hash: &[u8; 32],
    at: i64,
    family_id: &str,
    access_jti: &str,
    access_expires_at: i64,
) -> Result<bool> {
    let n = conn.execute(
        "UPDATE authorization_codes
             SET used_at = ?2, family_id = ?3, access_jti = ?4, access_expires_at = ?5
             WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![&code_hash[..], at, family_id, access_jti, access_expires_at],
    )?;
    Ok(n == 1)
}

/// Has this PKCE challenge been seen on another code? (A client should make a fresh
/// verifier for every authorization request.)
pub(crate) fn challenge_seen(conn: &Db, challenge: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM authorization_codes WHERE code_challenge = ?1 LIMIT 1",
            params![challenge],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Deletes codes that expired before `before`; returns how many.
pub(crate) fn purge(conn: &Db, before: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM authorization_codes WHERE expires_at < ?1",
        params![before],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::clients::{self, ClientRow};
    use rusqlite::Connection;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        c.execute_batch(include_str!("migrations/0001_init.sql"))
            .unwrap();
        c.execute_batch(include_str!("migrations/0002_oauth.sql"))
            .unwrap();
        c.execute_batch(include_str!("migrations/0003_lists_lineage.sql"))
            .unwrap();
        clients::insert(
            &Db::Sqlite(&c),
            &ClientRow {
                id: "client".into(),
                name: "app".into(),
                public: true,
                redirect_uris: vec!["https://app.example/cb".into()],
                scopes: vec!["read".into(), "write".into()],
                created_at: 0,
            },
        )
        .unwrap();
        c
    }

    fn code(hash: u8, challenge: &str) -> CodeRow {
        CodeRow {
            code_hash: [hash; 32],
            id: format!("id{hash}"),
            client_id: "client".into(),
            redirect_uri: "https://app.example/cb".into(),
            subject: "alice".into(),
            scopes: vec!["read".into()],
            code_challenge: challenge.into(),
            issued_at: 100,
            expires_at: 160,
            used_at: None,
            family_id: None,
            access_jti: None,
        }
    }

    #[test]
    fn redeems_once_and_remembers_what_it_issued() {
        let c_conn = db();
        let c = Db::Sqlite(&c_conn);
        let row = code(1, "ch");
        insert(&c, &row).unwrap();
        assert_eq!(find(&c, &[1; 32]).unwrap().unwrap(), row);
        assert!(redeem(&c, &[1; 32], 120, "fam", "jti", 999).unwrap());
        assert!(!redeem(&c, &[1; 32], 121, "fam2", "jti2", 999).unwrap());
        let used = find(&c, &[1; 32]).unwrap().unwrap();
        assert_eq!(used.used_at, Some(120));
        assert_eq!(used.family_id.as_deref(), Some("fam"));
        assert_eq!(used.access_jti, Some(("jti".into(), 999)));
        assert_eq!(
            clients::find(&c, "client").unwrap().unwrap().scopes,
            vec!["read", "write"]
        );
    }

    #[test]
    fn expired_codes_do_not_redeem_and_are_purged() {
        let c_conn = db();
        let c = Db::Sqlite(&c_conn);
        insert(&c, &code(2, "a")).unwrap();
        assert!(
            !redeem(&c, &[2; 32], 160, "f", "j", 1).unwrap(),
            "exp is exclusive"
        );
        assert!(challenge_seen(&c, "a").unwrap());
        assert!(!challenge_seen(&c, "b").unwrap());
        assert_eq!(purge(&c, 160).unwrap(), 0);
        assert_eq!(purge(&c, 161).unwrap(), 1);
        assert!(find(&c, &[2; 32]).unwrap().is_none());
    }
}
