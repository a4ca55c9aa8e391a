//! Issue 9, findings 2 and 6, for compute (Nova): every operation is decided
//! by Nova's default rules through the one policy module. A `reader` reads
//! but writes nothing; a `member` writes in its own project only; another
//! project's servers stay invisible (404); admin-only operations are refused
//! to members and managers; `policy.yaml` in the state directory changes the
//! answer. Against the real `yunhe serve` on an ephemeral loopback port.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http};

/// Compute microversion of every request (2.37+ takes `"networks": "none"`).
const MV: &str = "2.73";

/// A state directory; on drop every `yunhe vmm` started below it is killed
/// and the directory removed (also when a test fails). Declare it before the
/// `Server` so that it is dropped after the server.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("yunhe-pc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the state directory");
        StateDir(dir)
    }

    /// Pids of the `yunhe vmm` processes whose spec lies below this directory.
    fn vmm_pids(&self) -> Vec<i32> {
        let prefix = format!("{}/", self.0.display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
                let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
                let args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let is_vmm = args.len() >= 4
                    && args[1] == "vmm"
                    && args[2] == "--spec"
                    && args[3].starts_with(&prefix);
                is_vmm.then_some(pid)
            })
            .collect()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for pid in self.vmm_pids() {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn call(server: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    let headers = vec![
        ("X-Auth-Token", token.to_string()),
        ("OpenStack-API-Version", format!("compute {MV}")),
    ];
    http(&server.addr, method, path, &headers, body)
}

fn created_id(reply: &Reply, key: &str) -> String {
    reply.json()[key]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} id: {}", reply.text))
        .to_string()
}

fn new_project(server: &Server, admin: &str, name: &str) -> String {
    let reply = server.request(
        "POST",
        "/identity/v3/projects",
        Some(admin),
        Some(&json!({"project": {"name": name, "domain_id": "default"}})),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    created_id(&reply, "project")
}

/// A new user with only `role` on the project; returns its token.
fn user_with_role(
    server: &Server,
    admin: &str,
    project: (&str, &str),
    name: &str,
    role: &str,
) -> String {
    let (project_id, project_name) = project;
    let user = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": name, "domain_id": "default", "password": "pw-123456"}})),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = created_id(&user, "user");
    let roles = server.get(&format!("/identity/v3/roles?name={role}"), Some(admin));
    let role_id = roles.json()["roles"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no role {role}: {}", roles.text))
        .to_string();
    let grant = server.request(
        "PUT",
        &format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"),
        Some(admin),
        None,
    );
    assert_eq!(grant.status, 204, "{}", grant.text);
    let token = server.token(name, "pw-123456", Some(project_name));
    assert_eq!(token.status, 201, "{}", token.text);
    token.header("x-subject-token").expect("token").to_string()
}

/// A small public active image, uploaded by the admin.
fn public_image(server: &Server, admin: &str) -> String {
    let created = server.request(
        "POST",
        "/image/v2/images",
        Some(admin),
        Some(&json!({"name": "policy-img", "disk_format": "raw",
                     "container_format": "bare", "visibility": "public"})),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["id"].as_str().expect("id").to_string();
    let upload = support::http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", admin.to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        &[0u8; 4096],
    );
    assert_eq!(upload.status, 204);
    id
}

fn server_body(image: &str) -> Value {
    json!({"server": {"name": "pol", "imageRef": image, "flavorRef": "1", "networks": "none"}})
}

/// Asserts Nova's refusal: 403 naming the rule.
fn assert_denied(reply: &Reply, rule: &str, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {}", reply.text);
    let message = reply.json()["forbidden"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        message,
        format!("Policy doesn't allow {rule} to be performed."),
        "{what}"
    );
}

/// Deletes the server as `token` and waits (bounded) until it is gone.
fn delete_and_wait(server: &Server, token: &str, id: &str) {
    let reply = call(
        server,
        "DELETE",
        &format!("/compute/v2.1/servers/{id}"),
        token,
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if call(
            server,
            "GET",
            &format!("/compute/v2.1/servers/{id}"),
            token,
            None,
        )
        .status
            == 404
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server {id} not gone within 20 s");
}

#[test]
fn readers_read_members_write_their_own_project_and_admin_actions_stay_admin() {
    let dir = StateDir::new("roles");
    let server = Server::start_in(dir.0.clone(), true);
    let admin = server.admin_token();
    let image = public_image(&server, &admin);
    let p = new_project(&server, &admin, "pc-p");
    let q = new_project(&server, &admin, "pc-q");
    let reader = user_with_role(&server, &admin, (&p, "pc-p"), "pc-reader", "reader");
    let member = user_with_role(&server, &admin, (&p, "pc-p"), "pc-member", "member");
    let manager = user_with_role(&server, &admin, (&p, "pc-p"), "pc-manager", "manager");
    let stranger = user_with_role(&server, &admin, (&q, "pc-q"), "pc-stranger", "member");

    // The finding: a reader created a server (202). Now 403, and reads pass.
    let body = server_body(&image);
    let refused = call(
        &server,
        "POST",
        "/compute/v2.1/servers",
        &reader,
        Some(&body),
    );
    assert_denied(&refused, "os_compute_api:servers:create", "reader create");
    let listed = call(&server, "GET", "/compute/v2.1/servers", &reader, None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json()["servers"].as_array().map(Vec::len), Some(0));

    // A member creates one in its project.
    let made = call(
        &server,
        "POST",
        "/compute/v2.1/servers",
        &member,
        Some(&body),
    );
    assert_eq!(made.status, 202, "{}", made.text);
    let id = created_id(&made, "server");
    let path = format!("/compute/v2.1/servers/{id}");
    let action = format!("{path}/action");

    // The reader sees it and its sub-resources ...
    for sub in ["", "/metadata", "/tags", "/ips", "/os-instance-actions"] {
        let reply = call(&server, "GET", &format!("{path}{sub}"), &reader, None);
        assert_eq!(reply.status, 200, "reader GET {sub}: {}", reply.text);
    }
    let detail = call(
        &server,
        "GET",
        "/compute/v2.1/servers/detail",
        &reader,
        None,
    );
    assert_eq!(detail.status, 200, "{}", detail.text);
    let shown = &detail.json()["servers"][0];
    assert_eq!(shown["id"], id.as_str());
    assert!(
        shown.get("OS-EXT-SRV-ATTR:host").is_none(),
        "extended attributes are for admins: {shown}"
    );

    // ... but every write is refused with the rule Nova names.
    let writes: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "PUT",
            path.clone(),
            Some(json!({"server": {"name": "x"}})),
            "os_compute_api:servers:update",
        ),
        (
            "DELETE",
            path.clone(),
            None,
            "os_compute_api:servers:delete",
        ),
        (
            "POST",
            format!("{path}/metadata"),
            Some(json!({"metadata": {"a": "b"}})),
            "os_compute_api:server-metadata:create",
        ),
        (
            "PUT",
            format!("{path}/metadata/a"),
            Some(json!({"meta": {"a": "b"}})),
            "os_compute_api:server-metadata:update",
        ),
        (
            "DELETE",
            format!("{path}/metadata/a"),
            None,
            "os_compute_api:server-metadata:delete",
        ),
        (
            "PUT",
            format!("{path}/tags/t1"),
            None,
            "os_compute_api:os-server-tags:update",
        ),
        (
            "DELETE",
            format!("{path}/tags"),
            None,
            "os_compute_api:os-server-tags:delete_all",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"os-stop": null})),
            "os_compute_api:servers:stop",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"os-start": null})),
            "os_compute_api:servers:start",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"reboot": {"type": "SOFT"}})),
            "os_compute_api:servers:reboot",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"pause": null})),
            "os_compute_api:os-pause-server:pause",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"suspend": null})),
            "os_compute_api:os-suspend-server:suspend",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"shelve": null})),
            "os_compute_api:os-shelve:shelve",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"lock": null})),
            "os_compute_api:os-lock-server:lock",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"createImage": {"name": "snap"}})),
            "os_compute_api:servers:create_image",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"rebuild": {"imageRef": image}})),
            "os_compute_api:servers:rebuild",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"resize": {"flavorRef": "2"}})),
            "os_compute_api:servers:resize",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"os-getConsoleOutput": {}})),
            "os_compute_api:os-console-output",
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"os-getSerialConsole": {"type": "serial"}})),
            "os_compute_api:os-remote-consoles",
        ),
        (
            "POST",
            "/compute/v2.1/os-server-groups".into(),
            Some(json!({"server_group": {"name": "g", "policy": "affinity"}})),
            "os_compute_api:os-server-groups:create",
        ),
    ];
    for (method, url, body, rule) in &writes {
        let reply = call(&server, method, url, &reader, body.as_ref());
        assert_denied(&reply, rule, &format!("reader {method} {url}"));
    }

    // Another project's member cannot see the server at all: 404, not 403.
    for (method, url, body) in [
        ("GET", path.clone(), None),
        ("DELETE", path.clone(), None),
        ("POST", action.clone(), Some(json!({"os-stop": null}))),
        ("GET", format!("{path}/metadata"), None),
    ] {
        let reply = call(&server, method, &url, &stranger, body.as_ref());
        assert_eq!(reply.status, 404, "stranger {method} {url}: {}", reply.text);
    }
    let theirs = call(
        &server,
        "GET",
        "/compute/v2.1/servers?all_tenants=1",
        &stranger,
        None,
    );
    assert_denied(
        &theirs,
        "os_compute_api:servers:index:get_all_tenants",
        "stranger all_tenants",
    );

    // Admin-only operations stay admin-only for members and managers.
    for token in [&member, &manager] {
        let admin_only: Vec<(&str, String, Option<Value>, &str)> = vec![
            (
                "POST",
                action.clone(),
                Some(json!({"shelveOffload": null})),
                "os_compute_api:os-shelve:shelve_offload",
            ),
            (
                "POST",
                action.clone(),
                Some(json!({"os-resetState": {"state": "active"}})),
                "os_compute_api:os-admin-actions:reset_state",
            ),
            (
                "POST",
                "/compute/v2.1/flavors".into(),
                Some(json!({"flavor": {"name": "f", "ram": 64, "vcpus": 1, "disk": 0}})),
                "os_compute_api:os-flavor-manage:create",
            ),
            (
                "GET",
                "/compute/v2.1/os-hypervisors".into(),
                None,
                "os_compute_api:os-hypervisors:list",
            ),
            (
                "GET",
                "/compute/v2.1/os-aggregates".into(),
                None,
                "os_compute_api:os-aggregates:index",
            ),
            (
                "PUT",
                format!("/compute/v2.1/os-quota-sets/{p}"),
                Some(json!({"quota_set": {"instances": 50}})),
                "os_compute_api:os-quota-sets:update",
            ),
            (
                "GET",
                format!("{path}/diagnostics"),
                None,
                "os_compute_api:os-server-diagnostics",
            ),
        ];
        for (method, url, body, rule) in &admin_only {
            let reply = call(&server, method, url, token, body.as_ref());
            assert_denied(&reply, rule, &format!("non-admin {method} {url}"));
        }
    }

    // The member writes in its own project; the admin may reset state.
    let meta = call(
        &server,
        "POST",
        &format!("{path}/metadata"),
        &member,
        Some(&json!({"metadata": {"a": "b"}})),
    );
    assert_eq!(meta.status, 200, "{}", meta.text);
    let reset = call(
        &server,
        "POST",
        &action,
        &admin,
        Some(&json!({"os-resetState": {"state": "error"}})),
    );
    assert_eq!(reset.status, 202, "{}", reset.text);
    let as_admin = call(&server, "GET", &path, &admin, None);
    assert_eq!(as_admin.status, 200, "{}", as_admin.text);
    assert!(
        as_admin.json()["server"]
            .get("OS-EXT-SRV-ATTR:host")
            .is_some()
    );
    delete_and_wait(&server, &member, &id);
}

#[test]
fn a_policy_file_in_the_state_dir_changes_the_answer() {
    let dir = StateDir::new("file");
    std::fs::write(
        dir.0.join("policy.yaml"),
        "\"os_compute_api:servers:index\": \"role:admin\"\n\
         \"os_compute_api:os-flavor-manage:create\": \"role:member\"\n",
    )
    .expect("write policy.yaml");
    let server = Server::start_in(dir.0.clone(), true);
    let admin = server.admin_token();
    let p = new_project(&server, &admin, "pf-p");
    let member = user_with_role(&server, &admin, (&p, "pf-p"), "pf-member", "member");

    // Listing servers is for admins now; /detail keeps its default rule.
    let listed = call(&server, "GET", "/compute/v2.1/servers", &member, None);
    assert_denied(&listed, "os_compute_api:servers:index", "member list");
    let detail = call(
        &server,
        "GET",
        "/compute/v2.1/servers/detail",
        &member,
        None,
    );
    assert_eq!(detail.status, 200, "{}", detail.text);
    assert_eq!(
        call(&server, "GET", "/compute/v2.1/servers", &admin, None).status,
        200
    );

    // Creating flavors is open to members now.
    let flavor = call(
        &server,
        "POST",
        "/compute/v2.1/flavors",
        &member,
        Some(&json!({"flavor": {"name": "by-member", "ram": 64, "vcpus": 1, "disk": 0}})),
    );
    assert_eq!(flavor.status, 200, "{}", flavor.text);
}
