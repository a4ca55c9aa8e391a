//! Cinder's upload-to-image (`os-volume_upload_image`) against the real
//! `yunhe serve`: a volume with known bytes becomes an active Glance image
//! with the same bytes and Glance's digests, the volume goes back to
//! `available`; the same as qcow2 (a valid image of the volume's data only,
//! which makes a volume with the same bytes again); Glance's
//! `image_size_cap`; Cinder's refusals; and a kill -9 mid-upload settled at
//! the next start.

mod support;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, http_bytes, member_of_new_project};

const GIB: u64 = 1 << 30;

fn req(server: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    server.request(method, &format!("/volume/v3{path}"), Some(token), body)
}

/// A volume action at microversion `mv`.
fn action(server: &Server, token: &str, id: &str, mv: &str, body: &Value) -> Reply {
    let headers = vec![
        ("X-Auth-Token", token.to_string()),
        ("OpenStack-API-Version", format!("volume {mv}")),
    ];
    http(
        &server.addr,
        "POST",
        &format!("/volume/v3/volumes/{id}/action"),
        &headers,
        Some(body),
    )
}

fn upload(arg: Value) -> Value {
    json!({ "os-volume_upload_image": arg })
}

fn create_volume(server: &Server, token: &str, name: &str) -> String {
    let reply = req(
        server,
        "POST",
        "/volumes",
        token,
        Some(&json!({"volume": {"size": 1, "name": name}})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_volume(server, token, &id, "available");
    id
}

fn wait_volume(server: &Server, token: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = req(server, "GET", &format!("/volumes/{id}"), token, None);
        let body = reply.json();
        if body["volume"]["status"] == status {
            return body["volume"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "volume {id} never became {status}: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_image_active(server: &Server, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reply = server.get(&format!("/image/v2/images/{id}"), Some(token));
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        if body["status"] == "active" {
            return body;
        }
        assert!(
            ["queued", "saving"].contains(&body["status"].as_str().unwrap_or_default()),
            "image {id}: {}",
            reply.text
        );
        assert!(
            Instant::now() < deadline,
            "image {id} never became active: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn volume_file(dir: &Path, id: &str) -> PathBuf {
    dir.join("volumes").join(format!("volume-{id}"))
}

/// Bytes `[start, end]` of an image's data (a Range download).
fn image_range(server: &Server, token: &str, id: &str, start: u64, end: u64) -> Vec<u8> {
    let reply = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("Range", format!("bytes={start}-{end}")),
        ],
        b"",
    );
    assert_eq!(
        reply.status,
        206,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.body
}

/// MD5 and SHA-512 of a file, as Glance's `checksum` and `os_hash_value`.
fn digests(path: &Path) -> (String, String) {
    use md5::Digest as _;
    let mut file = std::fs::File::open(path).expect("open");
    let (mut md5, mut sha) = (md5::Md5::new(), sha2::Sha512::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    (hex::encode(md5.finalize()), hex::encode(sha.finalize()))
}

#[test]
fn upload_copies_the_bytes_and_the_image_metadata() {
    let server = Server::start();
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, "source");
    // Known bytes at the start, in the middle and at the very end.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(volume_file(&server.state_dir, &vol))
        .expect("volume file");
    let head: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    file.write_all_at(&head, 0).expect("write");
    file.write_all_at(b"middle of the volume", GIB / 2)
        .expect("write");
    file.write_all_at(b"END!", GIB - 4).expect("write");
    drop(file);
    // Image metadata as a volume made from an image has it.
    let meta = req(
        &server,
        "POST",
        &format!("/volumes/{vol}/action"),
        &admin,
        Some(&json!({"os-set_image_metadata": {"metadata": {
            "image_name": "the source image", "min_disk": "1", "hw_disk_bus": "virtio",
            "os_distro": "tiny", "img_signature": "c2ln", "os_glance_importer": "x"}}})),
    );
    assert_eq!(meta.status, 200, "{}", meta.text);

    let reply = action(
        &server,
        &admin,
        &vol,
        "3.1",
        &upload(json!({"image_name": "from-volume", "disk_format": "raw",
                      "container_format": "bare", "visibility": "private", "protected": false,
                      "force": false})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let body = reply.json()["os-volume_upload_image"].clone();
    assert_eq!(body["id"], vol.as_str());
    assert_eq!(body["status"], "uploading");
    assert_eq!(body["size"], 1);
    assert_eq!(body["image_name"], "from-volume");
    assert_eq!(body["disk_format"], "raw");
    assert_eq!(body["container_format"], "bare");
    assert_eq!(body["visibility"], "private");
    assert_eq!(body["protected"], false);
    assert!(body["volume_type"]["name"].is_string(), "{body}");
    assert!(body.get("display_description").is_some(), "{body}");
    assert!(body["updated_at"].is_string(), "{body}");
    let image = body["image_id"].as_str().expect("image id").to_string();
    // The volume is busy while the copy runs (or already back).
    let status =
        req(&server, "GET", &format!("/volumes/{vol}"), &admin, None).json()["volume"]["status"]
            .clone();
    assert!(status == "uploading" || status == "available", "{status}");

    let shown = wait_image_active(&server, &admin, &image);
    wait_volume(&server, &admin, &vol, "available");
    assert_eq!(shown["name"], "from-volume");
    assert_eq!(shown["size"], GIB);
    assert_eq!(shown["disk_format"], "raw");
    assert_eq!(shown["container_format"], "bare");
    assert_eq!(shown["visibility"], "private");
    assert_eq!(shown["os_hash_algo"], "sha512");
    // Custom properties are copied; Glance's core ones and reserved
    // namespaces are not.
    assert_eq!(shown["hw_disk_bus"], "virtio", "{shown}");
    assert_eq!(shown["os_distro"], "tiny", "{shown}");
    for dropped in ["image_name", "img_signature", "os_glance_importer"] {
        assert!(shown.get(dropped).is_none(), "{dropped}: {shown}");
    }
    assert_eq!(shown["min_disk"], 0);
    // The bytes: the digests of the whole volume, and ranges read back.
    let (md5, sha512) = digests(&volume_file(&server.state_dir, &vol));
    assert_eq!(shown["checksum"], md5.as_str());
    assert_eq!(shown["os_hash_value"], sha512.as_str());
    assert_eq!(image_range(&server, &admin, &image, 0, 8191), head);
    assert_eq!(
        image_range(&server, &admin, &image, GIB / 2, GIB / 2 + 19),
        b"middle of the volume"
    );
    assert_eq!(
        image_range(&server, &admin, &image, GIB - 4, GIB - 1),
        b"END!"
    );
    assert_eq!(
        image_range(&server, &admin, &image, 8192, 8192 + 4095),
        vec![0u8; 4096]
    );
    // No staged copy is left beside the image's data.
    let leftovers: Vec<String> = std::fs::read_dir(server.state_dir.join("images"))
        .expect("images dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The image boots a new volume with the same bytes.
    let reply = req(
        &server,
        "POST",
        "/volumes",
        &admin,
        Some(&json!({"volume": {"size": 1, "imageRef": image}})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let copy = reply.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_volume(&server, &admin, &copy, "available");
    let f = std::fs::File::open(volume_file(&server.state_dir, &copy)).expect("copy");
    let mut end = [0u8; 4];
    f.read_exact_at(&mut end, GIB - 4).expect("read");
    assert_eq!(&end, b"END!");
}

/// Starts an upload of `vol` as `disk_format`; returns the image's id.
fn start_upload(server: &Server, token: &str, vol: &str, name: &str, format: &str) -> String {
    let reply = action(
        server,
        token,
        vol,
        "3.1",
        &upload(json!({"image_name": name, "disk_format": format})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let body = reply.json()["os-volume_upload_image"].clone();
    assert_eq!(body["disk_format"], format);
    body["image_id"].as_str().expect("image id").to_string()
}

/// Whether `qemu-img` is here (Debian: qemu-utils, installed by scripts/install-deps).
fn qemu_img() -> bool {
    let ok = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("qemu-img is missing: its checks are skipped");
    }
    ok
}

#[test]
fn a_qcow2_upload_holds_the_data_and_makes_the_volume_again() {
    let server = Server::start();
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, "source");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(volume_file(&server.state_dir, &vol))
        .expect("volume file");
    let head: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    file.write_all_at(&head, 0).expect("write");
    file.write_all_at(b"middle of the volume", GIB / 2)
        .expect("write");
    file.write_all_at(b"END!", GIB - 4).expect("write");
    drop(file);

    let image = start_upload(&server, &admin, &vol, "as-qcow2", "qcow2");
    let shown = wait_image_active(&server, &admin, &image);
    wait_volume(&server, &admin, &vol, "available");
    assert_eq!(shown["disk_format"], "qcow2");
    assert_eq!(shown["virtual_size"], GIB, "{shown}");
    // Only the data clusters are stored: header, L1, 4 + 1 + 1 data clusters,
    // 2 L2 tables, refcount table and block, 64 KiB each.
    let size = shown["size"].as_u64().expect("size");
    assert_eq!(size, 12 << 16, "{shown}");

    // The stored bytes are what Glance's digests say, and a valid qcow2 image.
    let reply = http_bytes(
        &server.addr,
        "GET",
        &format!("/image/v2/images/{image}/file"),
        &[("X-Auth-Token", admin.clone())],
        b"",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len() as u64, size);
    assert_eq!(&reply.body[..4], b"QFI\xfb");
    let downloaded = server.state_dir.join("downloaded.qcow2");
    std::fs::write(&downloaded, &reply.body).expect("write");
    let (md5, sha512) = digests(&downloaded);
    assert_eq!(shown["checksum"], md5.as_str());
    assert_eq!(shown["os_hash_value"], sha512.as_str());
    if qemu_img() {
        let check = std::process::Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&downloaded)
            .output()
            .expect("qemu-img check");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let cmp = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(&downloaded)
            .arg(volume_file(&server.state_dir, &vol))
            .output()
            .expect("qemu-img compare");
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }

    // A volume made from the image (our qcow2 reader converts it) has the
    // source volume's bytes.
    let reply = req(
        &server,
        "POST",
        "/volumes",
        &admin,
        Some(&json!({"volume": {"size": 1, "imageRef": image}})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let copy = reply.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let made = wait_volume(&server, &admin, &copy, "available");
    assert_eq!(made["bootable"], "true", "{made}");
    assert_eq!(
        digests(&volume_file(&server.state_dir, &copy)),
        digests(&volume_file(&server.state_dir, &vol))
    );
}

#[test]
fn the_image_size_cap_bounds_an_upload() {
    // 1 MiB: a 1 GiB raw image is over it, a qcow2 image of a little data is not.
    let server = Server::start_in_with_args(None, &["--image-size-cap", "1048576"]);
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, "capped");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(volume_file(&server.state_dir, &vol))
        .expect("volume file");
    file.write_all_at(&[7u8; 4096], 0).expect("write");
    drop(file);
    let gone = |image: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = server.get(&format!("/image/v2/images/{image}"), Some(&admin));
            if reply.status == 404 {
                return;
            }
            assert!(Instant::now() < deadline, "{}", reply.text);
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let raw = start_upload(&server, &admin, &vol, "too-big", "raw");
    gone(&raw);
    wait_volume(&server, &admin, &vol, "available");
    let small = start_upload(&server, &admin, &vol, "small", "qcow2");
    let shown = wait_image_active(&server, &admin, &small);
    assert!(shown["size"].as_u64().expect("size") <= 1 << 20, "{shown}");
    wait_volume(&server, &admin, &vol, "available");
    // 2 MiB of data: the qcow2 image is over the cap too.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(volume_file(&server.state_dir, &vol))
        .expect("volume file");
    file.write_all_at(&vec![9u8; 2 << 20], 1 << 20)
        .expect("write");
    drop(file);
    let big = start_upload(&server, &admin, &vol, "big", "qcow2");
    gone(&big);
    wait_volume(&server, &admin, &vol, "available");
    let leftovers: Vec<String> = std::fs::read_dir(server.state_dir.join("images"))
        .expect("images dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn refusals_are_cinders() {
    let server = Server::start();
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, "v");
    let name = json!({"image_name": "img"});

    // Not available: a 400 and nothing changes.
    let reset = req(
        &server,
        "POST",
        &format!("/volumes/{vol}/action"),
        &admin,
        Some(&json!({"os-reset_status": {"status": "error"}})),
    );
    assert_eq!(reset.status, 202, "{}", reset.text);
    let reply = action(&server, &admin, &vol, "3.0", &upload(name.clone()));
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.text.contains("status must be available"),
        "{}",
        reply.text
    );
    wait_volume(&server, &admin, &vol, "error");
    let reset = req(
        &server,
        "POST",
        &format!("/volumes/{vol}/action"),
        &admin,
        Some(&json!({"os-reset_status": {"status": "available"}})),
    );
    assert_eq!(reset.status, 202, "{}", reset.text);

    // Bad formats, members the microversion does not know, no name.
    for (mv, arg, says) in [
        (
            "3.0",
            json!({"image_name": "i", "disk_format": "iso"}),
            "disk_format",
        ),
        (
            "3.0",
            json!({"image_name": "i", "disk_format": "vmdk"}),
            "raw and qcow2 images only",
        ),
        (
            "3.0",
            json!({"image_name": "i", "container_format": "compressed"}),
            "compression",
        ),
        (
            "3.0",
            json!({"image_name": "i", "visibility": "private"}),
            "visibility",
        ),
        (
            "3.1",
            json!({"image_name": "i", "visibility": "world"}),
            "visibility",
        ),
        ("3.0", json!({"force": true}), "image_name"),
        (
            "3.0",
            json!({"image_name": "i", "force": "perhaps"}),
            "force",
        ),
    ] {
        let reply = action(&server, &admin, &vol, mv, &upload(arg.clone()));
        assert_eq!(reply.status, 400, "{arg}: {}", reply.text);
        assert!(reply.text.contains(says), "{arg}: {}", reply.text);
    }
    wait_volume(&server, &admin, &vol, "available");
    // No image was made by any of them.
    let images = server.get("/image/v2/images", Some(&admin)).json();
    assert_eq!(
        images["images"].as_array().map(Vec::len),
        Some(0),
        "{images}"
    );

    // A member: public needs upload_public (admins); another project's
    // volume is not found; a private upload of its own is accepted.
    let (project, member) = member_of_new_project(&server, &admin, "uploader");
    let mine = create_volume(&server, &member, "mine");
    let reply = action(
        &server,
        &member,
        &mine,
        "3.1",
        &upload(json!({"image_name": "pub", "visibility": "public"})),
    );
    assert_eq!(reply.status, 403, "{}", reply.text);
    let reply = action(&server, &member, &vol, "3.1", &upload(name.clone()));
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = action(
        &server,
        &member,
        &mine,
        "3.1",
        &upload(json!({"image_name": "shared-one", "visibility": "shared"})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let image = reply.json()["os-volume_upload_image"]["image_id"]
        .as_str()
        .expect("image")
        .to_string();
    let shown = wait_image_active(&server, &member, &image);
    assert_eq!(shown["visibility"], "shared");
    assert_eq!(shown["owner"], project.as_str());
    wait_volume(&server, &member, &mine, "available");
    // An admin may upload public.
    let reply = action(
        &server,
        &admin,
        &vol,
        "3.1",
        &upload(json!({"image_name": "pub", "visibility": "public", "protected": true})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let image = reply.json()["os-volume_upload_image"]["image_id"]
        .as_str()
        .expect("image")
        .to_string();
    let shown = wait_image_active(&server, &admin, &image);
    assert_eq!(shown["visibility"], "public");
    assert_eq!(shown["protected"], true);
    wait_volume(&server, &admin, &vol, "available");
}

#[test]
fn a_kill_nine_mid_upload_leaves_the_volume_usable() {
    let server = Server::start();
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, "interrupted");
    let dir = server.kill9();
    // What a crash mid-copy leaves: the volume `uploading`, a staged copy.
    let db = rusqlite::Connection::open(dir.join("yunhe.db")).expect("db");
    db.execute(
        "UPDATE volume_volumes SET status = 'uploading', doc = json_set(doc, '$.status', 'uploading') WHERE id = ?1",
        [&vol],
    )
    .expect("update");
    drop(db);
    let staged = dir.join("images").join("0123.upload.partial");
    std::fs::create_dir_all(dir.join("images")).expect("images dir");
    std::fs::write(&staged, b"half").expect("staged");

    let server = Server::start_in(dir.clone(), false);
    let admin = server.admin_token();
    let shown = req(&server, "GET", &format!("/volumes/{vol}"), &admin, None).json();
    assert_eq!(shown["volume"]["status"], "available", "{shown}");
    assert!(!staged.exists());
    assert!(volume_file(&dir, &vol).exists());
    // And it uploads again.
    let reply = action(
        &server,
        &admin,
        &vol,
        "3.0",
        &upload(json!({"image_name": "again"})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let image = reply.json()["os-volume_upload_image"]["image_id"]
        .as_str()
        .expect("image")
        .to_string();
    wait_image_active(&server, &admin, &image);
    wait_volume(&server, &admin, &vol, "available");
}
