//! Glance v2 against the real `yunhe serve` on an ephemeral port.

mod support;

use std::io::Write;
use std::time::Duration;

use md5::Md5;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use support::{RawReply, Server, http_bytes, member_of_new_project};

fn create(server: &Server, token: &str, body: Value) -> Value {
    let reply = server.request("POST", "/image/v2/images", Some(token), Some(&body));
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()
}

fn upload(server: &Server, token: &str, id: &str, data: &[u8]) -> RawReply {
    http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        data,
    )
}

fn patch(server: &Server, token: &str, id: &str, media: &str, ops: Value) -> RawReply {
    http_bytes(
        &server.addr,
        "PATCH",
        &format!("/image/v2/images/{id}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Content-Type", media.to_string()),
            ("Accept", "application/json".into()),
        ],
        ops.to_string().as_bytes(),
    )
}

fn body_json(reply: &RawReply) -> Value {
    serde_json::from_slice(&reply.body).expect("JSON body")
}

#[test]
fn upload_hashes_and_download_streams_back_with_ranges() {
    let server = Server::start();
    let admin = server.admin_token();
    let image = create(
        &server,
        &admin,
        json!({"name": "disk", "disk_format": "raw", "container_format": "bare"}),
    );
    assert_eq!(image["status"], "queued");
    assert_eq!(image["visibility"], "shared");
    let id = image["id"].as_str().expect("id").to_string();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let reply = upload(&server, &admin, &id, &data);
    assert_eq!(reply.status, 204);
    assert!(reply.header("x-openstack-request-id").is_some());

    let shown = server
        .get(&format!("/image/v2/images/{id}"), Some(&admin))
        .json();
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["size"], data.len());
    assert_eq!(shown["virtual_size"], data.len());
    assert_eq!(shown["checksum"], hex::encode(Md5::digest(&data)));
    assert_eq!(shown["os_hash_algo"], "sha512");
    assert_eq!(shown["os_hash_value"], hex::encode(Sha512::digest(&data)));
    assert!(server.state_dir.join("images").join(&id).exists());

    let auth = [("X-Auth-Token", admin.clone())];
    let full = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{id}/file"),
        &auth,
        b"",
    );
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    assert_eq!(full.header("content-md5"), shown["checksum"].as_str());
    let ranged = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("Range", "bytes=100-199".into()),
        ],
        b"",
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, data[100..200].to_vec());
    assert_eq!(ranged.header("content-range"), Some("bytes 100-199/300000"));
    let bad = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("Range", "bytes=400000-".into()),
        ],
        b"",
    );
    assert_eq!(bad.status, 416);

    // A second upload to an active image conflicts.
    assert_eq!(upload(&server, &admin, &id, b"again").status, 409);
    // Deactivated: no download; reactivated: download again.
    let deactivate = format!("/image/v2/images/{id}/actions/deactivate");
    assert_eq!(
        server
            .request("POST", &deactivate, Some(&admin), None)
            .status,
        204
    );
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{id}"), Some(&admin))
            .json()["status"],
        "deactivated"
    );
    let reactivate = format!("/image/v2/images/{id}/actions/reactivate");
    assert_eq!(
        server
            .request("POST", &reactivate, Some(&admin), None)
            .status,
        204
    );
    let again = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{id}/file"),
        &auth,
        b"",
    );
    assert_eq!(again.body, data);
}

#[test]
fn formats_are_checked_and_qcow2_backing_files_refused() {
    let server = Server::start();
    let admin = server.admin_token();
    let qcow2 = |backing: u64| {
        let mut h = vec![0u8; 1024];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(5u64 << 30).to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    };
    let good = create(
        &server,
        &admin,
        json!({"disk_format": "qcow2", "container_format": "bare"}),
    );
    let id = good["id"].as_str().expect("id");
    assert_eq!(upload(&server, &admin, id, &qcow2(0)).status, 204);
    let shown = server
        .get(&format!("/image/v2/images/{id}"), Some(&admin))
        .json();
    assert_eq!(shown["virtual_size"], 5u64 << 30);
    assert_eq!(shown["size"], 1024);

    let evil = create(
        &server,
        &admin,
        json!({"disk_format": "qcow2", "container_format": "bare"}),
    );
    let id = evil["id"].as_str().expect("id");
    assert_eq!(upload(&server, &admin, id, &qcow2(512)).status, 400);
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{id}"), Some(&admin))
            .json()["status"],
        "queued"
    );
    // A qcow2 file declared raw is refused too (a hypervisor might probe it).
    let raw = create(
        &server,
        &admin,
        json!({"disk_format": "raw", "container_format": "bare"}),
    );
    let id = raw["id"].as_str().expect("id");
    assert_eq!(upload(&server, &admin, id, &qcow2(0)).status, 400);
    // aki must be a kernel.
    let aki = create(
        &server,
        &admin,
        json!({"disk_format": "aki", "container_format": "aki"}),
    );
    let id = aki["id"].as_str().expect("id");
    assert_eq!(upload(&server, &admin, id, b"just text").status, 400);
    let mut elf = b"\x7fELF".to_vec();
    elf.resize(4096, 0);
    assert_eq!(upload(&server, &admin, id, &elf).status, 204);
    let leftovers: Vec<_> = std::fs::read_dir(server.state_dir.join("images"))
        .expect("images dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn list_filters_sorts_and_pages_with_next_links() {
    let server = Server::start();
    let admin = server.admin_token();
    let mut ids = Vec::new();
    for i in 0..5 {
        let image = create(
            &server,
            &admin,
            json!({"name": format!("img-{i}"), "disk_format": if i % 2 == 0 {"raw"} else {"qcow2"},
                   "container_format": "bare", "tags": [format!("t{i}"), "all"], "min_ram": i}),
        );
        ids.push(image["id"].as_str().expect("id").to_string());
    }
    let names = |path: &str| -> Vec<String> {
        let reply = server.get(path, Some(&admin));
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        reply.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names("/image/v2/images?name=img-3"), vec!["img-3"]);
    assert_eq!(
        names("/image/v2/images?disk_format=qcow2&sort=name:asc"),
        vec!["img-1", "img-3"]
    );
    assert_eq!(names("/image/v2/images?tag=t2&tag=all"), vec!["img-2"]);
    assert_eq!(
        names("/image/v2/images?sort_key=name&sort_dir=desc"),
        vec!["img-4", "img-3", "img-2", "img-1", "img-0"]
    );
    assert_eq!(names("/image/v2/images?status=active").len(), 0);
    assert_eq!(
        names("/image/v2/images?name=in:img-0,img-4&sort=name:asc"),
        vec!["img-0", "img-4"]
    );
    assert_eq!(
        server
            .get("/image/v2/images?sort_key=bogus", Some(&admin))
            .status,
        400
    );
    assert_eq!(
        server
            .get("/image/v2/images?marker=nope", Some(&admin))
            .status,
        400
    );

    // Pagination: follow `next` until it disappears.
    let mut seen = Vec::new();
    let mut path = "/image/v2/images?limit=2&sort=name:asc".to_string();
    loop {
        let page = server.get(&path, Some(&admin)).json();
        for image in page["images"].as_array().expect("images") {
            seen.push(image["name"].as_str().unwrap_or("").to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/image{next}"),
            None => break,
        }
    }
    assert_eq!(seen, vec!["img-0", "img-1", "img-2", "img-3", "img-4"]);
}

#[test]
fn patch_tags_protection_and_errors() {
    let server = Server::start();
    let admin = server.admin_token();
    let image = create(
        &server,
        &admin,
        json!({"name": "p", "disk_format": "raw", "container_format": "bare"}),
    );
    let id = image["id"].as_str().expect("id").to_string();
    let v21 = "application/openstack-images-v2.1-json-patch";
    let reply = patch(
        &server,
        &admin,
        &id,
        v21,
        json!([
            {"op": "replace", "path": "/name", "value": "q"},
            {"op": "add", "path": "/kernel_id", "value": "k-1"},
            {"op": "add", "path": "/os_command_line", "value": "console=ttyS0"},
            {"op": "replace", "path": "/min_disk", "value": 2},
            {"op": "add", "path": "/tags", "value": ["a", "b", "a"]},
            {"op": "replace", "path": "/protected", "value": true},
        ]),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = body_json(&reply);
    assert_eq!(body["name"], "q");
    assert_eq!(body["kernel_id"], "k-1");
    assert_eq!(body["min_disk"], 2);
    assert_eq!(body["tags"], json!(["a", "b"]));
    // The older v2.0 patch form.
    let reply = patch(
        &server,
        &admin,
        &id,
        "application/openstack-images-v2.0-json-patch",
        json!([{"remove": "/os_command_line"}]),
    );
    assert_eq!(reply.status, 200);
    assert!(body_json(&reply).get("os_command_line").is_none());
    assert_eq!(
        patch(
            &server,
            &admin,
            &id,
            v21,
            json!([{"op": "replace", "path": "/status", "value": "active"}])
        )
        .status,
        403
    );
    assert_eq!(
        patch(
            &server,
            &admin,
            &id,
            v21,
            json!([{"op": "add", "path": "/os_glance_x", "value": "1"}])
        )
        .status,
        403
    );
    assert_eq!(
        patch(&server, &admin, &id, "application/json", json!([])).status,
        415
    );

    let tag = format!("/image/v2/images/{id}/tags/c");
    assert_eq!(server.request("PUT", &tag, Some(&admin), None).status, 204);
    assert_eq!(
        server.request("DELETE", &tag, Some(&admin), None).status,
        204
    );
    assert_eq!(
        server.request("DELETE", &tag, Some(&admin), None).status,
        404
    );

    // Protected: delete refused (Glance's error format, request id kept).
    let path = format!("/image/v2/images/{id}");
    let refused = server.request("DELETE", &path, Some(&admin), None);
    assert_eq!(refused.status, 403);
    assert!(refused.header("x-openstack-request-id").is_some());
    assert!(refused.text.contains("403 Forbidden"));
    let reply = patch(
        &server,
        &admin,
        &id,
        v21,
        json!([{"op": "replace", "path": "/protected", "value": false}]),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        server.request("DELETE", &path, Some(&admin), None).status,
        204
    );
    let gone = http_bytes(
        &server.addr,
        "GET",
        &path,
        &[
            ("X-Auth-Token", admin.clone()),
            ("Accept", "application/json".into()),
        ],
        b"",
    );
    assert_eq!(gone.status, 404);
    assert_eq!(body_json(&gone)["code"], "404 Not Found");
    for schema in ["image", "images", "member", "members"] {
        let reply = server.get(&format!("/image/v2/schemas/{schema}"), Some(&admin));
        assert_eq!(reply.json()["name"], schema);
    }
    assert_eq!(
        server.get("/image/v2/info/import", Some(&admin)).json()["import-methods"]["value"],
        json!(["glance-direct", "glance-download"])
    );
    assert_eq!(
        server.get("/image/v2/info/stores", Some(&admin)).status,
        200
    );
}

#[test]
fn visibility_and_members() {
    let server = Server::start();
    let admin = server.admin_token();
    let (alice_project, alice) = member_of_new_project(&server, &admin, "alice");
    let (bob_project, bob) = member_of_new_project(&server, &admin, "bob");
    let private = create(
        &server,
        &admin,
        json!({"name": "adm", "visibility": "private"}),
    );
    let private_id = private["id"].as_str().expect("id");
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{private_id}"), Some(&alice))
            .status,
        404
    );
    // Non-admins cannot publicize.
    let reply = server.request(
        "POST",
        "/image/v2/images",
        Some(&alice),
        Some(&json!({"name": "pub", "visibility": "public"})),
    );
    assert_eq!(reply.status, 403);
    let public = create(
        &server,
        &admin,
        json!({"name": "pub", "visibility": "public"}),
    );
    let public_id = public["id"].as_str().expect("id");
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{public_id}"), Some(&bob))
            .status,
        200
    );
    // ...but cannot change it.
    let reply = patch(
        &server,
        &bob,
        public_id,
        "application/openstack-images-v2.1-json-patch",
        json!([{"op": "replace", "path": "/name", "value": "mine"}]),
    );
    assert_eq!(reply.status, 403);

    let shared = create(
        &server,
        &alice,
        json!({"name": "alice-img", "visibility": "shared"}),
    );
    assert_eq!(shared["owner"], alice_project.as_str());
    let id = shared["id"].as_str().expect("id");
    let listed = |token: &str, query: &str| -> Vec<String> {
        server
            .get(&format!("/image/v2/images{query}"), Some(token))
            .json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| i["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(!listed(&bob, "").contains(&id.to_string()));
    let members = format!("/image/v2/images/{id}/members");
    let reply = server.request(
        "POST",
        &members,
        Some(&alice),
        Some(&json!({"member": bob_project})),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["status"], "pending");
    assert_eq!(
        server
            .request(
                "POST",
                &members,
                Some(&alice),
                Some(&json!({"member": bob_project}))
            )
            .status,
        409
    );
    // Pending: bob can show it but it is not in his default list.
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{id}"), Some(&bob))
            .status,
        200
    );
    assert!(!listed(&bob, "").contains(&id.to_string()));
    assert!(listed(&bob, "?member_status=pending").contains(&id.to_string()));
    let mine = format!("{members}/{bob_project}");
    // The owner cannot accept for bob; bob can.
    assert_eq!(
        server
            .request(
                "PUT",
                &mine,
                Some(&alice),
                Some(&json!({"status": "accepted"}))
            )
            .status,
        403
    );
    assert_eq!(
        server
            .request("PUT", &mine, Some(&bob), Some(&json!({"status": "bogus"})))
            .status,
        400
    );
    let reply = server.request(
        "PUT",
        &mine,
        Some(&bob),
        Some(&json!({"status": "accepted"})),
    );
    assert_eq!(reply.status, 200);
    assert!(listed(&bob, "").contains(&id.to_string()));
    assert_eq!(
        server.get(&members, Some(&alice)).json()["members"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(server.get(&mine, Some(&bob)).json()["status"], "accepted");
    assert_eq!(
        server.request("DELETE", &mine, Some(&alice), None).status,
        204
    );
    assert_eq!(
        server
            .get(&format!("/image/v2/images/{id}"), Some(&bob))
            .status,
        404
    );
    // Hidden images leave the default list.
    let hidden = create(&server, &alice, json!({"name": "h", "os_hidden": true}));
    let hidden_id = hidden["id"].as_str().expect("id").to_string();
    assert!(!listed(&alice, "").contains(&hidden_id));
    assert!(listed(&alice, "?os_hidden=true").contains(&hidden_id));
    // Admin sees everything.
    assert!(listed(&admin, "?limit=100").contains(&id.to_string()));
}

#[test]
fn kill_nine_mid_upload_requeues_the_image_and_loses_nothing_committed() {
    let server = Server::start();
    let admin = server.admin_token();
    let done = create(
        &server,
        &admin,
        json!({"name": "done", "disk_format": "raw", "container_format": "bare"}),
    );
    let done_id = done["id"].as_str().expect("id").to_string();
    assert_eq!(
        upload(&server, &admin, &done_id, b"committed data").status,
        204
    );
    let partial = create(
        &server,
        &admin,
        json!({"name": "partial", "disk_format": "raw", "container_format": "bare"}),
    );
    let id = partial["id"].as_str().expect("id").to_string();

    // Start an upload that announces 64 MiB and send only 1 MiB of it.
    let mut stream = std::net::TcpStream::connect(&server.addr).expect("connect");
    let head = format!(
        "PUT /image/v2/images/{id}/file HTTP/1.1\r\nHost: {}\r\nX-Auth-Token: {admin}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        64 << 20
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(&vec![7u8; 1 << 20]).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = server
            .get(&format!("/image/v2/images/{id}"), Some(&admin))
            .json()["status"]
            .clone();
        if status == "saving" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = server.kill9();
    drop(stream);
    let server = Server::start_in(dir, false);
    let admin = server.admin_token();
    let shown = server
        .get(&format!("/image/v2/images/{id}"), Some(&admin))
        .json();
    assert_eq!(shown["status"], "queued");
    assert!(shown["checksum"].is_null());
    let files: Vec<String> = std::fs::read_dir(server.state_dir.join("images"))
        .expect("images dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, vec![done_id.clone()]);
    let auth = [("X-Auth-Token", admin.clone())];
    let data = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{done_id}/file"),
        &auth,
        b"",
    );
    assert_eq!(data.body, b"committed data");
    // The requeued image takes data again.
    assert_eq!(upload(&server, &admin, &id, b"second try").status, 204);
}

fn wait_status(server: &Server, token: &str, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let image = server
            .get(&format!("/image/v2/images/{id}"), Some(token))
            .json();
        if image["status"] == want {
            return image;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never reached {want}: {image}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn glance_direct_and_glance_download_imports_run_as_tasks() {
    let server = Server::start();
    let admin = server.admin_token();
    let src = create(
        &server,
        &admin,
        json!({"name": "src", "disk_format": "raw", "container_format": "bare"}),
    );
    let src_id = src["id"].as_str().expect("id").to_string();
    let staged = http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{src_id}/stage"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        b"staged bytes",
    );
    assert_eq!(staged.status, 204);
    wait_status(&server, &admin, &src_id, "uploading");
    let import = |id: &str, method: Value| {
        server.request(
            "POST",
            &format!("/image/v2/images/{id}/import"),
            Some(&admin),
            Some(&json!({"method": method})),
        )
    };
    assert_eq!(
        import(&src_id, json!({"name": "glance-direct"})).status,
        202
    );
    let active = wait_status(&server, &admin, &src_id, "active");
    assert_eq!(
        active["checksum"],
        hex::encode(Md5::digest(b"staged bytes"))
    );
    let reply = patch(
        &server,
        &admin,
        &src_id,
        "application/openstack-images-v2.1-json-patch",
        json!([{"op": "add", "path": "/hw_cpu_cores", "value": "2"}, {"op": "add", "path": "/speed", "value": "fast"}]),
    );
    assert_eq!(reply.status, 200);

    let dst = create(
        &server,
        &admin,
        json!({"name": "dst", "disk_format": "iso", "container_format": "ovf"}),
    );
    let dst_id = dst["id"].as_str().expect("id").to_string();
    assert_eq!(
        import(
            &dst_id,
            json!({"name": "glance-download", "glance_image_id": "foo"})
        )
        .status,
        400
    );
    let reply = import(
        &dst_id,
        json!({"name": "glance-download", "glance_image_id": src_id,
        "glance_region": "RegionOne", "glance_service_interface": "public"}),
    );
    assert_eq!(reply.status, 202);
    let copied = wait_status(&server, &admin, &dst_id, "active");
    assert_eq!(copied["disk_format"], "raw");
    assert_eq!(copied["hw_cpu_cores"], "2");
    assert!(copied.get("speed").is_none());
    assert_eq!(copied["checksum"], active["checksum"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = server
            .get(&format!("/image/v2/images/{dst_id}/tasks"), Some(&admin))
            .json();
        if tasks["tasks"][0]["status"] == "success" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task never succeeded: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A bad region fails the task and leaves the image queued.
    let other = create(&server, &admin, json!({"name": "other"}));
    let other_id = other["id"].as_str().expect("id").to_string();
    let reply = import(
        &other_id,
        json!({"name": "glance-download", "glance_image_id": src_id,
        "glance_region": "Mars", "glance_service_interface": "public"}),
    );
    assert_eq!(reply.status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = server
            .get(&format!("/image/v2/images/{other_id}/tasks"), Some(&admin))
            .json();
        if tasks["tasks"][0]["status"] == "failure" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task never failed: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_status(&server, &admin, &other_id, "queued");
}

/// Waits until `GET /v2/cache` lists `id` as cached; returns the listing.
fn wait_cached(server: &Server, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = server.get("/image/v2/cache", Some(token)).json();
        let cached = state["cached_images"]
            .as_array()
            .is_some_and(|list| list.iter().any(|e| e["image_id"] == id));
        if cached {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "image {id} never cached: {state}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn image_cache_copies_counts_hits_and_survives_kill_nine() {
    // A cache on another filesystem (tmpfs) than the state directory, so
    // images are copied and checked, not hard-linked.
    let cache_dir = std::path::Path::new("/dev/shm")
        .join(format!("yunhe-image-cache-test-{}", std::process::id()));
    let cache_arg = cache_dir.to_string_lossy().to_string();
    let server = Server::start_with_args(&["--image-cache-dir", &cache_arg]);
    let admin = server.admin_token();
    let mut ids = Vec::new();
    for (name, data) in [("a", &b"first image data"[..]), ("b", &b"second image"[..])] {
        let image = create(
            &server,
            &admin,
            json!({"name": name, "disk_format": "raw", "container_format": "bare"}),
        );
        let id = image["id"].as_str().expect("id").to_string();
        assert_eq!(upload(&server, &admin, &id, data).status, 204);
        ids.push(id);
    }
    let queue = |server: &Server, id: &str| {
        server
            .request("PUT", &format!("/image/v2/cache/{id}"), Some(&admin), None)
            .status
    };
    assert_eq!(queue(&server, &ids[0]), 202);
    wait_cached(&server, &admin, &ids[0]);
    let copy = cache_dir.join(&ids[0]);
    assert_eq!(
        std::fs::read(&copy).expect("the cached copy"),
        b"first image data"
    );
    let auth = [("X-Auth-Token", admin.clone())];
    let data = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{}/file", ids[0]),
        &auth,
        b"",
    );
    assert_eq!(data.body, b"first image data");
    let state = server.get("/image/v2/cache", Some(&admin)).json();
    assert_eq!(state["cached_images"][0]["hits"], 1, "{state}");

    // Queue b and kill the server at once: whether or not the copy was
    // made, the next start must end with b cached. A stray file in the
    // cache goes at start.
    assert_eq!(queue(&server, &ids[1]), 202);
    let dir = server.kill9();
    std::fs::write(cache_dir.join("stray"), b"x").expect("stray file");
    let server = Server::start_in_with_args(Some(dir), &["--image-cache-dir", &cache_arg]);
    let admin = server.admin_token();
    let state = wait_cached(&server, &admin, &ids[1]);
    assert_eq!(state["cached_images"].as_array().map(Vec::len), Some(2));
    assert!(!cache_dir.join("stray").exists(), "stray file kept");

    // A copy removed behind the server's back: clean drops its entry.
    std::fs::remove_file(cache_dir.join(&ids[0])).expect("remove a copy");
    let clean = server.request("POST", "/image/v2/cache/clean", Some(&admin), None);
    assert_eq!(clean.status, 200);
    let state = server.get("/image/v2/cache", Some(&admin)).json();
    let cached: Vec<&Value> = state["cached_images"]
        .as_array()
        .map(|l| l.iter().map(|e| &e["image_id"]).collect())
        .unwrap_or_default();
    assert_eq!(cached, vec![&json!(ids[1])]);

    // Deleting the image takes it out of the cache.
    let deleted = server.request(
        "DELETE",
        &format!("/image/v2/images/{}", ids[1]),
        Some(&admin),
        None,
    );
    assert_eq!(deleted.status, 204);
    let state = server.get("/image/v2/cache", Some(&admin)).json();
    assert_eq!(state["cached_images"], json!([]));
    assert!(!cache_dir.join(&ids[1]).exists());
    drop(server);
    let _ = std::fs::remove_dir_all(&cache_dir);
}
