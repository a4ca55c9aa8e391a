//! `os-interface` attach and detach against the real `yunhe serve` without
//! the dataplane: the answers that need no guest. A body Nova's schema
//! refuses is 400 (before anything else), an unknown server 404, a port the
//! server does not have 404 on detach, and attach and detach of a real
//! server answer Nova's 409 for a cloud whose hypervisor cannot (no
//! dataplane: servers have no NICs to change), leaving ports and server as
//! they were; another project's caller sees no server (404). The hot-add
//! itself is in the lab (tests/lab/in/hotplug.sh, tests/lab/network.sh) and
//! in compute's unit tests with the fake driver. Servers boot the built-in
//! echo guest on /dev/kvm; skipped (with a message) without it.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, VmmStateDir, echo_image, http, kvm_usable, member_of_new_project};

fn nova(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
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

fn message(reply: &Reply) -> String {
    reply
        .json()
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn neutron(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(method, &format!("/network/v2.0{path}"), Some(token), body)
}

#[test]
fn attach_and_detach_refusals_without_the_dataplane() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("ia", "ifaces");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let image = echo_image(&server, &admin, &state.0);
    let net = neutron(
        &server,
        &admin,
        "POST",
        "/networks",
        Some(&json!({"network": {"name": "net1"}})),
    );
    assert_eq!(net.status, 201, "{}", net.text);
    let net_id = net.json()["network"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let sub = neutron(
        &server,
        &admin,
        "POST",
        "/subnets",
        Some(&json!({"subnet": {"network_id": net_id, "cidr": "10.7.0.0/24", "ip_version": 4}})),
    );
    assert_eq!(sub.status, 201, "{}", sub.text);
    let created = nova(
        &server,
        &admin,
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "42",
                                 "networks": [{"uuid": net_id}]}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    loop {
        let shown = nova(&server, &admin, "GET", &format!("/servers/{id}"), None).json();
        if shown["server"]["status"] == "ACTIVE" {
            break;
        }
        assert_ne!(shown["server"]["status"], "ERROR", "{shown}");
        assert!(start.elapsed() < Duration::from_secs(60), "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = nova(
        &server,
        &admin,
        "GET",
        &format!("/servers/{id}/os-interface"),
        None,
    );
    assert_eq!(list.status, 200, "{}", list.text);
    let port_id = list.json()["interfaceAttachments"][0]["port_id"]
        .as_str()
        .expect("port")
        .to_string();
    let path = format!("/servers/{id}/os-interface");

    // Bodies Nova's schema refuses: 400.
    for bad in [
        json!({"interfaceAttachment": {"net_id": "not-a-uuid"}}),
        json!({"interfaceAttachment": {"net_id": net_id, "port_id": port_id}}),
        json!({"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.7.0.9"}]}}),
        json!({"interfaceAttachment": {"net_id": net_id, "fixed_ips": [{"ip_address": "x"}]}}),
        json!({"interfaceAttachment": {"net_id": net_id, "surprise": 1}}),
        json!({"interfaceAttachment": {"net_id": net_id, "tag": "a/b"}}),
    ] {
        let reply = nova(&server, &admin, "POST", &path, Some(&bad));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
        assert!(reply.json().get("badRequest").is_some(), "{}", reply.text);
    }

    // No dataplane: Nova's 409 for a hypervisor that cannot, and nothing changes.
    let attach = nova(
        &server,
        &admin,
        "POST",
        &path,
        Some(&json!({"interfaceAttachment": {"net_id": net_id}})),
    );
    assert_eq!(attach.status, 409, "{}", attach.text);
    assert_eq!(
        message(&attach),
        format!("Attaching interfaces is not supported for instance {id}.")
    );
    let detach = nova(
        &server,
        &admin,
        "DELETE",
        &format!("{path}/{port_id}"),
        None,
    );
    assert_eq!(detach.status, 409, "{}", detach.text);
    assert!(message(&detach).contains("Detaching interfaces is not supported"));
    let ports = neutron(
        &server,
        &admin,
        "GET",
        &format!("/ports?device_id={id}"),
        None,
    );
    assert_eq!(ports.json()["ports"].as_array().map(Vec::len), Some(1));

    // A port the server does not have, an unknown server: 404.
    let other = "3d4b6a1c-8e2f-4c7a-9b5d-1f0e2a3b4c5d";
    let reply = nova(&server, &admin, "DELETE", &format!("{path}/{other}"), None);
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = nova(
        &server,
        &admin,
        "POST",
        &format!("/servers/{other}/os-interface"),
        Some(&json!({"interfaceAttachment": {"net_id": net_id}})),
    );
    assert_eq!(reply.status, 404, "{}", reply.text);

    // Another project's member does not see the server.
    let (_, token) = member_of_new_project(&server, &admin, "ifaces-other");
    let reply = nova(
        &server,
        &token,
        "POST",
        &path,
        Some(&json!({"interfaceAttachment": {"net_id": net_id}})),
    );
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = nova(
        &server,
        &token,
        "DELETE",
        &format!("{path}/{port_id}"),
        None,
    );
    assert_eq!(reply.status, 404, "{}", reply.text);

    // No instance action was recorded for the refusals.
    let actions = nova(
        &server,
        &admin,
        "GET",
        &format!("/servers/{id}/os-instance-actions"),
        None,
    );
    let names: Vec<String> = actions.json()["instanceActions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["create"]);
    let deleted = nova(&server, &admin, "DELETE", &format!("/servers/{id}"), None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}
