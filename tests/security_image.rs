//! Security regressions of issue 9, findings 3 and 4, against the real
//! `yunhe serve`:
//! - a deleted image's id cannot be taken again (409) and the deleted image
//!   is gone from every view;
//! - a server's kernel_id/ramdisk_id must name an image the server's
//!   project owns, a public one, or one shared with it and accepted;
//! - uploads stop at `--image-size-cap` and at the `--min-free-space`
//!   reserve with 413, leaving no partial data;
//! - per-project image quotas from Keystone's unified limits (413), and the
//!   registered limits / limits API itself.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Reply, Server, http, http_bytes};

const YUNHE: &str = env!("CARGO_BIN_EXE_yunhe");
const MIB: usize = 1 << 20;

/// Creates a user with `role` in a new project; returns (project id, token).
fn user_in_new_project(server: &Server, admin: &str, name: &str, role: &str) -> (String, String) {
    let project = server.request(
        "POST",
        "/identity/v3/projects",
        Some(admin),
        Some(&json!({"project": {"name": name, "domain_id": "default"}})),
    );
    assert_eq!(project.status, 201, "{}", project.text);
    let project_id = project.json()["project"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let user = server.request(
        "POST",
        "/identity/v3/users",
        Some(admin),
        Some(&json!({"user": {"name": name, "domain_id": "default", "password": "pw-123456"}})),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json()["user"]["id"].as_str().expect("id").to_string();
    let roles = server
        .get(&format!("/identity/v3/roles?name={role}"), Some(admin))
        .json();
    let role_id = roles["roles"][0]["id"].as_str().expect("role").to_string();
    let grant = server.request(
        "PUT",
        &format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"),
        Some(admin),
        None,
    );
    assert_eq!(grant.status, 204, "{}", grant.text);
    let token = server.token(name, "pw-123456", Some(name));
    assert_eq!(token.status, 201, "{}", token.text);
    (
        project_id,
        token.header("x-subject-token").expect("token").to_string(),
    )
}

fn image_call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Reply {
    http(
        &server.addr,
        method,
        &format!("/image/v2{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Accept", "application/json".to_string()),
        ],
        body,
    )
}

fn create_image(server: &Server, token: &str, body: Value) -> Reply {
    image_call(server, "POST", "/images", token, Some(&body))
}

fn new_image(server: &Server, token: &str, body: Value) -> String {
    let reply = create_image(server, token, body);
    assert_eq!(reply.status, 201, "create image: {}", reply.text);
    reply.json()["id"].as_str().expect("image id").to_string()
}

fn upload(server: &Server, token: &str, id: &str, data: &[u8]) -> u16 {
    http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", "application/octet-stream".to_string()),
        ],
        data,
    )
    .status
}

/// Sends `total` bytes as a chunked body (no Content-Length), tolerating the
/// server closing early, and returns the status and body of the answer.
fn put_chunked(server: &Server, token: &str, path: &str, total: usize) -> (u16, String) {
    put_body(server, token, path, total, true)
}

/// Sends `total` bytes with a Content-Length, tolerating an early answer.
fn put_sized(server: &Server, token: &str, path: &str, total: usize) -> (u16, String) {
    put_body(server, token, path, total, false)
}

fn put_body(
    server: &Server,
    token: &str,
    path: &str,
    total: usize,
    chunked: bool,
) -> (u16, String) {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "PUT /image/v2{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-Auth-Token: {token}\r\n\
         Accept: application/json\r\nContent-Type: application/octet-stream\r\n{}\r\n",
        server.addr,
        if chunked {
            "Transfer-Encoding: chunked\r\n".to_string()
        } else {
            format!("Content-Length: {total}\r\n")
        }
    );
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![0x5au8; 64 * 1024];
        writer.write_all(head.as_bytes())?;
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            if chunked {
                writer.write_all(format!("{n:x}\r\n").as_bytes())?;
            }
            writer.write_all(&chunk[..n])?;
            if chunked {
                writer.write_all(b"\r\n")?;
            }
            sent += n;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

fn image_status(server: &Server, token: &str, id: &str) -> String {
    let reply = image_call(server, "GET", &format!("/images/{id}"), token, None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["status"].as_str().unwrap_or("").to_string()
}

/// Names of the files in the image store that are not committed images.
fn leftovers(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("images"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".partial") || n.ends_with(".staged"))
                .collect()
        })
        .unwrap_or_default()
}

fn echo_kernel() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("yunhe-secimg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("echo.elf");
    let status = std::process::Command::new(YUNHE)
        .args(["vm", "guest", "echo", "-o"])
        .arg(&path)
        .status()
        .expect("yunhe vm guest echo");
    assert!(status.success());
    let data = std::fs::read(&path).expect("echo guest");
    let _ = std::fs::remove_dir_all(&dir);
    data
}

// ------------------------------------------------------------ finding 3

#[test]
fn a_deleted_image_id_is_never_reused_and_stays_invisible() {
    let server = Server::start();
    let admin = server.admin_token();
    let (_, other) = user_in_new_project(&server, &admin, "mallory", "member");
    let kernel = echo_kernel();
    let id = "4c1d1b52-64a4-4f0e-9a49-6b8f3d3c5a11";
    let created = create_image(
        &server,
        &admin,
        json!({"id": id, "name": "kernel", "visibility": "public",
               "disk_format": "aki", "container_format": "aki"}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(upload(&server, &admin, id, &kernel), 204);
    assert!(server.state_dir.join("images").join(id).exists());
    let tag = image_call(
        &server,
        "PUT",
        &format!("/images/{id}/tags/boot"),
        &admin,
        None,
    );
    assert_eq!(tag.status, 204, "{}", tag.text);

    let delete = image_call(&server, "DELETE", &format!("/images/{id}"), &admin, None);
    assert_eq!(delete.status, 204, "{}", delete.text);
    assert!(
        !server.state_dir.join("images").join(id).exists(),
        "the data file outlived the delete"
    );

    // The id cannot be taken over, by another project or by the admin.
    for (who, token) in [("another project", &other), ("the admin", &admin)] {
        let again = create_image(
            &server,
            token,
            json!({"id": id, "name": "evil", "visibility": "community",
                   "disk_format": "aki", "container_format": "aki"}),
        );
        assert_eq!(
            again.status, 409,
            "{who} re-created a deleted image id: {}",
            again.text
        );
    }
    // Deleted images are invisible everywhere.
    for path in [
        format!("/images/{id}"),
        format!("/images/{id}/members"),
        format!("/images/{id}/file"),
        format!("/images/{id}/tasks"),
    ] {
        let reply = image_call(&server, "GET", &path, &admin, None);
        assert_eq!(reply.status, 404, "GET {path}: {}", reply.text);
    }
    let untag = image_call(
        &server,
        "DELETE",
        &format!("/images/{id}/tags/boot"),
        &admin,
        None,
    );
    assert_eq!(untag.status, 404, "{}", untag.text);
    let again = image_call(&server, "DELETE", &format!("/images/{id}"), &admin, None);
    assert_eq!(again.status, 404, "{}", again.text);
    let put = http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[("X-Auth-Token", admin.clone())],
        b"data",
    );
    assert_eq!(put.status, 404);
    let list = image_call(&server, "GET", "/images?visibility=all", &admin, None);
    assert!(
        !list.text.contains(id),
        "a deleted image is listed: {}",
        list.text
    );
    // Nova's image proxy (below 2.36) does not see it either.
    let proxy = http(
        &server.addr,
        "GET",
        &format!("/compute/v2.1/images/{id}"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("OpenStack-API-Version", "compute 2.1".to_string()),
        ],
        None,
    );
    assert_eq!(proxy.status, 404, "{}", proxy.text);
}

/// POST /servers (microversion 2.73, no networks).
fn create_server(server: &Server, token: &str, image: &str, flavor: &str) -> Reply {
    http(
        &server.addr,
        "POST",
        "/compute/v2.1/servers",
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", "compute 2.73".to_string()),
        ],
        Some(
            &json!({"server": {"name": "kernel-check", "imageRef": image,
                                "flavorRef": flavor, "networks": "none"}}),
        ),
    )
}

fn compute(server: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    http(
        &server.addr,
        method,
        &format!("/compute/v2.1{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", "compute 2.73".to_string()),
        ],
        body,
    )
}

/// A kernel image of `token`'s project with `visibility`.
fn kernel_image(server: &Server, token: &str, visibility: &str, kernel: &[u8]) -> String {
    let id = new_image(
        server,
        token,
        json!({"name": format!("{visibility}-kernel"), "visibility": visibility,
               "disk_format": "aki", "container_format": "aki"}),
    );
    assert_eq!(upload(server, token, &id, kernel), 204);
    id
}

/// A raw disk image naming `kernel_id`.
fn disk_naming(server: &Server, token: &str, kernel_id: &str) -> String {
    let id = new_image(
        server,
        token,
        json!({"name": "disk", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel_id}),
    );
    assert_eq!(upload(server, token, &id, &vec![0u8; 64 * 1024]), 204);
    id
}

#[test]
fn kernel_ids_resolve_only_to_the_projects_own_public_or_accepted_images() {
    let server = Server::start();
    let admin = server.admin_token();
    let (_, alice) = user_in_new_project(&server, &admin, "alice", "member");
    let (bob_project, bob) = user_in_new_project(&server, &admin, "bob", "member");
    let kernel = echo_kernel();

    // A flavor no host can fit: a server that passes the image checks is
    // accepted (202) and then fails scheduling without ever starting a VMM.
    let hypervisors = compute(&server, "GET", "/os-hypervisors/detail", &admin, None);
    assert_eq!(hypervisors.status, 200, "{}", hypervisors.text);
    let host_ram = hypervisors.json()["hypervisors"][0]["memory_mb"]
        .as_i64()
        .expect("memory_mb");
    let flavor = compute(
        &server,
        "POST",
        "/flavors",
        &admin,
        Some(
            &json!({"flavor": {"name": "unschedulable", "id": "unschedulable",
                                "ram": host_ram + 1, "vcpus": 1, "disk": 1, "os-flavor-access:is_public": true}}),
        ),
    );
    assert_eq!(flavor.status, 200, "{}", flavor.text);
    let quota = compute(
        &server,
        "PUT",
        &format!("/os-quota-sets/{bob_project}"),
        &admin,
        Some(&json!({"quota_set": {"ram": -1, "cores": -1, "instances": -1}})),
    );
    assert_eq!(quota.status, 200, "{}", quota.text);

    // Alice's community and private kernels: Bob's server may not boot them.
    let community = kernel_image(&server, &alice, "community", &kernel);
    let private = kernel_image(&server, &alice, "private", &kernel);
    for (what, kernel_id) in [("community", &community), ("private", &private)] {
        let disk = disk_naming(&server, &bob, kernel_id);
        let reply = create_server(&server, &bob, &disk, "unschedulable");
        assert_eq!(
            reply.status, 400,
            "a server booted with another project's {what} kernel: {}",
            reply.text
        );
        assert!(
            reply.text.contains(kernel_id.as_str()),
            "the refusal does not name the kernel {kernel_id}: {}",
            reply.text
        );
    }

    // A kernel shared with Bob counts once Bob accepted it.
    let shared = kernel_image(&server, &alice, "shared", &kernel);
    let member = image_call(
        &server,
        "POST",
        &format!("/images/{shared}/members"),
        &alice,
        Some(&json!({"member": bob_project})),
    );
    assert_eq!(member.status, 200, "{}", member.text);
    let disk = disk_naming(&server, &bob, &shared);
    let pending = create_server(&server, &bob, &disk, "unschedulable");
    assert_eq!(
        pending.status, 400,
        "pending share accepted: {}",
        pending.text
    );
    let accept = image_call(
        &server,
        "PUT",
        &format!("/images/{shared}/members/{bob_project}"),
        &bob,
        Some(&json!({"status": "accepted"})),
    );
    assert_eq!(accept.status, 200, "{}", accept.text);
    let accepted = create_server(&server, &bob, &disk, "unschedulable");
    assert_eq!(
        accepted.status, 202,
        "accepted share refused: {}",
        accepted.text
    );
    fail_and_delete(&server, &bob, &accepted);

    // Bob's own kernel works too.
    let own = kernel_image(&server, &bob, "private", &kernel);
    let own_disk = disk_naming(&server, &bob, &own);
    let mine = create_server(&server, &bob, &own_disk, "unschedulable");
    assert_eq!(mine.status, 202, "own kernel refused: {}", mine.text);
    fail_and_delete(&server, &bob, &mine);
}

/// Waits until an unschedulable server is in ERROR, then deletes it.
fn fail_and_delete(server: &Server, token: &str, reply: &Reply) {
    {
        let id = reply.json()["server"]["id"]
            .as_str()
            .expect("server id")
            .to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let shown = compute(server, "GET", &format!("/servers/{id}"), token, None);
            if shown.status == 200 && shown.json()["server"]["status"] == "ERROR" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server {id} never failed scheduling: {}",
                shown.text
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let delete = compute(server, "DELETE", &format!("/servers/{id}"), token, None);
        assert_eq!(delete.status, 204, "{}", delete.text);
    }
}

// ------------------------------------------------------------ finding 4

#[test]
fn uploads_past_the_size_cap_get_413_and_leave_no_data() {
    let server = Server::start_in_with_args(None, &["--image-size-cap", "1048576"]);
    let admin = server.admin_token();
    let (_, reader) = user_in_new_project(&server, &admin, "rita", "member");
    let id = new_image(
        &server,
        &reader,
        json!({"name": "big", "disk_format": "raw", "container_format": "bare"}),
    );

    // Declared too large: refused before a byte is stored.
    let (status, text) = put_sized(&server, &reader, &format!("/images/{id}/file"), 2 * MIB);
    assert_eq!(status, 413, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON error");
    assert_eq!(body["code"], "413 Request Entity Too Large", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{body}"
    );
    assert_eq!(image_status(&server, &reader, &id), "queued");

    // Undeclared (chunked): cut off at the cap, the partial file removed.
    let (status, text) = put_chunked(&server, &reader, &format!("/images/{id}/file"), 3 * MIB);
    assert_eq!(status, 413, "{text}");
    assert_eq!(image_status(&server, &reader, &id), "queued");
    assert_eq!(leftovers(&server.state_dir), Vec::<String>::new());
    assert!(!server.state_dir.join("images").join(&id).exists());

    // Staging obeys the cap too.
    let staged = new_image(
        &server,
        &reader,
        json!({"name": "staged", "disk_format": "raw", "container_format": "bare"}),
    );
    let (status, text) = put_chunked(
        &server,
        &reader,
        &format!("/images/{staged}/stage"),
        3 * MIB,
    );
    assert_eq!(status, 413, "{text}");
    assert_eq!(image_status(&server, &reader, &staged), "queued");
    assert_eq!(leftovers(&server.state_dir), Vec::<String>::new());

    // At the cap exactly it works.
    assert_eq!(upload(&server, &reader, &id, &vec![1u8; MIB]), 204);
    assert_eq!(image_status(&server, &reader, &id), "active");
}

/// A tmpfs mounted on a fresh directory; unmounted and removed on drop, also
/// when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("yunhe-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let target = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).ok()?;
        let options = std::ffi::CString::new(format!("size={size},mode=0700")).ok()?;
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs ({}); needs root",
                std::io::Error::last_os_error()
            );
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.0.to_string_lossy().as_bytes()) {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn uploads_stop_at_the_free_space_reserve() {
    let Some(tmpfs) = Tmpfs::mount("64m") else {
        return;
    };
    let state = tmpfs.0.join("state");
    let server = Server::start_in_with_args(Some(state.clone()), &["--min-free-space", "40MiB"]);
    let admin = server.admin_token();
    let (_, member) = user_in_new_project(&server, &admin, "fill", "member");
    let id = new_image(
        &server,
        &member,
        json!({"name": "filler", "disk_format": "raw", "container_format": "bare"}),
    );

    // Declared: 32 MiB would leave less than 40 MiB of 64: refused up front.
    let (status, text) = put_sized(&server, &member, &format!("/images/{id}/file"), 32 * MIB);
    assert_eq!(status, 413, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON error");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("storage media is full")),
        "{body}"
    );

    // Undeclared: cut off while streaming, partial data removed.
    let (status, text) = put_chunked(&server, &member, &format!("/images/{id}/file"), 48 * MIB);
    assert_eq!(status, 413, "{text}");
    assert_eq!(image_status(&server, &member, &id), "queued");
    assert_eq!(leftovers(&state), Vec::<String>::new());
    let stat = nix_free(&state);
    assert!(
        stat >= 40 * MIB as u64,
        "the reserve was eaten into: {stat} bytes free"
    );

    // The state file still takes writes, and a small upload still fits.
    let small = new_image(
        &server,
        &member,
        json!({"name": "small", "disk_format": "raw", "container_format": "bare"}),
    );
    assert_eq!(upload(&server, &member, &small, &vec![7u8; 4 * MIB]), 204);
    drop(server);
    drop(tmpfs);
}

/// Bytes available on the filesystem of `path`.
fn nix_free(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statvfs");
    stat.f_bavail * stat.f_frsize
}

fn limit_call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Reply {
    server.request(method, &format!("/identity/v3{path}"), Some(token), body)
}

/// The id of the catalog's image service.
fn image_service_id(server: &Server, admin: &str) -> String {
    let services = limit_call(server, "GET", "/services?type=image", admin, None);
    assert_eq!(services.status, 200, "{}", services.text);
    services.json()["services"][0]["id"]
        .as_str()
        .expect("image service")
        .to_string()
}

#[test]
fn project_limits_cap_image_count_total_size_and_staging() {
    let server = Server::start();
    let admin = server.admin_token();
    let (project, member) = user_in_new_project(&server, &admin, "quota", "member");
    let (_, other) = user_in_new_project(&server, &admin, "free", "member");
    let service = image_service_id(&server, &admin);
    let limits: Vec<Value> = [
        ("image_count_total", 2),
        ("image_size_total", 1),
        ("image_stage_total", 1),
    ]
    .iter()
    .map(|(name, value)| {
        json!({"service_id": service, "project_id": project, "resource_name": name,
               "resource_limit": value})
    })
    .collect();
    let created = limit_call(
        &server,
        "POST",
        "/limits",
        &admin,
        Some(&json!({"limits": limits})),
    );
    assert_eq!(created.status, 201, "{}", created.text);

    let raw = json!({"name": "q", "disk_format": "raw", "container_format": "bare"});
    let first = new_image(&server, &member, raw.clone());
    let second = new_image(&server, &member, raw.clone());
    let third = create_image(&server, &member, raw.clone());
    assert_eq!(third.status, 413, "{}", third.text);
    assert!(
        third.text.contains("image_count_total"),
        "the 413 does not name the resource: {}",
        third.text
    );
    // Other projects keep the registered defaults.
    new_image(&server, &other, raw.clone());

    // 1 MiB in total: the second upload is cut off while it streams.
    assert_eq!(
        upload(&server, &member, &first, &vec![1u8; 768 * 1024]),
        204
    );
    let (status, text) = put_chunked(
        &server,
        &member,
        &format!("/images/{second}/file"),
        768 * 1024,
    );
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("image_size_total"), "{text}");
    assert_eq!(image_status(&server, &member, &second), "queued");
    assert_eq!(leftovers(&server.state_dir), Vec::<String>::new());

    // Deleting an image gives its count back.
    let delete = image_call(
        &server,
        "DELETE",
        &format!("/images/{first}"),
        &member,
        None,
    );
    assert_eq!(delete.status, 204, "{}", delete.text);
    let staged = new_image(&server, &member, raw.clone());

    // 1 MiB of staging: a stage past it is refused, its data removed.
    let (status, text) = put_chunked(
        &server,
        &member,
        &format!("/images/{staged}/stage"),
        1536 * 1024,
    );
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("image_stage_total"), "{text}");
    assert_eq!(image_status(&server, &member, &staged), "queued");
    assert_eq!(leftovers(&server.state_dir), Vec::<String>::new());
}

#[test]
fn registered_limits_and_limits_api_round_trip() {
    let server = Server::start();
    let admin = server.admin_token();
    let (project, member) = user_in_new_project(&server, &admin, "limited", "member");
    let (_, stranger) = user_in_new_project(&server, &admin, "stranger", "member");
    let service = image_service_id(&server, &admin);

    // A fresh cloud has generous image defaults.
    let listed = limit_call(
        &server,
        "GET",
        &format!("/registered_limits?service_id={service}"),
        &member,
        None,
    );
    assert_eq!(listed.status, 200, "{}", listed.text);
    let names: Vec<String> = listed.json()["registered_limits"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["resource_name"].as_str().map(str::to_string))
        .collect();
    for name in [
        "image_count_total",
        "image_count_uploading",
        "image_size_total",
        "image_stage_total",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }

    // Registered limits: admin only to write; validated; no duplicates.
    let body = json!({"registered_limits": [{"service_id": service, "resource_name": "widgets",
                                              "default_limit": 5, "description": "test"}]});
    let denied = limit_call(&server, "POST", "/registered_limits", &member, Some(&body));
    assert_eq!(denied.status, 403, "{}", denied.text);
    let created = limit_call(&server, "POST", "/registered_limits", &admin, Some(&body));
    assert_eq!(created.status, 201, "{}", created.text);
    let registered = created.json()["registered_limits"][0].clone();
    let rid = registered["id"].as_str().expect("id").to_string();
    assert_eq!(registered["default_limit"], 5);
    assert_eq!(registered["region_id"], Value::Null);
    assert!(
        registered["links"]["self"]
            .as_str()
            .is_some_and(|l| l.ends_with(&rid))
    );
    let duplicate = limit_call(&server, "POST", "/registered_limits", &admin, Some(&body));
    assert_eq!(duplicate.status, 409, "{}", duplicate.text);
    for bad in [
        json!({"registered_limits": [{"service_id": service, "resource_name": "x", "default_limit": -2}]}),
        json!({"registered_limits": [{"service_id": "nope", "resource_name": "x", "default_limit": 1}]}),
        json!({"registered_limits": [{"service_id": service, "resource_name": "x", "default_limit": 1, "bogus": 1}]}),
        json!({"registered_limits": []}),
    ] {
        let reply = limit_call(&server, "POST", "/registered_limits", &admin, Some(&bad));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], 400);
    }
    let shown = limit_call(
        &server,
        "GET",
        &format!("/registered_limits/{rid}"),
        &member,
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.text);
    let patched = limit_call(
        &server,
        "PATCH",
        &format!("/registered_limits/{rid}"),
        &admin,
        Some(&json!({"registered_limit": {"default_limit": 7}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["registered_limit"]["default_limit"], 7);

    // Limits: need a registered limit, exactly one of project and domain.
    let limit = json!({"limits": [{"service_id": service, "project_id": project,
                                   "resource_name": "widgets", "resource_limit": 3}]});
    let denied = limit_call(&server, "POST", "/limits", &member, Some(&limit));
    assert_eq!(denied.status, 403, "{}", denied.text);
    let unregistered = limit_call(
        &server,
        "POST",
        "/limits",
        &admin,
        Some(
            &json!({"limits": [{"service_id": service, "project_id": project,
                                 "resource_name": "gadgets", "resource_limit": 3}]}),
        ),
    );
    assert_eq!(unregistered.status, 403, "{}", unregistered.text);
    let neither = limit_call(
        &server,
        "POST",
        "/limits",
        &admin,
        Some(
            &json!({"limits": [{"service_id": service, "resource_name": "widgets",
                                 "resource_limit": 3}]}),
        ),
    );
    assert_eq!(neither.status, 400, "{}", neither.text);
    let created = limit_call(&server, "POST", "/limits", &admin, Some(&limit));
    assert_eq!(created.status, 201, "{}", created.text);
    let lid = created.json()["limits"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(created.json()["limits"][0]["resource_name"], "widgets");
    let duplicate = limit_call(&server, "POST", "/limits", &admin, Some(&limit));
    assert_eq!(duplicate.status, 409, "{}", duplicate.text);

    // A registered limit with limits below it can neither change nor go.
    let in_use = limit_call(
        &server,
        "DELETE",
        &format!("/registered_limits/{rid}"),
        &admin,
        None,
    );
    assert_eq!(in_use.status, 403, "{}", in_use.text);

    // Reading: the project sees its own limit, a stranger does not.
    let own = limit_call(&server, "GET", &format!("/limits/{lid}"), &member, None);
    assert_eq!(own.status, 200, "{}", own.text);
    let theirs = limit_call(&server, "GET", &format!("/limits/{lid}"), &stranger, None);
    assert_eq!(theirs.status, 403, "{}", theirs.text);
    let stranger_list = limit_call(&server, "GET", "/limits", &stranger, None);
    assert_eq!(
        stranger_list.json()["limits"],
        json!([]),
        "{}",
        stranger_list.text
    );
    let member_list = limit_call(
        &server,
        "GET",
        "/limits?resource_name=widgets",
        &member,
        None,
    );
    assert_eq!(
        member_list.json()["limits"].as_array().map(Vec::len),
        Some(1)
    );
    let model = limit_call(&server, "GET", "/limits/model", &member, None);
    assert_eq!(model.json()["model"]["name"], "flat", "{}", model.text);

    let patched = limit_call(
        &server,
        "PATCH",
        &format!("/limits/{lid}"),
        &admin,
        Some(&json!({"limit": {"resource_limit": 0, "description": "none"}})),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["limit"]["resource_limit"], 0);
    let deleted = limit_call(&server, "DELETE", &format!("/limits/{lid}"), &admin, None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = limit_call(&server, "GET", &format!("/limits/{lid}"), &admin, None);
    assert_eq!(gone.status, 404, "{}", gone.text);
    let deleted = limit_call(
        &server,
        "DELETE",
        &format!("/registered_limits/{rid}"),
        &admin,
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = limit_call(
        &server,
        "GET",
        &format!("/registered_limits/{rid}"),
        &admin,
        None,
    );
    assert_eq!(gone.status, 404, "{}", gone.text);
}
