//! Issue 9, findings 2 and 6, for Keystone: every identity call goes through
//! the policy module with Keystone's default rules, so roles other than
//! `admin` are checked (a reader reads, but writes nothing), another
//! project's objects stay forbidden, admin-only calls are refused to members
//! and managers, and an operator's `policy.yaml` changes the answers.

mod support;

use serde_json::{Value, json};
use support::Server;

const PASSWORD: &str = "pw-Policy-1";

/// A cloud with two projects and one user per role on the first
/// (`reader`, `member`, `manager`), plus a member of the second.
struct Cloud {
    server: Server,
    admin: String,
    p1: String,
    p2: String,
    role_ids: std::collections::HashMap<String, String>,
    user_ids: std::collections::HashMap<String, String>,
}

impl Cloud {
    fn new(server: Server) -> Cloud {
        let admin = server.admin_token();
        let mut cloud = Cloud {
            server,
            admin,
            p1: String::new(),
            p2: String::new(),
            role_ids: Default::default(),
            user_ids: Default::default(),
        };
        cloud.p1 = cloud.create("projects", "project", json!({"name": "p1"}));
        cloud.p2 = cloud.create("projects", "project", json!({"name": "p2"}));
        let roles = cloud.server.get("/identity/v3/roles", Some(&cloud.admin));
        assert_eq!(roles.status, 200, "{}", roles.text);
        for role in roles.json()["roles"].as_array().expect("roles") {
            cloud.role_ids.insert(
                role["name"].as_str().expect("name").to_string(),
                role["id"].as_str().expect("id").to_string(),
            );
        }
        let (p1, p2) = (cloud.p1.clone(), cloud.p2.clone());
        for (user, project, role) in [
            ("reader1", &p1, "reader"),
            ("member1", &p1, "member"),
            ("manager1", &p1, "manager"),
            ("member2", &p2, "member"),
        ] {
            let id = cloud.create("users", "user", json!({"name": user, "password": PASSWORD}));
            let grant = format!(
                "/identity/v3/projects/{project}/users/{id}/roles/{}",
                cloud.role_ids[role]
            );
            let reply = cloud
                .server
                .request("PUT", &grant, Some(&cloud.admin), None);
            assert_eq!(reply.status, 204, "{}", reply.text);
            cloud.user_ids.insert(user.to_string(), id);
        }
        cloud
    }

    /// Creates an object as admin and returns its id.
    fn create(&self, collection: &str, key: &str, body: Value) -> String {
        let reply = self.server.request(
            "POST",
            &format!("/identity/v3/{collection}"),
            Some(&self.admin),
            Some(&json!({ key: body })),
        );
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()[key]["id"].as_str().expect("id").to_string()
    }

    fn token(&self, user: &str, project: &str) -> String {
        let reply = self.server.token(user, PASSWORD, Some(project));
        assert_eq!(reply.status, 201, "{user}: {}", reply.text);
        reply.header("x-subject-token").expect("token").to_string()
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, String) {
        let reply = self.server.request(
            method,
            &format!("/identity/v3{path}"),
            Some(token),
            body.as_ref(),
        );
        (reply.status, reply.text)
    }

    /// Asserts Keystone's refusal: 403 naming the rule.
    fn refused(&self, token: &str, method: &str, path: &str, body: Option<Value>, rule: &str) {
        let (status, text) = self.call(method, path, token, body);
        assert_eq!(status, 403, "{method} {path}: {text}");
        let message = format!("You are not authorized to perform the requested action: {rule}.");
        assert!(text.contains(&message), "{method} {path}: {text}");
    }

    fn allowed(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> String {
        let (status, text) = self.call(method, path, token, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        text
    }
}

/// Every identity write a project user can name, with the rule Keystone
/// refuses it by.
fn writes(
    cloud: &Cloud,
    own_user: &str,
) -> Vec<(&'static str, String, Option<Value>, &'static str)> {
    let p1 = &cloud.p1;
    let reader_role = &cloud.role_ids["reader"];
    let admin_role = &cloud.role_ids["admin"];
    let other = &cloud.user_ids["member2"];
    vec![
        (
            "POST",
            "/users".into(),
            Some(json!({"user": {"name": "x"}})),
            "identity:create_user",
        ),
        (
            "PATCH",
            format!("/users/{own_user}"),
            Some(json!({"user": {"name": "renamed"}})),
            "identity:update_user",
        ),
        (
            "DELETE",
            format!("/users/{other}"),
            None,
            "identity:delete_user",
        ),
        (
            "POST",
            "/projects".into(),
            Some(json!({"project": {"name": "x"}})),
            "identity:create_project",
        ),
        (
            "PATCH",
            format!("/projects/{p1}"),
            Some(json!({"project": {"description": "x"}})),
            "identity:update_project",
        ),
        (
            "DELETE",
            format!("/projects/{p1}"),
            None,
            "identity:delete_project",
        ),
        (
            "PUT",
            format!("/projects/{p1}/tags/t1"),
            None,
            "identity:create_project_tag",
        ),
        (
            "PUT",
            format!("/projects/{p1}/tags"),
            Some(json!({"tags": ["a"]})),
            "identity:update_project_tags",
        ),
        (
            "DELETE",
            format!("/projects/{p1}/tags"),
            None,
            "identity:delete_project_tags",
        ),
        (
            "POST",
            "/domains".into(),
            Some(json!({"domain": {"name": "d"}})),
            "identity:create_domain",
        ),
        (
            "POST",
            "/groups".into(),
            Some(json!({"group": {"name": "g"}})),
            "identity:create_group",
        ),
        (
            "POST",
            "/roles".into(),
            Some(json!({"role": {"name": "r"}})),
            "identity:create_role",
        ),
        // Granting oneself admin is the escalation that matters most.
        (
            "PUT",
            format!("/projects/{p1}/users/{own_user}/roles/{admin_role}"),
            None,
            "identity:create_grant",
        ),
        (
            "DELETE",
            format!("/projects/{p1}/users/{own_user}/roles/{reader_role}"),
            None,
            "identity:revoke_grant",
        ),
        (
            "PUT",
            format!("/system/users/{own_user}/roles/{admin_role}"),
            None,
            "identity:create_system_grant_for_user",
        ),
        (
            "PUT",
            format!("/roles/{admin_role}/implies/{reader_role}"),
            None,
            "identity:create_implied_role",
        ),
        (
            "POST",
            "/regions".into(),
            Some(json!({"region": {"id": "r2"}})),
            "identity:create_region",
        ),
        (
            "POST",
            "/services".into(),
            Some(json!({"service": {"type": "x"}})),
            "identity:create_service",
        ),
        (
            "POST",
            "/policies".into(),
            Some(json!({"policy": {"blob": "{}", "type": "application/json"}})),
            "identity:create_policy",
        ),
        (
            "POST",
            "/OS-EP-FILTER/endpoint_groups".into(),
            Some(json!({"endpoint_group": {"name": "e", "filters": {}}})),
            "identity:create_endpoint_group",
        ),
    ]
}

#[test]
fn a_reader_reads_but_every_identity_write_is_refused() {
    let cloud = Cloud::new(Server::start());
    let reader = cloud.token("reader1", "p1");
    let me = cloud.user_ids["reader1"].clone();
    let p1 = cloud.p1.clone();
    // Reads of its own things work.
    cloud.allowed(&reader, "GET", &format!("/users/{me}"), None);
    cloud.allowed(&reader, "GET", &format!("/projects/{p1}"), None);
    cloud.allowed(&reader, "GET", &format!("/projects/{p1}/tags"), None);
    cloud.allowed(&reader, "GET", &format!("/users/{me}/projects"), None);
    cloud.allowed(&reader, "GET", "/auth/projects", None);
    cloud.allowed(&reader, "GET", "/regions", None);
    // Admin reads are refused.
    cloud.refused(&reader, "GET", "/users", None, "identity:list_users");
    cloud.refused(&reader, "GET", "/projects", None, "identity:list_projects");
    cloud.refused(
        &reader,
        "GET",
        "/role_assignments",
        None,
        "identity:list_role_assignments",
    );
    cloud.refused(&reader, "GET", "/services", None, "identity:list_services");
    for (method, path, body, rule) in writes(&cloud, &me) {
        cloud.refused(&reader, method, &path, body, rule);
    }
    // Nothing changed: still a reader only, and p1 still there.
    let (status, text) = cloud.call(
        "GET",
        &format!("/role_assignments?user.id={me}"),
        &cloud.admin,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let assignments: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        assignments["role_assignments"].as_array().map(Vec::len),
        Some(1)
    );
    cloud.allowed(&cloud.admin, "GET", &format!("/projects/{p1}"), None);
}

#[test]
fn members_and_managers_get_no_admin_calls_and_no_other_project() {
    let cloud = Cloud::new(Server::start());
    for user in ["member1", "manager1"] {
        let token = cloud.token(user, "p1");
        let me = cloud.user_ids[user].clone();
        for (method, path, body, rule) in writes(&cloud, &me) {
            cloud.refused(&token, method, &path, body, rule);
        }
        // Another project and another user stay forbidden.
        let p2 = cloud.p2.clone();
        let other = cloud.user_ids["member2"].clone();
        cloud.refused(
            &token,
            "GET",
            &format!("/projects/{p2}"),
            None,
            "identity:get_project",
        );
        cloud.refused(
            &token,
            "GET",
            &format!("/projects/{p2}/tags"),
            None,
            "identity:list_project_tags",
        );
        cloud.refused(
            &token,
            "GET",
            &format!("/users/{other}"),
            None,
            "identity:get_user",
        );
        cloud.refused(
            &token,
            "GET",
            &format!("/users/{other}/projects"),
            None,
            "identity:list_user_projects",
        );
        // An id that names nothing is refused the same way: no existence leak.
        cloud.refused(
            &token,
            "GET",
            "/users/no-such-user",
            None,
            "identity:get_user",
        );
    }
    // The admin gets 404 for it.
    let (status, _) = cloud.call("GET", "/users/no-such-user", &cloud.admin, None);
    assert_eq!(status, 404);
}

#[test]
fn users_own_their_credentials_and_tokens_only() {
    let cloud = Cloud::new(Server::start());
    let member = cloud.token("member1", "p1");
    let other = cloud.token("member2", "p2");
    let me = cloud.user_ids["member1"].clone();
    let them = cloud.user_ids["member2"].clone();
    let p1 = cloud.p1.clone();
    // Own credential: allowed; one for someone else: refused.
    let text = cloud.allowed(
        &member,
        "POST",
        "/credentials",
        Some(json!({"credential": {"user_id": me, "type": "totp", "blob": "abc"}})),
    );
    let created: Value = serde_json::from_str(&text).expect("json");
    let cred = created["credential"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    cloud.refused(
        &member,
        "POST",
        "/credentials",
        Some(json!({"credential": {"user_id": them, "type": "totp", "blob": "abc"}})),
        "identity:create_credential",
    );
    // Another user can neither read, change nor delete it, nor see it listed.
    cloud.refused(
        &other,
        "GET",
        &format!("/credentials/{cred}"),
        None,
        "identity:get_credential",
    );
    cloud.refused(
        &other,
        "PATCH",
        &format!("/credentials/{cred}"),
        Some(json!({"credential": {"blob": "x"}})),
        "identity:update_credential",
    );
    cloud.refused(
        &other,
        "DELETE",
        &format!("/credentials/{cred}"),
        None,
        "identity:delete_credential",
    );
    let listed: Value =
        serde_json::from_str(&cloud.allowed(&other, "GET", "/credentials", None)).expect("json");
    assert_eq!(
        listed["credentials"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    // Nor give it away.
    cloud.refused(
        &member,
        "PATCH",
        &format!("/credentials/{cred}"),
        Some(json!({"credential": {"user_id": them}})),
        "identity:update_credential",
    );
    // EC2 credentials and application credentials: only under one's own user.
    cloud.allowed(
        &member,
        "POST",
        &format!("/users/{me}/credentials/OS-EC2"),
        Some(json!({"tenant_id": p1})),
    );
    cloud.refused(
        &other,
        "POST",
        &format!("/users/{me}/credentials/OS-EC2"),
        Some(json!({"tenant_id": p1})),
        "identity:ec2_create_credential",
    );
    cloud.refused(
        &other,
        "GET",
        &format!("/users/{me}/credentials/OS-EC2"),
        None,
        "identity:ec2_list_credentials",
    );
    cloud.refused(
        &other,
        "GET",
        &format!("/users/{me}/application_credentials"),
        None,
        "identity:list_application_credentials",
    );
    cloud.refused(
        &other,
        "POST",
        &format!("/users/{me}/application_credentials"),
        Some(json!({"application_credential": {"name": "a"}})),
        "identity:create_application_credential",
    );
    // Tokens: one's own can be validated; another user's cannot.
    let reply = cloud
        .server
        .request("GET", "/identity/v3/auth/tokens", Some(&member), None);
    assert_eq!(reply.status, 400, "no X-Subject-Token: {}", reply.text);
    let subject = |caller: &str, subject: &str, method: &str| {
        support::http(
            &cloud.server.addr,
            method,
            "/identity/v3/auth/tokens",
            &[
                ("X-Auth-Token", caller.to_string()),
                ("X-Subject-Token", subject.to_string()),
            ],
            None,
        )
    };
    assert_eq!(subject(&member, &member, "GET").status, 200);
    let reply = subject(&other, &member, "GET");
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert!(
        reply.text.contains("identity:validate_token"),
        "{}",
        reply.text
    );
    assert_eq!(subject(&other, &member, "HEAD").status, 403);
    assert_eq!(subject(&other, &member, "DELETE").status, 403);
    // The member's token still works after the refused revocation.
    assert_eq!(subject(&member, &member, "HEAD").status, 200);
    assert_eq!(subject(&cloud.admin, &member, "GET").status, 200);
    // A revoked token is 404 for everyone, as Keystone validates before enforcing.
    let second = cloud.token("member1", "p1");
    assert_eq!(subject(&member, &second, "DELETE").status, 204);
    assert_eq!(subject(&member, &second, "GET").status, 404);
    assert_eq!(subject(&other, &second, "HEAD").status, 404);
}

#[test]
fn a_policy_file_in_the_state_dir_changes_the_answers() {
    let dir = std::env::temp_dir().join(format!(
        "yunhe-policy-identity-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("state dir");
    std::fs::write(
        dir.join("policy.yaml"),
        "# readers may list users; nobody may read a project's tags\n\
         \"identity:list_users\": \"role:reader\"\n\
         \"identity:list_project_tags\": \"!\"\n",
    )
    .expect("policy.yaml");
    // Server::start_in removes the directory when the server is dropped.
    let cloud = Cloud::new(Server::start_in(dir, false));
    let reader = cloud.token("reader1", "p1");
    let p1 = cloud.p1.clone();
    let listed: Value =
        serde_json::from_str(&cloud.allowed(&reader, "GET", "/users", None)).expect("json");
    assert!(
        listed["users"].as_array().is_some_and(|u| u.len() >= 5),
        "{listed}"
    );
    cloud.refused(
        &reader,
        "GET",
        &format!("/projects/{p1}/tags"),
        None,
        "identity:list_project_tags",
    );
    cloud.refused(
        &cloud.admin,
        "GET",
        &format!("/projects/{p1}/tags"),
        None,
        "identity:list_project_tags",
    );
    // Rules the file does not name keep their defaults.
    cloud.refused(
        &reader,
        "POST",
        "/users",
        Some(json!({"user": {"name": "x"}})),
        "identity:create_user",
    );
}
