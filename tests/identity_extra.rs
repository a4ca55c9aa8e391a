//! Issue 16's Keystone APIs against the real `yunhe serve`: access rules,
//! the project hierarchy, endpoint filtering (OS-EP-FILTER),
//! domain-specific configuration and password history.

mod support;

use serde_json::{Value, json};
use support::Server;

const V3: &str = "/identity/v3";

fn v3(path: &str) -> String {
    format!("{V3}{path}")
}

/// POSTs and returns the created member (status 201 asserted).
fn create(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let reply = server.request("POST", &v3(path), Some(token), Some(&body));
    assert_eq!(reply.status, 201, "POST {path}: {}", reply.text);
    reply.json()
}

fn admin_user_id(server: &Server, token: &str) -> String {
    let users = server.get(&v3("/users?name=admin"), Some(token)).json();
    users["users"][0]["id"]
        .as_str()
        .expect("admin id")
        .to_string()
}

#[test]
fn access_rules_are_kept_per_user_and_not_deleted_while_in_use() {
    let server = Server::start();
    let admin = server.admin_token();
    let me = admin_user_id(&server, &admin);
    let rules = json!([{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]);
    let first = create(
        &server,
        &admin,
        &format!("/users/{me}/application_credentials"),
        json!({"application_credential": {"name": "one", "access_rules": rules}}),
    );
    let rule_id = first["application_credential"]["access_rules"][0]["id"]
        .as_str()
        .expect("rule id")
        .to_string();
    let second = create(
        &server,
        &admin,
        &format!("/users/{me}/application_credentials"),
        json!({"application_credential": {"name": "two", "access_rules": rules}}),
    );
    assert_eq!(
        second["application_credential"]["access_rules"][0]["id"], rule_id,
        "the same service, path and method is the same rule"
    );
    let listed = server
        .get(&v3(&format!("/users/{me}/access_rules")), Some(&admin))
        .json();
    assert_eq!(listed["access_rules"].as_array().map(Vec::len), Some(1));
    let shown = server.get(
        &v3(&format!("/users/{me}/access_rules/{rule_id}")),
        Some(&admin),
    );
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["access_rule"]["path"], "/v2.1/servers");
    let rule_path = v3(&format!("/users/{me}/access_rules/{rule_id}"));
    assert_eq!(
        server
            .request("DELETE", &rule_path, Some(&admin), None)
            .status,
        403,
        "in use"
    );
    for id in [
        &first["application_credential"]["id"],
        &second["application_credential"]["id"],
    ] {
        let path = v3(&format!(
            "/users/{me}/application_credentials/{}",
            id.as_str().expect("id")
        ));
        assert_eq!(
            server.request("DELETE", &path, Some(&admin), None).status,
            204
        );
    }
    assert_eq!(
        server.get(&rule_path, Some(&admin)).status,
        200,
        "the rule outlives its credentials"
    );
    assert_eq!(
        server
            .request("DELETE", &rule_path, Some(&admin), None)
            .status,
        204
    );
    assert_eq!(server.get(&rule_path, Some(&admin)).status, 404);
}

#[test]
fn project_hierarchy_expands_as_keystone_does() {
    let server = Server::start();
    let admin = server.admin_token();
    let me = admin_user_id(&server, &admin);
    let projects = server.get(&v3("/projects?name=admin"), Some(&admin)).json();
    let top = projects["projects"][0]["id"]
        .as_str()
        .expect("admin project")
        .to_string();
    let child = create(
        &server,
        &admin,
        "/projects",
        json!({"project": {"name": "child", "parent_id": top}}),
    )["project"]["id"]
        .as_str()
        .expect("child")
        .to_string();
    let grand = create(
        &server,
        &admin,
        "/projects",
        json!({"project": {"name": "grand", "parent_id": child}}),
    )["project"]["id"]
        .as_str()
        .expect("grand")
        .to_string();
    let roles = server.get(&v3("/roles?name=admin"), Some(&admin)).json();
    let role = roles["roles"][0]["id"].as_str().expect("role").to_string();
    let grant = v3(&format!("/projects/{child}/users/{me}/roles/{role}"));
    assert_eq!(
        server.request("PUT", &grant, Some(&admin), None).status,
        204
    );

    let ids = server
        .get(
            &v3(&format!("/projects/{top}?subtree_as_ids")),
            Some(&admin),
        )
        .json();
    assert_eq!(
        ids["project"]["subtree"],
        json!({ child.clone(): { grand.clone(): null } })
    );
    let ids = server
        .get(
            &v3(&format!("/projects/{grand}?parents_as_ids")),
            Some(&admin),
        )
        .json();
    assert_eq!(
        ids["project"]["parents"],
        json!({ child.clone(): { top.clone(): { "default": null } } })
    );
    let list = server
        .get(
            &v3(&format!("/projects/{top}?subtree_as_list&include_limits")),
            Some(&admin),
        )
        .json();
    let subtree = list["project"]["subtree"].as_array().expect("subtree");
    assert_eq!(
        subtree.len(),
        1,
        "only the projects the caller has a role on"
    );
    assert_eq!(subtree[0]["project"]["id"], child);
    assert!(subtree[0]["project"]["limits"].is_array());
    let list = server
        .get(
            &v3(&format!("/projects/{grand}?parents_as_list")),
            Some(&admin),
        )
        .json();
    let parents: Vec<&Value> = list["project"]["parents"]
        .as_array()
        .expect("parents")
        .iter()
        .map(|p| &p["project"]["id"])
        .collect();
    assert_eq!(parents, [&json!(child), &json!(top)]);
    let both = server.get(
        &v3(&format!("/projects/{grand}?parents_as_list&parents_as_ids")),
        Some(&admin),
    );
    assert_eq!(both.status, 400);
}

fn catalog_endpoint_count(server: &Server, project: &str) -> usize {
    let reply = server.token("admin", support::ADMIN_PASSWORD, Some(project));
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["token"]["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
        .sum()
}

#[test]
fn endpoint_filters_narrow_a_projects_catalog() {
    let server = Server::start();
    let admin = server.admin_token();
    let me = admin_user_id(&server, &admin);
    let project = create(
        &server,
        &admin,
        "/projects",
        json!({"project": {"name": "filtered"}}),
    )["project"]["id"]
        .as_str()
        .expect("project")
        .to_string();
    let roles = server.get(&v3("/roles?name=admin"), Some(&admin)).json();
    let role = roles["roles"][0]["id"].as_str().expect("role").to_string();
    let grant = v3(&format!("/projects/{project}/users/{me}/roles/{role}"));
    assert_eq!(
        server.request("PUT", &grant, Some(&admin), None).status,
        204
    );
    let whole = catalog_endpoint_count(&server, "filtered");
    assert!(whole > 1, "no association: the whole catalog");

    let endpoints = server
        .get(&v3("/endpoints?interface=public"), Some(&admin))
        .json();
    let endpoint = endpoints["endpoints"][0].clone();
    let ep = endpoint["id"].as_str().expect("endpoint").to_string();
    let assoc = v3(&format!("/OS-EP-FILTER/projects/{project}/endpoints/{ep}"));
    assert_eq!(server.get(&assoc, Some(&admin)).status, 404);
    assert_eq!(
        server.request("PUT", &assoc, Some(&admin), None).status,
        204
    );
    assert_eq!(server.get(&assoc, Some(&admin)).status, 204);
    assert_eq!(catalog_endpoint_count(&server, "filtered"), 1);
    assert_eq!(
        catalog_endpoint_count(&server, "admin"),
        whole,
        "others keep theirs"
    );
    let projects = server
        .get(
            &v3(&format!("/OS-EP-FILTER/endpoints/{ep}/projects")),
            Some(&admin),
        )
        .json();
    assert_eq!(projects["projects"][0]["id"], project);
    assert_eq!(
        server.request("DELETE", &assoc, Some(&admin), None).status,
        204
    );
    assert_eq!(
        server.request("DELETE", &assoc, Some(&admin), None).status,
        404
    );

    let group = create(
        &server,
        &admin,
        "/OS-EP-FILTER/endpoint_groups",
        json!({"endpoint_group": {"name": "g", "filters": {"service_id": endpoint["service_id"], "interface": "public"}}}),
    )["endpoint_group"]["id"]
        .as_str()
        .expect("group")
        .to_string();
    let member = v3(&format!(
        "/OS-EP-FILTER/endpoint_groups/{group}/projects/{project}"
    ));
    assert_eq!(server.get(&member, Some(&admin)).status, 404);
    assert_eq!(
        server.request("PUT", &member, Some(&admin), None).status,
        204
    );
    assert_eq!(
        server.get(&member, Some(&admin)).json()["project_endpoint_group"]["project_id"],
        project
    );
    let groups = server
        .get(
            &v3(&format!("/OS-EP-FILTER/projects/{project}/endpoint_groups")),
            Some(&admin),
        )
        .json();
    assert_eq!(groups["endpoint_groups"][0]["id"], group);
    let listed = server
        .get(
            &v3(&format!("/OS-EP-FILTER/projects/{project}/endpoints")),
            Some(&admin),
        )
        .json();
    assert_eq!(listed["endpoints"][0]["id"], ep);
    assert_eq!(catalog_endpoint_count(&server, "filtered"), 1);
    let group_path = v3(&format!("/OS-EP-FILTER/endpoint_groups/{group}"));
    assert_eq!(
        server
            .request("DELETE", &group_path, Some(&admin), None)
            .status,
        204
    );
    assert_eq!(
        catalog_endpoint_count(&server, "filtered"),
        whole,
        "the group's deletion ends the association"
    );
}

#[test]
fn domain_config_is_stored_and_checked_as_keystone_does() {
    let server = Server::start();
    let admin = server.admin_token();
    let domain = create(
        &server,
        &admin,
        "/domains",
        json!({"domain": {"name": "cfg"}}),
    )["domain"]["id"]
        .as_str()
        .expect("domain")
        .to_string();
    let config = v3(&format!("/domains/{domain}/config"));
    assert_eq!(server.get(&config, Some(&admin)).status, 404);
    let body = json!({"config": {"identity": {"driver": "ldap"},
        "ldap": {"url": "ldap://x/", "user_tree_dn": "ou=Users", "password": "secret"}}});
    let put = server.request("PUT", &config, Some(&admin), Some(&body));
    assert_eq!(put.status, 201, "{}", put.text);
    assert!(
        put.json()["config"]["ldap"].get("password").is_none(),
        "sensitive"
    );
    assert_eq!(
        server
            .request("PUT", &config, Some(&admin), Some(&body))
            .status,
        200
    );
    assert_eq!(
        server
            .get(&format!("{config}/ldap/url"), Some(&admin))
            .json()["config"],
        json!({"url": "ldap://x/"})
    );
    assert_eq!(
        server
            .get(&format!("{config}/ldap/password"), Some(&admin))
            .status,
        404
    );
    let patched = server.request(
        "PATCH",
        &format!("{config}/ldap/url"),
        Some(&admin),
        Some(&json!({"config": {"url": "ldap://y/"}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["config"]["ldap"]["url"], "ldap://y/");
    let wrong = server.request(
        "PATCH",
        &format!("{config}/ldap"),
        Some(&admin),
        Some(&json!({"config": {"identity": {"driver": "sql"}}})),
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    let unsupported = server.request(
        "PUT",
        &config,
        Some(&admin),
        Some(&json!({"config": {"ldap": {"colour": "red"}}})),
    );
    assert_eq!(unsupported.status, 403);
    assert_eq!(
        server
            .request("DELETE", &format!("{config}/identity"), Some(&admin), None)
            .status,
        204
    );
    assert_eq!(
        server
            .get(&format!("{config}/identity"), Some(&admin))
            .status,
        404
    );
    assert_eq!(
        server
            .get(&v3("/domains/config/ldap/url/default"), Some(&admin))
            .json()["config"],
        json!({"url": "ldap://localhost"})
    );
    assert_eq!(
        server
            .get(&v3("/domains/config/identity/default"), Some(&admin))
            .json()["config"]["identity"]["driver"],
        "sql"
    );
    assert_eq!(
        server.request("DELETE", &config, Some(&admin), None).status,
        204
    );
    assert_eq!(server.get(&config, Some(&admin)).status, 404);
}

#[test]
fn self_service_password_changes_respect_the_history() {
    let server = Server::start_with_args(&["--unique-last-password-count", "2"]);
    let admin = server.admin_token();
    let user = create(
        &server,
        &admin,
        "/users",
        json!({"user": {"name": "hist", "password": "first-pass"}}),
    )["user"]["id"]
        .as_str()
        .expect("user")
        .to_string();
    let change = |original: &str, new: &str| {
        server
            .request(
                "POST",
                &v3(&format!("/users/{user}/password")),
                None,
                Some(&json!({"user": {"original_password": original, "password": new}})),
            )
            .status
    };
    assert_eq!(
        change("first-pass", "first-pass"),
        400,
        "the current password"
    );
    assert_eq!(change("first-pass", "second-pass"), 204);
    assert_eq!(change("second-pass", "first-pass"), 400, "the previous one");
    assert_eq!(change("second-pass", "third-pass"), 204);
    assert_eq!(
        change("third-pass", "first-pass"),
        204,
        "two back is outside a count of 2"
    );
    // An admin's reset is not checked.
    let reset = server.request(
        "PATCH",
        &v3(&format!("/users/{user}")),
        Some(&admin),
        Some(&json!({"user": {"password": "first-pass"}})),
    );
    assert_eq!(reset.status, 200, "{}", reset.text);
}
