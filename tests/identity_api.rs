//! Keystone v3 against the real `yunhe serve` on an ephemeral port.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::{ADMIN_PASSWORD, Server};

#[test]
fn every_service_root_answers_version_discovery_with_a_request_id() {
    let server = Server::start();
    let identity = server.get("/identity", None);
    assert_eq!(identity.status, 300);
    let versions = identity.json();
    assert_eq!(versions["versions"]["values"][0]["id"], "v3.14");
    assert!(
        identity
            .header("x-openstack-request-id")
            .is_some_and(|id| id.starts_with("req-"))
    );
    for (path, id) in [
        ("/compute", "v2.0"),
        ("/image", "v2.0"),
        ("/network", "v2.0"),
        ("/volume", "v3.0"),
    ] {
        let reply = server.get(path, None);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.json()["versions"][0]["id"], id, "{path}");
        assert!(reply.header("x-openstack-request-id").is_some(), "{path}");
    }
    assert_eq!(
        server.get("/identity/v3", None).json()["version"]["status"],
        "stable"
    );
    assert_eq!(server.get("/healthz", None).status, 200);
    assert_eq!(server.get("/", None).status, 200);
}

#[test]
fn first_start_writes_private_client_files() {
    let server = Server::start();
    for name in ["clouds.yaml", "admin-openrc.sh"] {
        let path = server.state_dir.join(name);
        let mode = std::fs::metadata(&path)
            .expect("client file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains(ADMIN_PASSWORD),
            "{name} carries the admin password"
        );
        assert!(
            text.contains(&format!("{}/identity", server.base)),
            "{name} names the auth URL"
        );
    }
}

#[test]
fn token_issue_validate_and_revoke() {
    let server = Server::start();
    let reply = server.token("admin", ADMIN_PASSWORD, Some("admin"));
    assert_eq!(reply.status, 201);
    let token = reply.header("x-subject-token").expect("token").to_string();
    let body = reply.json();
    assert_eq!(body["token"]["project"]["name"], "admin");
    assert_eq!(body["token"]["methods"], json!(["password"]));
    let roles: Vec<&str> = body["token"]["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for implied in ["admin", "member", "reader"] {
        assert!(
            roles.contains(&implied),
            "admin implies {implied}: {roles:?}"
        );
    }
    assert!(
        body["token"]["catalog"]
            .as_array()
            .is_some_and(|c| c.iter().any(|s| s["type"] == "identity"))
    );

    // Validate with X-Subject-Token, with and without the catalog.
    let headers = [
        ("X-Auth-Token", token.clone()),
        ("X-Subject-Token", token.clone()),
    ];
    let shown = support::http(
        &server.addr,
        "GET",
        "/identity/v3/auth/tokens?nocatalog",
        &headers,
        None,
    );
    assert_eq!(shown.status, 200);
    assert!(shown.json()["token"].get("catalog").is_none());
    assert_eq!(
        support::http(
            &server.addr,
            "HEAD",
            "/identity/v3/auth/tokens",
            &headers,
            None
        )
        .status,
        200
    );

    // A wrong password is a 401 in Keystone's format with WWW-Authenticate.
    let bad = server.token("admin", "wrong", Some("admin"));
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["code"], 401);
    assert!(
        bad.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Keystone uri="))
    );
    // Every service's 401 names the identity service, as keystonemiddleware's.
    for path in ["/compute/v2.1/servers", "/image/v2/images"] {
        let refused = server.get(path, Some("not-a-token"));
        assert_eq!(refused.status, 401, "{path}");
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Keystone uri=") && v.contains("/identity")),
            "{path}: {:?}",
            refused.header("www-authenticate")
        );
    }

    // Rescope to the system with the token method.
    let rescoped = server.request(
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(&json!({"auth": {"identity": {"methods": ["token"], "token": {"id": token}}, "scope": {"system": {"all": true}}}})),
    );
    assert_eq!(rescoped.status, 201, "{}", rescoped.text);
    assert_eq!(rescoped.json()["token"]["system"]["all"], true);

    let revoked = support::http(
        &server.addr,
        "DELETE",
        "/identity/v3/auth/tokens",
        &headers,
        None,
    );
    assert_eq!(revoked.status, 204);
    assert_eq!(server.get("/identity/v3/users", Some(&token)).status, 401);
}

#[test]
fn a_member_is_confined_and_loses_access_when_disabled() {
    let server = Server::start();
    let admin = server.admin_token();
    let project = server.request(
        "POST",
        "/identity/v3/projects",
        Some(&admin),
        Some(&json!({"project": {"name": "demo"}})),
    );
    assert_eq!(project.status, 201, "{}", project.text);
    let project_id = project.json()["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let user = server.request(
        "POST",
        "/identity/v3/users",
        Some(&admin),
        Some(&json!({"user": {"name": "alice", "password": "s3cret-Alice", "default_project_id": project_id, "email": "a@example.org"}})),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    assert_eq!(user.json()["user"]["email"], "a@example.org");
    let user_id = user.json()["user"]["id"].as_str().expect("id").to_string();
    let roles = server
        .get("/identity/v3/roles?name=member", Some(&admin))
        .json();
    let member = roles["roles"][0]["id"]
        .as_str()
        .expect("member role")
        .to_string();

    // No role yet: she cannot scope to demo.
    assert_eq!(
        server.token("alice", "s3cret-Alice", Some("demo")).status,
        401
    );
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{member}");
    assert_eq!(
        server.request("PUT", &grant, Some(&admin), None).status,
        204
    );
    assert_eq!(
        server.request("HEAD", &grant, Some(&admin), None).status,
        204
    );

    let reply = server.token("alice", "s3cret-Alice", Some("demo"));
    assert_eq!(reply.status, 201);
    let alice = reply.header("x-subject-token").expect("token").to_string();
    let create = server.request(
        "POST",
        "/identity/v3/users",
        Some(&alice),
        Some(&json!({"user": {"name": "mallory"}})),
    );
    assert_eq!(create.status, 403);
    assert_eq!(create.json()["error"]["title"], "Forbidden");
    assert_eq!(server.get("/identity/v3/users", Some(&alice)).status, 403);
    assert_eq!(
        server
            .get(&format!("/identity/v3/users/{user_id}"), Some(&alice))
            .status,
        200
    );
    assert_eq!(
        server
            .get("/identity/v3/auth/projects", Some(&alice))
            .json()["projects"][0]["name"],
        "demo"
    );

    // Effective assignments with names.
    let listing = server.get(
        &format!("/identity/v3/role_assignments?user.id={user_id}&effective&include_names"),
        Some(&admin),
    );
    let names: Vec<String> = listing.json()["role_assignments"]
        .as_array()
        .expect("assignments")
        .iter()
        .map(|a| a["role"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        names.contains(&"member".to_string()) && names.contains(&"reader".to_string()),
        "{names:?}"
    );

    let disable = server.request(
        "PATCH",
        &format!("/identity/v3/users/{user_id}"),
        Some(&admin),
        Some(&json!({"user": {"enabled": false}})),
    );
    assert_eq!(disable.status, 200);
    assert_eq!(
        server
            .get(&format!("/identity/v3/users/{user_id}"), Some(&alice))
            .status,
        401
    );
    assert_eq!(
        server.token("alice", "s3cret-Alice", Some("demo")).status,
        401
    );
}

#[test]
fn tokens_die_with_role_revocation_password_change_and_project_removal() {
    let server = Server::start();
    let admin = server.admin_token();
    let project_id = server
        .request(
            "POST",
            "/identity/v3/projects",
            Some(&admin),
            Some(&json!({"project": {"name": "p1"}})),
        )
        .json()["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let user_id = server
        .request(
            "POST",
            "/identity/v3/users",
            Some(&admin),
            Some(&json!({"user": {"name": "bob", "password": "pw-1"}})),
        )
        .json()["user"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let reader = server
        .get("/identity/v3/roles?name=reader", Some(&admin))
        .json()["roles"][0]["id"]
        .as_str()
        .expect("reader")
        .to_string();
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{reader}");
    assert_eq!(
        server.request("PUT", &grant, Some(&admin), None).status,
        204
    );
    let token = |server: &Server, pw: &str| {
        server
            .token("bob", pw, Some("p1"))
            .header("x-subject-token")
            .map(str::to_string)
    };
    let own = format!("/identity/v3/users/{user_id}");

    let t1 = token(&server, "pw-1").expect("token");
    assert_eq!(
        server.request("DELETE", &grant, Some(&admin), None).status,
        204
    );
    assert_eq!(server.get(&own, Some(&t1)).status, 401, "role revoked");

    assert_eq!(
        server.request("PUT", &grant, Some(&admin), None).status,
        204
    );
    let t2 = token(&server, "pw-1").expect("token");
    let change = server.request(
        "POST",
        &format!("/identity/v3/users/{user_id}/password"),
        Some(&t2),
        Some(&json!({"user": {"original_password": "pw-1", "password": "pw-2"}})),
    );
    assert_eq!(change.status, 204, "{}", change.text);
    assert_eq!(server.get(&own, Some(&t2)).status, 401, "password changed");
    assert!(token(&server, "pw-1").is_none());

    let t3 = token(&server, "pw-2").expect("token");
    let disable = server.request(
        "PATCH",
        &format!("/identity/v3/projects/{project_id}"),
        Some(&admin),
        Some(&json!({"project": {"enabled": false}})),
    );
    assert_eq!(disable.status, 200);
    assert_eq!(server.get(&own, Some(&t3)).status, 401, "project disabled");
}

#[test]
fn application_credentials_authenticate_and_show_the_secret_once() {
    let server = Server::start();
    let admin = server.admin_token();
    let me = server
        .get("/identity/v3/users?name=admin", Some(&admin))
        .json()["users"][0]["id"]
        .as_str()
        .expect("admin id")
        .to_string();
    let created = server.request(
        "POST",
        &format!("/identity/v3/users/{me}/application_credentials"),
        Some(&admin),
        Some(&json!({"application_credential": {"name": "ci"}})),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let cred = created.json()["application_credential"].clone();
    let secret = cred["secret"].as_str().expect("secret").to_string();
    let shown = server.get(
        &format!(
            "/identity/v3/users/{me}/application_credentials/{}",
            cred["id"].as_str().expect("id")
        ),
        Some(&admin),
    );
    assert!(
        shown.json()["application_credential"]
            .get("secret")
            .is_none()
    );
    let auth = server.request(
        "POST",
        "/identity/v3/auth/tokens",
        None,
        Some(
            &json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": cred["id"], "secret": secret}}}}),
        ),
    );
    assert_eq!(auth.status, 201, "{}", auth.text);
    assert_eq!(auth.json()["token"]["project"]["name"], "admin");
    assert_eq!(auth.json()["token"]["application_credential"]["name"], "ci");
}

#[test]
fn bad_input_gets_keystone_errors() {
    let server = Server::start();
    let admin = server.admin_token();
    let no_name = server.request(
        "POST",
        "/identity/v3/projects",
        Some(&admin),
        Some(&json!({"project": {}})),
    );
    assert_eq!(no_name.status, 400);
    let bad_enabled = server.request(
        "POST",
        "/identity/v3/users",
        Some(&admin),
        Some(&json!({"user": {"name": "x", "enabled": "yes"}})),
    );
    assert_eq!(bad_enabled.status, 400);
    let dup = server.request(
        "POST",
        "/identity/v3/projects",
        Some(&admin),
        Some(&json!({"project": {"name": "admin"}})),
    );
    assert_eq!(dup.status, 409);
    let missing = server.get("/identity/v3/projects/nope", Some(&admin));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], 404);
    let garbage = support::http(&server.addr, "POST", "/identity/v3/auth/tokens", &[], None);
    assert_eq!(garbage.status, 400);
    assert_eq!(server.get("/identity/v3/users", None).status, 401);
}

#[test]
fn kill_nine_loses_nothing_committed() {
    let server = Server::start();
    let admin = server.admin_token();
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = server.request(
            "POST",
            "/identity/v3/projects",
            Some(&admin),
            Some(&json!({"project": {"name": format!("p{i}")}})),
        );
        assert_eq!(reply.status, 201);
        ids.push(
            reply.json()["project"]["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let dir = server.kill9();
    let clouds_before = std::fs::read_to_string(dir.join("clouds.yaml")).expect("clouds.yaml");
    let server = Server::start_in(dir.clone(), false);
    let admin2 = server.admin_token();
    for id in &ids {
        assert_eq!(
            server
                .get(&format!("/identity/v3/projects/{id}"), Some(&admin2))
                .status,
            200
        );
    }
    // Tokens survive a restart too, and bootstrap did not recreate anything:
    // clouds.yaml keeps the same password and only follows the new URL.
    assert_eq!(server.get("/identity/v3/users", Some(&admin)).status, 200);
    let clouds_after = std::fs::read_to_string(dir.join("clouds.yaml")).expect("clouds.yaml");
    let password = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("password:"))
            .map(str::to_string)
    };
    assert!(password(&clouds_before).is_some());
    assert_eq!(password(&clouds_after), password(&clouds_before));
    assert!(
        clouds_after.contains(&format!("auth_url: {}/identity", server.base)),
        "{clouds_after}"
    );
    assert_eq!(
        server
            .get("/identity/v3/roles?name=admin", Some(&admin2))
            .json()["roles"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// `GET /v3/users` answers from memory while nothing changed (issue 17):
/// every write shows in the next list, filters still apply, and a user
/// who may not list still gets 403 from a warm list.
#[test]
fn the_user_list_follows_every_write() {
    let server = Server::start();
    let admin = server.admin_token();
    let names = |query: &str| -> Vec<String> {
        let reply = server.get(&format!("/identity/v3/users{query}"), Some(&admin));
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        assert!(
            body["links"]["self"]
                .as_str()
                .is_some_and(|l| l.ends_with("/identity/v3/users")),
            "{body}"
        );
        body["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter_map(|u| u["name"].as_str().map(str::to_string))
            .collect()
    };
    let before = names("");
    assert!(before.contains(&"admin".to_string()), "{before:?}");
    assert!(!before.contains(&"carol".to_string()), "{before:?}");
    let created = server.request(
        "POST",
        "/identity/v3/users",
        Some(&admin),
        Some(&json!({"user": {"name": "carol", "password": "carol-pw-123"}})),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["user"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let with = |extra: &str| {
        let mut all = before.clone();
        all.push(extra.to_string());
        all.sort();
        all
    };
    assert_eq!(names(""), with("carol"));
    assert_eq!(names("?name=carol"), vec!["carol".to_string()]);
    let renamed = server.request(
        "PATCH",
        &format!("/identity/v3/users/{id}"),
        Some(&admin),
        Some(&json!({"user": {"name": "dave", "enabled": false}})),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(names(""), with("dave"));
    assert_eq!(names("?enabled=false"), vec!["dave".to_string()]);
    // A member token: the warm list is still behind identity:list_users.
    let enable = server.request(
        "PATCH",
        &format!("/identity/v3/users/{id}"),
        Some(&admin),
        Some(&json!({"user": {"enabled": true}})),
    );
    assert_eq!(enable.status, 200, "{}", enable.text);
    let unscoped = server.token("dave", "carol-pw-123", None);
    let token = unscoped
        .header("x-subject-token")
        .expect("dave's token")
        .to_string();
    assert_eq!(server.get("/identity/v3/users", Some(&token)).status, 403);
    let deleted = server.request(
        "DELETE",
        &format!("/identity/v3/users/{id}"),
        Some(&admin),
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(names(""), before);
}
