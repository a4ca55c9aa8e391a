//! Nova's `os-volume_attachments` against the real `yunhe serve` (dataplane
//! off) booting the echo guest on /dev/kvm: a Cinder volume attached to a
//! running server is `in-use` and hot-added (the VMM's disk count, admin
//! diagnostics 2.48, goes up by one); list and show; Cinder refuses to delete
//! it (400); stop/start keeps the disk; a detach of a stopped server makes the
//! volume `available` again. The echo guest does not answer the ACPI eject,
//! so a detach of a running echo server times out (30 s): the volume goes
//! back to `in-use`, stays attached and the instance action records the
//! error. Deleting the server gives the volume back. Skipped (with a message)
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

    // A running echo guest never ejects: the detach times out, the volume stays attached.
    let detach = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        None,
    );
    assert_eq!(detach.status, 202, "{}", detach.text);
    wait_volume(&server, &admin, &vol, "detaching", Duration::from_secs(5));
    wait_volume(&server, &admin, &vol, "in-use", Duration::from_secs(60));
    assert_eq!(attachments(&server, &admin, &id).len(), 1);

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
