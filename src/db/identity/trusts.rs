//! Keystone's trusts (OS-TRUST): a trustor delegates some of its roles on a
//! project to a trustee. Rows are deleted outright (Keystone soft-deletes;
//! nothing reads a deleted trust back), and die with their trustor,
//! trustee or project through the foreign keys, as Keystone deletes a
//! user's and a project's trusts.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db::DbResult;

/// The trust tables (one migration). A token issued from a trust is stored
/// with `scope_type = 'trust'` and the trust's id as `scope_id`.
pub const SCHEMA: &str = r#"
CREATE TABLE trusts (
    id TEXT PRIMARY KEY,
    trustor_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    trustee_user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    impersonation INTEGER NOT NULL,
    expires_at_micros INTEGER,
    remaining_uses INTEGER,
    redelegation_count INTEGER NOT NULL DEFAULT 0,
    redelegated_trust_id TEXT REFERENCES trusts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
CREATE INDEX trusts_by_trustor ON trusts (trustor_user_id);
CREATE INDEX trusts_by_trustee ON trusts (trustee_user_id);
CREATE INDEX trusts_by_parent ON trusts (redelegated_trust_id);
CREATE TABLE trust_roles (
    trust_id TEXT NOT NULL REFERENCES trusts(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (trust_id, role_id)
);
"#;

/// One trust, with the ids of the roles it delegates.
#[derive(Debug, Clone, PartialEq)]
pub struct Trust {
    pub id: String,
    pub trustor_user_id: String,
    pub trustee_user_id: String,
    pub project_id: Option<String>,
    pub impersonation: bool,
    /// Expiry in microseconds since the epoch; None: never.
    pub expires_at_micros: Option<i64>,
    /// None: unlimited.
    pub remaining_uses: Option<i64>,
    /// How many more times the trust may be redelegated (0: never).
    pub redelegation_count: i64,
    /// The trust this one was redelegated from.
    pub redelegated_trust_id: Option<String>,
    pub roles: Vec<String>,
}

const COLUMNS: &str = "id, trustor_user_id, trustee_user_id, project_id, impersonation, \
    expires_at_micros, remaining_uses, redelegation_count, redelegated_trust_id";

fn from_row(row: &Row) -> rusqlite::Result<Trust> {
    Ok(Trust {
        id: row.get(0)?,
        trustor_user_id: row.get(1)?,
        trustee_user_id: row.get(2)?,
        project_id: row.get(3)?,
        impersonation: row.get(4)?,
        expires_at_micros: row.get(5)?,
        remaining_uses: row.get(6)?,
        redelegation_count: row.get(7)?,
        redelegated_trust_id: row.get(8)?,
        roles: Vec::new(),
    })
}

fn with_roles(conn: &Connection, mut trust: Trust) -> DbResult<Trust> {
    let mut stmt = conn
        .prepare_cached("SELECT role_id FROM trust_roles WHERE trust_id = ?1 ORDER BY role_id")?;
    trust.roles = stmt
        .query_map([&trust.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(trust)
}

pub fn insert_trust(conn: &Connection, t: &Trust, created_at: i64) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO trusts ({COLUMNS}, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            t.id,
            t.trustor_user_id,
            t.trustee_user_id,
            t.project_id,
            t.impersonation,
            t.expires_at_micros,
            t.remaining_uses,
            t.redelegation_count,
            t.redelegated_trust_id,
            created_at
        ],
    )?;
    for role in &t.roles {
        conn.execute(
            "INSERT OR IGNORE INTO trust_roles (trust_id, role_id) VALUES (?1, ?2)",
            params![t.id, role],
        )?;
    }
    Ok(())
}

/// A trust as stored, expired or used up or not (callers decide).
pub fn get_trust(conn: &Connection, id: &str) -> DbResult<Option<Trust>> {
    let sql = format!("SELECT {COLUMNS} FROM trusts WHERE id = ?1");
    let found = conn.query_row(&sql, [id], from_row).optional()?;
    found.map(|t| with_roles(conn, t)).transpose()
}

/// Which trusts a listing wants.
#[derive(Debug, Clone, Copy)]
pub enum TrustFilter<'a> {
    All,
    Trustor(&'a str),
    Trustee(&'a str),
}

/// Trusts in creation order, roles included.
pub fn list_trusts(conn: &Connection, filter: TrustFilter) -> DbResult<Vec<Trust>> {
    let (clause, arg) = match filter {
        TrustFilter::All => ("?1 = ''", ""),
        TrustFilter::Trustor(id) => ("trustor_user_id = ?1", id),
        TrustFilter::Trustee(id) => ("trustee_user_id = ?1", id),
    };
    let sql = format!("SELECT {COLUMNS} FROM trusts WHERE {clause} ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let trusts = stmt
        .query_map([arg], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    trusts.into_iter().map(|t| with_roles(conn, t)).collect()
}

/// Deletes a trust and every trust redelegated from it (the foreign key
/// cascades), and revokes the tokens issued from any of them.
pub fn delete_trust(conn: &Connection, id: &str) -> DbResult<bool> {
    conn.execute(
        "WITH RECURSIVE chain(id) AS (
             SELECT ?1 UNION SELECT t.id FROM trusts t JOIN chain c ON t.redelegated_trust_id = c.id
         )
         UPDATE tokens SET revoked = 1
         WHERE scope_type = 'trust' AND scope_id IN (SELECT id FROM chain)",
        [id],
    )?;
    Ok(conn.execute("DELETE FROM trusts WHERE id = ?1", [id])? > 0)
}

/// Takes one use of a limited trust. False when none is left; true for an
/// unlimited trust.
pub fn consume_trust_use(conn: &Connection, id: &str) -> DbResult<bool> {
    let changed = conn.execute(
        "UPDATE trusts SET remaining_uses = remaining_uses - 1
         WHERE id = ?1 AND remaining_uses > 0",
        [id],
    )?;
    if changed > 0 {
        return Ok(true);
    }
    let unlimited: Option<bool> = conn
        .query_row(
            "SELECT remaining_uses IS NULL FROM trusts WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(unlimited == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::identity::{Role, insert_role, test_connection};

    fn user(conn: &Connection, id: &str) {
        conn.execute(
            "INSERT INTO users (id, name, domain_id, created_at) VALUES (?1, ?1, 'default', 0)",
            [id],
        )
        .expect("user");
    }

    fn trust(id: &str, parent: Option<&str>, uses: Option<i64>) -> Trust {
        Trust {
            id: id.into(),
            trustor_user_id: "alice".into(),
            trustee_user_id: "bob".into(),
            project_id: None,
            impersonation: false,
            expires_at_micros: None,
            remaining_uses: uses,
            redelegation_count: 0,
            redelegated_trust_id: parent.map(str::to_string),
            roles: vec!["r1".into()],
        }
    }

    fn setup() -> Connection {
        let conn = test_connection();
        conn.execute(
            "INSERT INTO domains (id, name) VALUES ('default', 'Default')",
            [],
        )
        .expect("domain");
        user(&conn, "alice");
        user(&conn, "bob");
        let role = Role {
            id: "r1".into(),
            name: "r1".into(),
            domain_id: None,
            description: String::new(),
            options: Default::default(),
            extra: Default::default(),
        };
        insert_role(&conn, &role).expect("role");
        conn
    }

    #[test]
    fn stores_lists_and_cascades() {
        let conn = setup();
        insert_trust(&conn, &trust("t1", None, None), 1).expect("t1");
        insert_trust(&conn, &trust("t2", Some("t1"), None), 2).expect("t2");
        let got = get_trust(&conn, "t1").expect("get").expect("t1 there");
        assert_eq!(got.roles, vec!["r1".to_string()]);
        assert_eq!(
            list_trusts(&conn, TrustFilter::Trustor("alice"))
                .expect("list")
                .len(),
            2
        );
        assert!(
            list_trusts(&conn, TrustFilter::Trustee("alice"))
                .expect("list")
                .is_empty()
        );
        assert_eq!(list_trusts(&conn, TrustFilter::All).expect("all").len(), 2);
        assert!(delete_trust(&conn, "t1").expect("delete"));
        assert!(get_trust(&conn, "t2").expect("get").is_none());
    }

    #[test]
    fn uses_run_out() {
        let conn = setup();
        insert_trust(&conn, &trust("t1", None, Some(1)), 1).expect("t1");
        insert_trust(&conn, &trust("t2", None, None), 1).expect("t2");
        assert!(consume_trust_use(&conn, "t1").expect("first"));
        assert!(!consume_trust_use(&conn, "t1").expect("second"));
        assert!(consume_trust_use(&conn, "t2").expect("unlimited"));
        assert!(!consume_trust_use(&conn, "nope").expect("missing"));
    }

    #[test]
    fn deleting_the_trustor_deletes_the_trust() {
        let conn = setup();
        insert_trust(&conn, &trust("t1", None, None), 1).expect("t1");
        crate::db::identity::delete_user(&conn, "alice").expect("delete user");
        assert!(get_trust(&conn, "t1").expect("get").is_none());
    }
}
