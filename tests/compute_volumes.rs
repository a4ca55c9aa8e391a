//! Nova's `os-volume_attachments` against the real `yunhe serve` (dataplane
//! off) booting the echo guest on /dev/kvm: a Cinder volume attached to a
//! running server is `in-use` and hot-added (the VMM's disk count, admin
//! diagnostics 2.48, goes up by one); list and show; Cinder refuses to delete
//! it (400); stop/start keeps the disk; a detach of a stopped server makes the
//! volume `available` again. The echo guest answers the ACPI eject as
//! Linux's acpiphp does, so a detach of a running echo server takes the disk
//! out of the VMM (a guest that never ejects is the fake driver's case in
//! compute's unit tests, and the probe guest's in tests/vmm.rs). Deleting
//! the server gives the volume back. Block device mappings
//! (boot from a volume made from an image, an existing volume, blank and
//! snapshot sources, createImage of a volume-backed server and booting the
//! image it makes, delete_on_termination) boot real servers too. An online
//! extend (Cinder 3.42) of an attached volume reaches the running VMM. Skipped
//! without /dev/kvm.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, VmmStateDir, echo_image, http, kvm_usable};

fn nova(
    server: &Server,
    token: &str,
    mv: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    http(
        &server.addr,
        method,
        &format!("/compute/v2.1{path}"),
        &[
            ("X-Auth-Token", token.to_string()),
            ("OpenStack-API-Version", format!("compute {mv}")),
        ],
        body,
    )
}

fn cinder(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(method, &format!("/volume/v3{path}"), Some(token), body)
}

fn volume_status(server: &Server, token: &str, id: &str) -> String {
    let reply = cinder(server, token, "GET", &format!("/volumes/{id}"), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["volume"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_volume(server: &Server, token: &str, id: &str, status: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = volume_status(server, token, id);
        if now == status {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "volume {id} not {status} within {limit:?} (is {now})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_server(server: &Server, token: &str, id: &str, status: &str) {
    let start = Instant::now();
    loop {
        let reply = nova(server, token, "2.1", "GET", &format!("/servers/{id}"), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        if body["server"]["status"] == status && body["server"]["OS-EXT-STS:task_state"].is_null() {
            return;
        }
        assert_ne!(body["server"]["status"], "ERROR", "{}", reply.text);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server {id} not {status}: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num_disks(server: &Server, token: &str, id: &str) -> u64 {
    let reply = nova(
        server,
        token,
        "2.48",
        "GET",
        &format!("/servers/{id}/diagnostics"),
        None,
    );
    assert_eq!(reply.status, 200, "diagnostics: {}", reply.text);
    reply.json()["num_disks"].as_u64().expect("num_disks")
}

fn attachments(server: &Server, token: &str, id: &str) -> Vec<Value> {
    let reply = nova(
        server,
        token,
        "2.79",
        "GET",
        &format!("/servers/{id}/os-volume_attachments"),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["volumeAttachments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn attach_hot_adds_a_volume_and_detach_gives_it_back() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("va", "volumes");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);
    let created = nova(
        &server,
        &admin,
        "2.73",
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "42", "networks": "none"}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_server(&server, &admin, &id, "ACTIVE");

    let made = cinder(
        &server,
        &admin,
        "POST",
        "/volumes",
        Some(&json!({"volume": {"size": 1, "name": "data"}})),
    );
    assert_eq!(made.status, 202, "{}", made.text);
    let vol = made.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_volume(&server, &admin, &vol, "available", Duration::from_secs(20));

    // Refusals: a body Nova's schema refuses, an unknown volume.
    let bad = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": vol, "tag": "t"}})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    let unknown = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c"}})),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    // Attach to the running server: in-use, one more disk in the VMM.
    let before = num_disks(&server, &admin, &id);
    let attached = nova(
        &server,
        &admin,
        "2.79",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": vol, "tag": "data"}})),
    );
    assert_eq!(attached.status, 200, "{}", attached.text);
    let view = attached.json()["volumeAttachment"].clone();
    assert_eq!(view["volumeId"], json!(vol));
    assert_eq!(view["serverId"], json!(id));
    assert_eq!(view["tag"], json!("data"));
    assert_eq!(view["delete_on_termination"], json!(false));
    assert!(
        view["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("/dev/vd")),
        "{view}"
    );
    assert_eq!(volume_status(&server, &admin, &vol), "in-use");
    assert_eq!(num_disks(&server, &admin, &id), before + 1);
    assert_eq!(attachments(&server, &admin, &id).len(), 1);
    let shown = nova(
        &server,
        &admin,
        "2.1",
        "GET",
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        None,
    );
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json()["volumeAttachment"]["id"], json!(vol));
    // Cinder keeps an attached volume.
    let delete = cinder(&server, &admin, "DELETE", &format!("/volumes/{vol}"), None);
    assert_eq!(delete.status, 400, "{}", delete.text);

    // Stop and start: the disk is still there.
    let stop = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"os-stop": null})),
    );
    assert_eq!(stop.status, 202, "{}", stop.text);
    wait_server(&server, &admin, &id, "SHUTOFF");
    let start = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"os-start": null})),
    );
    assert_eq!(start.status, 202, "{}", start.text);
    wait_server(&server, &admin, &id, "ACTIVE");
    assert_eq!(num_disks(&server, &admin, &id), before + 1);

    // Detach from the running server: the echo guest ejects the slot (as Linux's
    // acpiphp), the disk leaves the VMM and the volume is available again.
    let detach = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        None,
    );
    assert_eq!(detach.status, 202, "{}", detach.text);
    wait_volume(&server, &admin, &vol, "available", Duration::from_secs(30));
    assert!(attachments(&server, &admin, &id).is_empty());
    assert_eq!(num_disks(&server, &admin, &id), before);
    // Attached again while running, for the stopped server's detach below.
    let attached = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": vol}})),
    );
    assert_eq!(attached.status, 200, "{}", attached.text);
    assert_eq!(num_disks(&server, &admin, &id), before + 1);

    // Stopped: the detach only changes the records.
    let stop = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"os-stop": null})),
    );
    assert_eq!(stop.status, 202, "{}", stop.text);
    wait_server(&server, &admin, &id, "SHUTOFF");
    let detach = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        None,
    );
    assert_eq!(detach.status, 202, "{}", detach.text);
    wait_volume(&server, &admin, &vol, "available", Duration::from_secs(20));
    assert!(attachments(&server, &admin, &id).is_empty());
    let again = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        None,
    );
    assert_eq!(again.status, 404, "{}", again.text);

    // Attached to a stopped server, then the server deleted: the volume is available again.
    let attached = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": vol}})),
    );
    assert_eq!(attached.status, 200, "{}", attached.text);
    assert_eq!(volume_status(&server, &admin, &vol), "in-use");
    let gone = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}"),
        None,
    );
    assert_eq!(gone.status, 204, "{}", gone.text);
    wait_volume(&server, &admin, &vol, "available", Duration::from_secs(30));
}

fn create_server(server: &Server, token: &str, mv: &str, body: Value) -> String {
    let created = nova(server, token, mv, "POST", "/servers", Some(&body));
    assert_eq!(created.status, 202, "{}", created.text);
    created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn make_volume(server: &Server, token: &str, body: Value) -> String {
    let made = cinder(
        server,
        token,
        "POST",
        "/volumes",
        Some(&json!({ "volume": body })),
    );
    assert_eq!(made.status, 202, "{}", made.text);
    let id = made.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_volume(server, token, &id, "available", Duration::from_secs(30));
    id
}

fn wait_volume_gone(server: &Server, token: &str, id: &str) {
    let start = Instant::now();
    loop {
        let reply = cinder(server, token, "GET", &format!("/volumes/{id}"), None);
        if reply.status == 404 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "volume {id} not deleted: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delete_server(server: &Server, token: &str, id: &str) {
    let gone = nova(
        server,
        token,
        "2.1",
        "DELETE",
        &format!("/servers/{id}"),
        None,
    );
    assert_eq!(gone.status, 204, "{}", gone.text);
    let start = Instant::now();
    while nova(server, token, "2.1", "GET", &format!("/servers/{id}"), None).status != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server {id} not deleted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The disks of server `id`'s VMM spec, as paths.
fn spec_disks(state: &std::path::Path, id: &str) -> Vec<String> {
    let spec =
        std::fs::read(state.join("instances").join(id).join("spec.json")).expect("spec.json");
    let spec: Value = serde_json::from_slice(&spec).expect("spec");
    spec["vm"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn boot_from_volume_with_image_blank_and_snapshot_mappings() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("bfv", "volumes");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);

    // Refusals with Nova's texts, before anything is made.
    for (bdm, text) in [
        (
            json!([{"source_type": "image", "destination_type": "volume", "uuid": image, "boot_index": 0}]),
            "Images with destination_type 'volume' need to have a non-zero size specified",
        ),
        (
            json!([{"source_type": "volume", "destination_type": "volume", "uuid": "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c", "boot_index": 0}]),
            "Block Device Mapping is Invalid: failed to get volume 5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c.",
        ),
        (
            json!([{"source_type": "blank", "destination_type": "volume", "volume_size": 1, "boot_index": 1}]),
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.",
        ),
    ] {
        let reply = nova(
            &server,
            &admin,
            "2.79",
            "POST",
            "/servers",
            Some(
                &json!({"server": {"name": "bad", "flavorRef": "42", "networks": "none",
                                    "block_device_mapping_v2": bdm}}),
            ),
        );
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(
            reply.json()["badRequest"]["message"],
            json!(text),
            "{}",
            reply.text
        );
    }

    // Boot from a volume made from the image (deleted with the server), with
    // a blank data volume that stays.
    let id = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "bfv", "flavorRef": "42", "networks": "none",
        "block_device_mapping_v2": [
            {"source_type": "image", "destination_type": "volume", "uuid": image,
             "boot_index": 0, "volume_size": 1, "delete_on_termination": true},
            {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
             "boot_index": -1, "delete_on_termination": false, "tag": "data"}
        ]}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let shown = nova(
        &server,
        &admin,
        "2.79",
        "GET",
        &format!("/servers/{id}"),
        None,
    );
    let body = shown.json();
    assert_eq!(body["server"]["image"], json!(""), "{}", shown.text);
    let attached = attachments(&server, &admin, &id);
    assert_eq!(attached.len(), 2, "{attached:?}");
    assert_eq!(attached[0]["device"], json!("/dev/vda"));
    assert_eq!(attached[0]["delete_on_termination"], json!(true));
    assert_eq!(attached[1]["delete_on_termination"], json!(false));
    let root = attached[0]["volumeId"].as_str().expect("root").to_string();
    let data = attached[1]["volumeId"].as_str().expect("data").to_string();
    assert_eq!(
        body["server"]["os-extended-volumes:volumes_attached"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{}",
        shown.text
    );
    for v in [&root, &data] {
        assert_eq!(volume_status(&server, &admin, v), "in-use");
    }
    let root_volume = cinder(&server, &admin, "GET", &format!("/volumes/{root}"), None).json();
    assert_eq!(root_volume["volume"]["bootable"], json!("true"));
    // The root disk is the volume's own file: first in the VMM's spec, no copy in the instance directory.
    let disks = spec_disks(&state.0, &id);
    assert!(disks[0].ends_with(&format!("volume-{root}")), "{disks:?}");
    // The data volume after the config drive (serve's tests force one).
    let data_disk = disks.last().cloned().unwrap_or_default();
    assert!(data_disk.ends_with(&format!("volume-{data}")), "{disks:?}");
    assert!(!state.0.join("instances").join(&id).join("disk").exists());
    assert_eq!(num_disks(&server, &admin, &id), disks.len() as u64);
    // The root volume does not leave a running server.
    let detach = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}/os-volume_attachments/{root}"),
        None,
    );
    assert_eq!(detach.status, 400, "{}", detach.text);

    // createImage: a Cinder snapshot of the root volume and an image pointing at it.
    let snap = nova(
        &server,
        &admin,
        "2.45",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"createImage": {"name": "bfv-snap"}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let snap_image = snap.json()["image_id"]
        .as_str()
        .expect("image_id")
        .to_string();
    let start = Instant::now();
    let image_body = loop {
        let got = server.request(
            "GET",
            &format!("/image/v2/images/{snap_image}"),
            Some(&admin),
            None,
        );
        assert_eq!(got.status, 200, "{}", got.text);
        let body = got.json();
        if body["status"] == "active" {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", got.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(image_body["bdm_v2"], json!("True"), "{image_body}");
    assert_eq!(image_body["root_device_name"], json!("/dev/vda"));
    let mapping: Value =
        serde_json::from_str(image_body["block_device_mapping"].as_str().expect("bdm"))
            .expect("bdm json");
    let snapshot_id = mapping[0]["snapshot_id"]
        .as_str()
        .expect("snapshot")
        .to_string();
    let start = Instant::now();
    while cinder(
        &server,
        &admin,
        "GET",
        &format!("/snapshots/{snapshot_id}"),
        None,
    )
    .json()["snapshot"]["status"]
        != "available"
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "snapshot not available"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_server(&server, &admin, &id, "ACTIVE");

    // Booting that image makes a volume from the snapshot as the root disk.
    let from_snap = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "from-snap", "imageRef": snap_image, "flavorRef": "42", "networks": "none"}}),
    );
    wait_server(&server, &admin, &from_snap, "ACTIVE");
    let attached = attachments(&server, &admin, &from_snap);
    assert_eq!(attached.len(), 1, "{attached:?}");
    assert_eq!(attached[0]["device"], json!("/dev/vda"));
    let snap_root = attached[0]["volumeId"].as_str().expect("root").to_string();
    let made = cinder(
        &server,
        &admin,
        "GET",
        &format!("/volumes/{snap_root}"),
        None,
    )
    .json();
    assert_eq!(made["volume"]["snapshot_id"], json!(snapshot_id), "{made}");

    // Stop and start keep the root volume.
    for (action, status) in [("os-stop", "SHUTOFF"), ("os-start", "ACTIVE")] {
        let reply = nova(
            &server,
            &admin,
            "2.1",
            "POST",
            &format!("/servers/{id}/action"),
            Some(&json!({ action: null })),
        );
        assert_eq!(reply.status, 202, "{}", reply.text);
        wait_server(&server, &admin, &id, status);
    }
    assert_eq!(spec_disks(&state.0, &id)[0], disks[0]);

    // Delete: the data volume is available again.
    // The root volume has createImage's snapshot, so Cinder keeps it (as with Nova: the
    // delete on termination fails and the volume stays, available).
    delete_server(&server, &admin, &id);
    wait_volume(&server, &admin, &root, "available", Duration::from_secs(30));
    wait_volume(&server, &admin, &data, "available", Duration::from_secs(30));
    // The image's mapping keeps the root's delete_on_termination (true).
    delete_server(&server, &admin, &from_snap);
    wait_volume_gone(&server, &admin, &snap_root);
}

#[test]
fn boot_from_an_existing_volume_and_snapshot_data_disks() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("bfv2", "volumes");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);
    // A bootable volume made by Cinder from the image, and a snapshot of a blank one.
    let bootable = make_volume(&server, &admin, json!({"size": 1, "imageRef": image}));
    let blank = make_volume(&server, &admin, json!({"size": 1}));
    let snap = cinder(
        &server,
        &admin,
        "POST",
        "/snapshots",
        Some(&json!({"snapshot": {"volume_id": blank}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let snapshot = snap.json()["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    while cinder(
        &server,
        &admin,
        "GET",
        &format!("/snapshots/{snapshot}"),
        None,
    )
    .json()["snapshot"]["status"]
        != "available"
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "snapshot not available"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "from-volume", "flavorRef": "42", "networks": "none",
        "block_device_mapping_v2": [
            {"source_type": "volume", "destination_type": "volume", "uuid": bootable,
             "boot_index": 0, "delete_on_termination": false},
            {"source_type": "snapshot", "destination_type": "volume", "uuid": snapshot,
             "boot_index": -1, "delete_on_termination": true, "device_name": "/dev/vdc"}
        ]}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let attached = attachments(&server, &admin, &id);
    assert_eq!(attached.len(), 2, "{attached:?}");
    assert_eq!(attached[0]["volumeId"], json!(bootable));
    assert_eq!(attached[1]["device"], json!("/dev/vdc"));
    let from_snapshot = attached[1]["volumeId"].as_str().expect("id").to_string();
    let disks = spec_disks(&state.0, &id);
    assert!(
        disks[0].ends_with(&format!("volume-{bootable}")),
        "{disks:?}"
    );
    assert_eq!(num_disks(&server, &admin, &id), disks.len() as u64);
    // A volume in use cannot be mapped again.
    let again = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "twice", "flavorRef": "42", "networks": "none",
            "block_device_mapping_v2": [{"source_type": "volume", "destination_type": "volume",
                                          "uuid": bootable, "boot_index": 0}]}}),
        ),
    );
    assert_eq!(again.status, 400, "{}", again.text);
    // Rebuild with the image the volume came from: the volume stays the root disk.
    let rebuild = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"rebuild": {"imageRef": image}})),
    );
    assert_eq!(rebuild.status, 202, "same image: {}", rebuild.text);
    wait_server(&server, &admin, &id, "ACTIVE");
    assert!(!state.0.join("instances").join(&id).join("disk").exists());
    // Delete: the existing volume is available again, the snapshot's volume goes.
    delete_server(&server, &admin, &id);
    wait_volume(
        &server,
        &admin,
        &bootable,
        "available",
        Duration::from_secs(30),
    );
    wait_volume_gone(&server, &admin, &from_snapshot);
}

/// One command on server `id`'s VMM control socket (src/compute/virt.rs's
/// sockets directory for the state dir).
fn vmm_command(state: &std::path::Path, id: &str, cmd: &str) -> Value {
    use sha2::Digest;
    use std::io::{BufRead, Write};
    let real = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    let digest = sha2::Sha256::digest(real.to_string_lossy().as_bytes());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let base = if uid == 0 {
        std::path::PathBuf::from("/run/yunhe")
    } else {
        std::env::temp_dir().join(format!("yunhe-{uid}"))
    };
    let path = base
        .join(hex::encode(&digest[..6]))
        .join(format!("{id}.sock"));
    let mut stream = std::os::unix::net::UnixStream::connect(&path).expect("control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .expect("reply");
    serde_json::from_str(&line).expect("JSON reply")
}

/// The capacity the VMM gives the disk named `device`, in bytes.
fn vmm_disk_capacity(state: &std::path::Path, id: &str, device: &str) -> Option<u64> {
    let stats = vmm_command(state, id, "stats");
    stats["stats"]["devices"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == device)?["capacity"]
        .as_u64()
}

/// Cinder 3.42's online extend: an `in-use` volume grows (`extending`, then
/// `in-use` again), Nova hears `volume-extended` in process and the server's
/// VMM gives the disk the new size (its `stats`), recorded as the instance
/// action `extend_volume`. Below 3.42 an attached volume is refused (400).
#[test]
fn extend_of_an_attached_volume_reaches_the_running_vm() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("vx", "extend");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);
    let id = create_server(
        &server,
        &admin,
        "2.73",
        json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "42", "networks": "none"}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let vol = make_volume(&server, &admin, json!({"size": 1, "name": "grow"}));
    let attached = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        &format!("/servers/{id}/os-volume_attachments"),
        Some(&json!({"volumeAttachment": {"volumeId": vol}})),
    );
    assert_eq!(attached.status, 200, "{}", attached.text);
    assert_eq!(volume_status(&server, &admin, &vol), "in-use");
    let device = format!("disk{}", vol.replace('-', ""));
    let device: String = device.chars().take(32).collect();
    assert_eq!(
        vmm_disk_capacity(&state.0, &id, &device),
        Some(1 << 30),
        "the attached disk's capacity"
    );

    let extend = |mv: &str, size: u64| {
        http(
            &server.addr,
            "POST",
            &format!("/volume/v3/volumes/{vol}/action"),
            &[
                ("X-Auth-Token", admin.clone()),
                ("OpenStack-API-Version", format!("volume {mv}")),
            ],
            Some(&json!({"os-extend": {"new_size": size}})),
        )
    };
    // Before 3.42 Cinder extends only available volumes.
    let refused = extend("3.41", 2);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(volume_status(&server, &admin, &vol), "in-use");

    let grown = extend("3.42", 2);
    assert_eq!(grown.status, 202, "{}", grown.text);
    wait_volume(&server, &admin, &vol, "in-use", Duration::from_secs(20));
    let shown = cinder(&server, &admin, "GET", &format!("/volumes/{vol}"), None);
    assert_eq!(shown.json()["volume"]["size"], json!(2));
    let start = Instant::now();
    while vmm_disk_capacity(&state.0, &id, &device) != Some(2 << 30) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the VMM never took the new size: {}",
            vmm_command(&state.0, &id, "stats")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The instance action says it was done.
    let start = Instant::now();
    loop {
        let actions = nova(
            &server,
            &admin,
            "2.1",
            "GET",
            &format!("/servers/{id}/os-instance-actions"),
            None,
        );
        assert_eq!(actions.status, 200, "{}", actions.text);
        let body = actions.json();
        let extend = body["instanceActions"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["action"] == "extend_volume").cloned());
        if let Some(a) = extend
            && a["message"].is_null()
        {
            let rid = a["request_id"].as_str().expect("request id").to_string();
            let shown = nova(
                &server,
                &admin,
                "2.51",
                "GET",
                &format!("/servers/{id}/os-instance-actions/{rid}"),
                None,
            );
            let events = shown.json()["instanceAction"]["events"].clone();
            if events[0]["result"] == "Success" {
                assert_eq!(events[0]["event"], "compute_extend_volume");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no extend_volume action: {}",
            actions.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same event through os-server-external-events (as a Cinder of
    // another host would send it) is handled too.
    let events = nova(
        &server,
        &admin,
        "2.51",
        "POST",
        "/os-server-external-events",
        Some(&json!({"events": [{"name": "volume-extended", "server_uuid": id, "tag": vol}]})),
    );
    assert_eq!(events.status, 200, "{}", events.text);
    assert_eq!(events.json()["events"][0]["code"], json!(200));
    delete_server(&server, &admin, &id);
}

/// The capacities of every device of server `id`'s VMM, in slot order.
fn vmm_capacities(state: &std::path::Path, id: &str) -> Vec<u64> {
    let stats = vmm_command(state, id, "stats");
    stats["stats"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d["capacity"].as_u64())
        .collect()
}

/// Swap and ephemeral disks (`blank → local` mappings and the flavor's
/// `swap` and `OS-FLV-EXT-DATA:ephemeral`): Nova's refusals, sparse files in
/// the instance directory after the root disk (ephemerals, then swap with a
/// Linux swap signature, then the config drive), of the sizes asked for,
/// which the VMM gives the guest. Then a volume-backed server rebuilt at
/// 2.93: its root volume is reimaged from another image (its file holds
/// the new image's bytes, its image metadata names it) and the server runs
/// again; below 2.93 another image is refused as Nova does.
#[test]
fn swap_and_ephemeral_disks_and_a_volume_backed_rebuild_at_2_93() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("lcl", "local");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);
    let nano = nova(&server, &admin, "2.1", "GET", "/flavors/42", None).json();
    let ram = nano["flavor"]["ram"].as_i64().expect("ram");
    let made = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        "/flavors",
        Some(
            &json!({"flavor": {"name": "local", "id": "local", "ram": ram, "vcpus": 1,
                                "disk": 1, "OS-FLV-EXT-DATA:ephemeral": 2, "swap": 32}}),
        ),
    );
    assert_eq!(made.status, 200, "{}", made.text);

    let root = json!({"source_type": "image", "destination_type": "local", "uuid": image,
                      "boot_index": 0});
    let swap = |size: i64| {
        json!({"source_type": "blank", "destination_type": "local", "guest_format": "swap",
               "volume_size": size, "boot_index": -1})
    };
    let eph = |size: i64| {
        json!({"source_type": "blank", "destination_type": "local", "volume_size": size,
               "boot_index": -1})
    };
    for (bdm, text) in [
        (
            json!([root, swap(64)]),
            "Swap drive requested is larger than instance type allows.",
        ),
        (
            json!([root, eph(2), eph(1)]),
            "Ephemeral disks requested are larger than the instance type allows. If no size is given in one block device mapping, flavor ephemeral size will be used.",
        ),
        (
            json!([root, swap(8), swap(8)]),
            "Block Device Mapping is Invalid: More than one swap drive requested.",
        ),
        (
            json!([root, eph(1), eph(1), swap(8)]),
            "Block Device Mapping is Invalid: You specified more local devices than the limit allows",
        ),
    ] {
        let reply = nova(
            &server,
            &admin,
            "2.79",
            "POST",
            "/servers",
            Some(
                &json!({"server": {"name": "bad", "flavorRef": "local", "networks": "none",
                                    "imageRef": image, "block_device_mapping_v2": bdm}}),
            ),
        );
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(
            reply.json()["badRequest"]["message"],
            json!(text),
            "{}",
            reply.text
        );
    }

    // A 1 GiB ephemeral disk and a 16 MiB swap disk, as asked (with the image's root disk,
    // the three local disks Nova allows).
    let id = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "local", "flavorRef": "local", "networks": "none",
                          "imageRef": image,
                          "block_device_mapping_v2": [root, swap(16), eph(1)]}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let dir = state.0.join("instances").join(&id);
    let names: Vec<String> = spec_disks(&state.0, &id)
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        ["disk", "disk.eph0", "disk.swap", "config.iso"],
        "{names:?}"
    );
    let len = |name: &str| std::fs::metadata(dir.join(name)).expect(name).len();
    assert_eq!(len("disk.eph0"), 1 << 30);
    assert_eq!(len("disk.swap"), 16 << 20);
    let swap_file = std::fs::read(dir.join("disk.swap")).expect("swap");
    assert_eq!(&swap_file[4086..4096], b"SWAPSPACE2");
    assert_eq!(
        u32::from_le_bytes(swap_file[1028..1032].try_into().expect("4 bytes")),
        (16 << 20) / 4096 - 1,
        "last page"
    );
    // Sparse: nothing written to the ephemeral disks.
    {
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(dir.join("disk.eph0"))
            .expect("eph0")
            .blocks();
        assert!(blocks < 64, "{blocks} blocks");
    }
    let capacities = vmm_capacities(&state.0, &id);
    assert_eq!(&capacities[1..3], [1 << 30, 16 << 20], "{capacities:?}");
    // Kept over stop and start.
    for action in ["os-stop", "os-start"] {
        let reply = nova(
            &server,
            &admin,
            "2.1",
            "POST",
            &format!("/servers/{id}/action"),
            Some(&json!({ action: null })),
        );
        assert_eq!(reply.status, 202, "{}", reply.text);
        wait_server(
            &server,
            &admin,
            &id,
            if action == "os-stop" {
                "SHUTOFF"
            } else {
                "ACTIVE"
            },
        );
    }
    assert_eq!(&vmm_capacities(&state.0, &id)[1..3], [1 << 30, 16 << 20]);
    delete_server(&server, &admin, &id);
    assert!(!dir.exists(), "the instance directory goes with the server");

    // No mapping: the flavor's sizes (2 GiB ephemeral, 32 MiB swap).
    let id = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "flavor", "flavorRef": "local", "networks": "none",
                          "imageRef": image}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let dir = state.0.join("instances").join(&id);
    assert_eq!(
        std::fs::metadata(dir.join("disk.eph0"))
            .expect("eph0")
            .len(),
        2 << 30
    );
    assert_eq!(
        std::fs::metadata(dir.join("disk.swap"))
            .expect("swap")
            .len(),
        32 << 20
    );
    assert_eq!(&vmm_capacities(&state.0, &id)[1..3], [2 << 30, 32 << 20]);
    delete_server(&server, &admin, &id);

    // A volume-backed server rebuilt with another image at 2.93.
    let kernel = server
        .request(
            "GET",
            &format!("/image/v2/images/{image}"),
            Some(&admin),
            None,
        )
        .json()["kernel_id"]
        .as_str()
        .expect("kernel_id")
        .to_string();
    let mut data = vec![0u8; 1 << 20];
    data[..8].copy_from_slice(b"REIMAGED");
    let other = support::upload_image(
        &server,
        &admin,
        json!({"name": "echo-disk-2", "disk_format": "raw", "container_format": "bare",
               "kernel_id": kernel, "visibility": "public"}),
        &data,
    );
    let id = create_server(
        &server,
        &admin,
        "2.79",
        json!({"server": {"name": "bfv", "flavorRef": "42", "networks": "none",
        "block_device_mapping_v2": [
            {"source_type": "image", "destination_type": "volume", "uuid": image,
             "boot_index": 0, "volume_size": 1, "delete_on_termination": true}]}}),
    );
    wait_server(&server, &admin, &id, "ACTIVE");
    let attached = attachments(&server, &admin, &id);
    let root_id = attached[0]["volumeId"].as_str().expect("root").to_string();
    let root_file = spec_disks(&state.0, &id)[0].clone();
    assert!(
        root_file.ends_with(&format!("volume-{root_id}")),
        "{root_file}"
    );
    let rebuild = |mv: &str| {
        nova(
            &server,
            &admin,
            mv,
            "POST",
            &format!("/servers/{id}/action"),
            Some(&json!({"rebuild": {"imageRef": other}})),
        )
    };
    let refused = rebuild("2.92");
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(
        refused.json()["badRequest"]["message"],
        json!("Unable to rebuild with a different image for a volume-backed server."),
    );
    let reply = rebuild("2.93");
    assert_eq!(reply.status, 202, "{}", reply.text);
    wait_server(&server, &admin, &id, "ACTIVE");
    let bytes = std::fs::read(&root_file).expect("root volume");
    assert_eq!(&bytes[..8], b"REIMAGED");
    assert_eq!(bytes.len(), 1 << 30, "the volume keeps its size");
    let volume = cinder(&server, &admin, "GET", &format!("/volumes/{root_id}"), None).json();
    assert_eq!(volume["volume"]["status"], json!("in-use"));
    assert_eq!(
        volume["volume"]["volume_image_metadata"]["image_id"],
        json!(other)
    );
    // The same through Cinder's os-reimage (3.68) on an available volume.
    let vol = make_volume(&server, &admin, json!({"size": 1, "imageRef": image}));
    let reimage = |mv: &str| {
        http(
            &server.addr,
            "POST",
            &format!("/volume/v3/volumes/{vol}/action"),
            &[
                ("X-Auth-Token", admin.clone()),
                ("OpenStack-API-Version", format!("volume {mv}")),
            ],
            Some(&json!({"os-reimage": {"image_id": other}})),
        )
    };
    assert_eq!(reimage("3.67").status, 400);
    let reply = reimage("3.68");
    assert_eq!(reply.status, 202, "{}", reply.text);
    wait_volume(&server, &admin, &vol, "available", Duration::from_secs(30));
    let shown = cinder(&server, &admin, "GET", &format!("/volumes/{vol}"), None).json();
    assert_eq!(
        shown["volume"]["volume_image_metadata"]["image_id"],
        json!(other)
    );
    delete_server(&server, &admin, &id);
    wait_volume_gone(&server, &admin, &root_id);
}
