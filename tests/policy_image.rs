//! Issue 9, finding 2 for Glance: every image operation is decided by
//! Glance's default rules (reader reads, member writes in its own project,
//! admin-only rules stay admin-only) and an operator's `policy.yaml`
//! changes the answer. Runs the real `yunhe serve` on loopback.

mod support;

use serde_json::{Value, json};
use support::{Server, http_bytes};

/// A new project; returns (id, name).
fn project(server: &Server, admin: &str, name: &str) -> String {
    let reply = server.request(
        "POST",
        "/identity/v3/projects",
        Some(admin),
        Some(&json!({"project": {"name": name}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["project"]["id"]
        .as_str()
        .expect("project id")
        .to_string()
}

/// A new user with `role` on the project (by id and name); returns a
/// project-scoped token.
fn user_with_role(
    server: &Server,
    admin: &str,
    (project_id, project_name): (&str, &str),
    user: &str,
    role: &str,
) -> String {
    let password = format!("pw-{user}-123");
    let reply = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": user, "password": password}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let user_id = reply.json()["user"]["id"]
        .as_str()
        .expect("user id")
        .to_string();
    let roles = server
        .get(&format!("/identity/v3/roles?name={role}"), Some(admin))
        .json();
    let role_id = roles["roles"][0]["id"].as_str().expect("role id");
    let grant = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}");
    assert_eq!(server.request("PUT", &grant, Some(admin), None).status, 204);
    let reply = server.token(user, &password, Some(project_name));
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.header("x-subject-token").expect("token").to_string()
}

fn create(server: &Server, token: &str, body: Value) -> (u16, Value) {
    let reply = server.request("POST", "/image/v2/images", Some(token), Some(&body));
    let json = if reply.status == 201 {
        reply.json()
    } else {
        Value::Null
    };
    (reply.status, json)
}

fn raw(server: &Server, method: &str, path: &str, token: &str, media: &str, body: &[u8]) -> u16 {
    http_bytes(
        &server.addr,
        method,
        path,
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", media.to_string()),
        ],
        body,
    )
    .status
}

fn patch(server: &Server, token: &str, id: &str, ops: Value) -> u16 {
    raw(
        server,
        "PATCH",
        &format!("/image/v2/images/{id}"),
        token,
        "application/openstack-images-v2.1-json-patch",
        ops.to_string().as_bytes(),
    )
}

fn upload(server: &Server, token: &str, id: &str, data: &[u8]) -> u16 {
    raw(
        server,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        token,
        "application/octet-stream",
        data,
    )
}

fn status(server: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> u16 {
    server.request(method, path, Some(token), body).status
}

#[test]
fn reader_reads_member_writes_only_its_own_project_admin_rules_stay_admin() {
    let server = Server::start();
    let admin = server.admin_token();
    let p = project(&server, &admin, "pol-img-p");
    let q = project(&server, &admin, "pol-img-q");
    let member = user_with_role(&server, &admin, (&p, "pol-img-p"), "img-member", "member");
    let reader = user_with_role(&server, &admin, (&p, "pol-img-p"), "img-reader", "reader");
    let manager = user_with_role(&server, &admin, (&p, "pol-img-p"), "img-manager", "manager");
    let other = user_with_role(&server, &admin, (&q, "pol-img-q"), "img-other", "member");

    // member creates and uploads in its own project.
    let (code, image) = create(
        &server,
        &member,
        json!({"name": "private", "disk_format": "raw", "container_format": "bare", "visibility": "private"}),
    );
    assert_eq!(code, 201);
    let id = image["id"].as_str().expect("id").to_string();
    assert_eq!(upload(&server, &member, &id, b"0123456789"), 204);
    let image_path = format!("/image/v2/images/{id}");

    // reader reads the image and the list ...
    assert_eq!(status(&server, "GET", &image_path, &reader, None), 200);
    let list = server.get("/image/v2/images", Some(&reader)).json();
    assert!(
        list["images"]
            .as_array()
            .expect("images")
            .iter()
            .any(|i| i["id"] == id.as_str()),
        "{list}"
    );
    // ... but every write is refused with 403 (and download needs member).
    let (code, _) = create(
        &server,
        &reader,
        json!({"name": "r", "visibility": "private"}),
    );
    assert_eq!(code, 403, "reader create");
    assert_eq!(upload(&server, &reader, &id, b"x"), 403, "reader upload");
    assert_eq!(
        status(&server, "GET", &format!("{image_path}/file"), &reader, None),
        403,
        "reader download"
    );
    assert_eq!(
        patch(
            &server,
            &reader,
            &id,
            json!([{"op": "replace", "path": "/name", "value": "x"}])
        ),
        403,
        "reader patch"
    );
    for (method, path) in [
        ("DELETE", image_path.clone()),
        ("POST", format!("{image_path}/actions/deactivate")),
        ("POST", format!("{image_path}/actions/reactivate")),
        ("PUT", format!("{image_path}/tags/t1")),
        ("DELETE", format!("{image_path}/tags/t1")),
    ] {
        assert_eq!(
            status(&server, method, &path, &reader, None),
            403,
            "reader {method} {path}"
        );
    }
    assert_eq!(
        raw(
            &server,
            "PUT",
            &format!("{image_path}/stage"),
            &reader,
            "application/octet-stream",
            b"x"
        ),
        403,
        "reader stage"
    );
    assert_eq!(
        status(
            &server,
            "POST",
            &format!("{image_path}/import"),
            &reader,
            Some(&json!({"method": {"name": "glance-direct"}}))
        ),
        403,
        "reader import"
    );
    assert_eq!(
        status(
            &server,
            "POST",
            &format!("{image_path}/members"),
            &reader,
            Some(&json!({"member": q}))
        ),
        403,
        "reader add member"
    );

    // Another project's member cannot see, change or delete it: 404.
    assert_eq!(status(&server, "GET", &image_path, &other, None), 404);
    assert_eq!(status(&server, "DELETE", &image_path, &other, None), 404);
    assert_eq!(
        patch(
            &server,
            &other,
            &id,
            json!([{"op": "replace", "path": "/name", "value": "x"}])
        ),
        404
    );
    assert_eq!(upload(&server, &other, &id, b"x"), 404);
    // ... nor create images owned by this project.
    let (code, _) = create(&server, &other, json!({"name": "o", "owner": p}));
    assert_eq!(code, 403, "create owned by another project");

    // Publicizing is admin only: refused to member and manager.
    for token in [&member, &manager] {
        assert_eq!(
            patch(
                &server,
                token,
                &id,
                json!([{"op": "replace", "path": "/visibility", "value": "public"}])
            ),
            403
        );
        let (code, _) = create(
            &server,
            token,
            json!({"name": "pub", "visibility": "public"}),
        );
        assert_eq!(code, 403);
    }
    // Community is the owner's member's to choose; admin may publicize.
    assert_eq!(
        patch(
            &server,
            &member,
            &id,
            json!([{"op": "replace", "path": "/visibility", "value": "community"}])
        ),
        200
    );
    assert_eq!(
        patch(
            &server,
            &admin,
            &id,
            json!([{"op": "replace", "path": "/visibility", "value": "public"}])
        ),
        200
    );
    // A public image of another project is readable but not writable: 403.
    assert_eq!(status(&server, "GET", &image_path, &other, None), 200);
    assert_eq!(status(&server, "DELETE", &image_path, &other, None), 403);
    assert_eq!(
        status(
            &server,
            "POST",
            &format!("{image_path}/actions/deactivate"),
            &other,
            None
        ),
        403
    );

    // Metadata definitions: writes are metadef_admin.
    let ns = json!({"namespace": "PolImg::Test", "visibility": "public"});
    for token in [&member, &manager, &reader] {
        assert_eq!(
            status(
                &server,
                "POST",
                "/image/v2/metadefs/namespaces",
                token,
                Some(&ns)
            ),
            403
        );
    }
    assert_eq!(
        status(
            &server,
            "POST",
            "/image/v2/metadefs/namespaces",
            &admin,
            Some(&ns)
        ),
        201
    );
    let ns_path = "/image/v2/metadefs/namespaces/PolImg::Test";
    assert_eq!(status(&server, "GET", ns_path, &reader, None), 200);
    assert_eq!(status(&server, "DELETE", ns_path, &member, None), 403);
    assert_eq!(
        status(
            &server,
            "POST",
            &format!("{ns_path}/tags/t1"),
            &member,
            None
        ),
        403
    );
    assert_eq!(status(&server, "DELETE", ns_path, &admin, None), 204);

    // The member deletes its own image.
    assert_eq!(status(&server, "DELETE", &image_path, &member, None), 204);
}

#[test]
fn policy_yaml_in_the_state_dir_changes_the_answer() {
    let dir = std::env::temp_dir().join(format!(
        "yunhe-policy-image-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("state dir");
    std::fs::write(
        dir.join("policy.yaml"),
        "# members may publish; nobody may delete\n\
         \"publicize_image\": \"role:member\"\n\
         \"delete_image\": \"!\"\n",
    )
    .expect("policy.yaml");
    // The server removes the directory when dropped.
    let server = Server::start_in(dir, false);
    let admin = server.admin_token();
    let p = project(&server, &admin, "pol-yaml-p");
    let member = user_with_role(&server, &admin, (&p, "pol-yaml-p"), "yaml-member", "member");
    let (code, image) = create(
        &server,
        &member,
        json!({"name": "published", "visibility": "public"}),
    );
    assert_eq!(code, 201, "publicize_image overridden to role:member");
    let path = format!("/image/v2/images/{}", image["id"].as_str().expect("id"));
    assert_eq!(status(&server, "DELETE", &path, &member, None), 403);
    assert_eq!(status(&server, "DELETE", &path, &admin, None), 403);
}
