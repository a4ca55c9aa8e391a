//! Keystone's extension tables (migration 9): a user's access rules (shared
//! by the application credentials that name them), OS-EP-FILTER's project
//! associations (endpoints and endpoint groups), domain-specific
//! configuration options, and users' password history.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::db::DbResult;

/// The extension tables (migration 9). Access rules already stored inline
/// with application credentials become rows of their user.
pub const SCHEMA: &str = r#"
CREATE TABLE access_rules (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    path TEXT NOT NULL,
    method TEXT NOT NULL,
    UNIQUE (user_id, service, path, method)
);
INSERT OR IGNORE INTO access_rules (id, user_id, service, path, method)
    SELECT json_extract(r.value, '$.id'), c.user_id, json_extract(r.value, '$.service'),
           json_extract(r.value, '$.path'), json_extract(r.value, '$.method')
    FROM application_credentials c, json_each(c.access_rules) r
    WHERE json_extract(r.value, '$.id') IS NOT NULL;
CREATE TABLE project_endpoints (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    PRIMARY KEY (endpoint_id, project_id)
);
CREATE TABLE project_endpoint_groups (
    endpoint_group_id TEXT NOT NULL REFERENCES endpoint_groups(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    PRIMARY KEY (endpoint_group_id, project_id)
);
-- value: the option's JSON value.
CREATE TABLE domain_configs (
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    grp TEXT NOT NULL,
    option TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain_id, grp, option)
);
-- A user's replaced password hashes, newest last (Keystone's password
-- history); the trigger records every change, whoever makes it.
CREATE TABLE password_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL
);
CREATE TRIGGER password_history_on_change AFTER UPDATE OF password_hash ON users
    WHEN OLD.password_hash IS NOT NULL AND OLD.password_hash IS NOT NEW.password_hash
BEGIN
    INSERT INTO password_history (user_id, password_hash) VALUES (OLD.id, OLD.password_hash);
END;
"#;

// ---------------------------------------------------------------- access rules

#[derive(Debug, Clone, PartialEq)]
pub struct StoredAccessRule {
    pub id: String,
    pub user_id: String,
    pub service: String,
    pub path: String,
    pub method: String,
}

const RULE_COLUMNS: &str = "id, user_id, service, path, method";

fn rule_from_row(r: &rusqlite::Row) -> rusqlite::Result<StoredAccessRule> {
    Ok(StoredAccessRule {
        id: r.get(0)?,
        user_id: r.get(1)?,
        service: r.get(2)?,
        path: r.get(3)?,
        method: r.get(4)?,
    })
}

pub fn get_access_rule(conn: &Connection, id: &str) -> DbResult<Option<StoredAccessRule>> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM access_rules WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], rule_from_row).optional()?)
}

/// The user's rule with this service, path and method.
pub fn find_access_rule(
    conn: &Connection,
    user_id: &str,
    (service, path, method): (&str, &str, &str),
) -> DbResult<Option<StoredAccessRule>> {
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM access_rules WHERE user_id = ?1 AND service = ?2 AND path = ?3 AND method = ?4"
    );
    Ok(conn
        .query_row(&sql, params![user_id, service, path, method], rule_from_row)
        .optional()?)
}

pub fn insert_access_rule(conn: &Connection, rule: &StoredAccessRule) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO access_rules ({RULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![rule.id, rule.user_id, rule.service, rule.path, rule.method],
    )?;
    Ok(())
}

pub fn list_access_rules(conn: &Connection, user_id: &str) -> DbResult<Vec<StoredAccessRule>> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM access_rules WHERE user_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([user_id], rule_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// True when an application credential names the rule.
pub fn access_rule_in_use(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM application_credentials c, json_each(c.access_rules) r
             WHERE json_extract(r.value, '$.id') = ?1 LIMIT 1",
            [id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn delete_access_rule(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM access_rules WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- OS-EP-FILTER

pub fn add_project_endpoint(
    conn: &Connection,
    project_id: &str,
    endpoint_id: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO project_endpoints (endpoint_id, project_id) VALUES (?1, ?2)",
        params![endpoint_id, project_id],
    )?;
    Ok(())
}

pub fn remove_project_endpoint(
    conn: &Connection,
    project_id: &str,
    endpoint_id: &str,
) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM project_endpoints WHERE endpoint_id = ?1 AND project_id = ?2",
        params![endpoint_id, project_id],
    )? > 0)
}

pub fn project_endpoint_exists(
    conn: &Connection,
    project_id: &str,
    endpoint_id: &str,
) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM project_endpoints WHERE endpoint_id = ?1 AND project_id = ?2",
            params![endpoint_id, project_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Endpoint ids associated directly with a project.
pub fn endpoints_of_project(conn: &Connection, project_id: &str) -> DbResult<Vec<String>> {
    column(
        conn,
        "SELECT endpoint_id FROM project_endpoints WHERE project_id = ?1 ORDER BY endpoint_id",
        project_id,
    )
}

/// Project ids an endpoint is associated with directly.
pub fn projects_of_endpoint(conn: &Connection, endpoint_id: &str) -> DbResult<Vec<String>> {
    column(
        conn,
        "SELECT project_id FROM project_endpoints WHERE endpoint_id = ?1 ORDER BY project_id",
        endpoint_id,
    )
}

pub fn add_project_endpoint_group(
    conn: &Connection,
    group_id: &str,
    project_id: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO project_endpoint_groups (endpoint_group_id, project_id) VALUES (?1, ?2)",
        params![group_id, project_id],
    )?;
    Ok(())
}

pub fn remove_project_endpoint_group(
    conn: &Connection,
    group_id: &str,
    project_id: &str,
) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM project_endpoint_groups WHERE endpoint_group_id = ?1 AND project_id = ?2",
        params![group_id, project_id],
    )? > 0)
}

/// Endpoint group ids associated with a project.
pub fn endpoint_groups_of_project(conn: &Connection, project_id: &str) -> DbResult<Vec<String>> {
    column(
        conn,
        "SELECT endpoint_group_id FROM project_endpoint_groups WHERE project_id = ?1 ORDER BY endpoint_group_id",
        project_id,
    )
}

/// Project ids associated with an endpoint group.
pub fn projects_of_endpoint_group(conn: &Connection, group_id: &str) -> DbResult<Vec<String>> {
    column(
        conn,
        "SELECT project_id FROM project_endpoint_groups WHERE endpoint_group_id = ?1 ORDER BY project_id",
        group_id,
    )
}

fn column(conn: &Connection, sql: &str, key: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([key], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- domain configuration

/// One stored option of a domain's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainConfigOption {
    pub group: String,
    pub option: String,
    pub value: Value,
}

/// The domain's options, optionally of one group (and one option), ordered.
pub fn list_domain_config(
    conn: &Connection,
    domain_id: &str,
    group: Option<&str>,
    option: Option<&str>,
) -> DbResult<Vec<DomainConfigOption>> {
    let mut stmt = conn.prepare_cached(
        "SELECT grp, option, value FROM domain_configs
         WHERE domain_id = ?1 AND (?2 IS NULL OR grp = ?2) AND (?3 IS NULL OR option = ?3)
         ORDER BY grp, option",
    )?;
    let rows = stmt.query_map(params![domain_id, group, option], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|r| {
        let (group, option, value) = r?;
        Ok(DomainConfigOption {
            group,
            option,
            value: serde_json::from_str(&value)?,
        })
    })
    .collect()
}

/// Sets (creates or replaces) one option.
pub fn set_domain_config_option(
    conn: &Connection,
    domain_id: &str,
    opt: &DomainConfigOption,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO domain_configs (domain_id, grp, option, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(domain_id, grp, option) DO UPDATE SET value = ?4",
        params![domain_id, opt.group, opt.option, opt.value.to_string()],
    )?;
    Ok(())
}

/// Deletes the domain's options (all, one group's, or one option); the count removed.
pub fn delete_domain_config(
    conn: &Connection,
    domain_id: &str,
    group: Option<&str>,
    option: Option<&str>,
) -> DbResult<usize> {
    Ok(conn.execute(
        "DELETE FROM domain_configs
         WHERE domain_id = ?1 AND (?2 IS NULL OR grp = ?2) AND (?3 IS NULL OR option = ?3)",
        params![domain_id, group, option],
    )?)
}

// ---------------------------------------------------------------- password history

/// The user's `count` most recently replaced password hashes, newest first.
pub fn previous_password_hashes(
    conn: &Connection,
    user_id: &str,
    count: usize,
) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT password_hash FROM password_history WHERE user_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_id, count as i64], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::identity::test_connection;

    fn user(conn: &Connection, id: &str) {
        conn.execute(
            "INSERT INTO users (id, name, domain_id, created_at) VALUES (?1, ?1, 'default', 0)",
            [id],
        )
        .expect("user");
    }

    fn setup() -> Connection {
        let conn = test_connection();
        conn.execute(
            "INSERT INTO domains (id, name) VALUES ('default', 'Default')",
            [],
        )
        .expect("domain");
        user(&conn, "u1");
        conn
    }

    #[test]
    fn access_rules_are_found_by_triple_and_known_in_use() {
        let conn = setup();
        let rule = StoredAccessRule {
            id: "r1".into(),
            user_id: "u1".into(),
            service: "compute".into(),
            path: "/v2.1/servers".into(),
            method: "GET".into(),
        };
        insert_access_rule(&conn, &rule).expect("insert");
        let found = find_access_rule(&conn, "u1", ("compute", "/v2.1/servers", "GET"))
            .expect("find")
            .expect("found");
        assert_eq!(found, rule);
        assert!(!access_rule_in_use(&conn, "r1").expect("in use"));
        conn.execute(
            "INSERT INTO application_credentials (id, name, user_id, project_id, secret_hash, access_rules)
             VALUES ('c1', 'c1', 'u1', 'p', 'h', '[{\"id\": \"r1\"}]')",
            [],
        )
        .expect("cred");
        assert!(access_rule_in_use(&conn, "r1").expect("in use"));
        assert_eq!(list_access_rules(&conn, "u1").expect("list").len(), 1);
        conn.execute("DELETE FROM users WHERE id = 'u1'", [])
            .expect("delete user");
        assert!(get_access_rule(&conn, "r1").expect("get").is_none());
    }

    #[test]
    fn replaced_passwords_are_remembered_newest_first() {
        let conn = setup();
        for hash in ["h1", "h2", "h3"] {
            conn.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = 'u1'",
                [hash],
            )
            .expect("update");
        }
        conn.execute("UPDATE users SET password_hash = 'h3' WHERE id = 'u1'", [])
            .expect("same hash again");
        assert_eq!(
            previous_password_hashes(&conn, "u1", 5).expect("history"),
            ["h2", "h1"]
        );
        assert_eq!(
            previous_password_hashes(&conn, "u1", 1).expect("history"),
            ["h2"]
        );
    }

    #[test]
    fn domain_config_options_are_set_listed_and_deleted() {
        let conn = setup();
        for (group, option, value) in [
            ("identity", "driver", "ldap"),
            ("ldap", "url", "ldap://x"),
            ("ldap", "user_tree_dn", "ou=Users"),
        ] {
            let opt = DomainConfigOption {
                group: group.into(),
                option: option.into(),
                value: Value::String(value.into()),
            };
            set_domain_config_option(&conn, "default", &opt).expect("set");
        }
        assert_eq!(
            list_domain_config(&conn, "default", None, None)
                .expect("list")
                .len(),
            3
        );
        assert_eq!(
            list_domain_config(&conn, "default", Some("ldap"), Some("url")).expect("list")[0].value,
            Value::String("ldap://x".into())
        );
        assert_eq!(
            delete_domain_config(&conn, "default", Some("ldap"), None).expect("delete"),
            2
        );
        assert_eq!(
            list_domain_config(&conn, "default", None, None)
                .expect("list")
                .len(),
            1
        );
    }
}
