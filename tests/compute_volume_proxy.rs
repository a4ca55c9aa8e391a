//! Nova's Cinder proxies against the real `yunhe serve` (no guest needed):
//! `os-volumes` and `os-snapshots` below 2.36 create, list, show and delete
//! through the volume service in Nova's formats, with Cinder's state checks
//! (a volume with a snapshot is not deleted) and Nova's errors (400 for a
//! bad body, 404 for another project's volume); from 2.36 both answer 404.
//! `os-volumes_boot` is server create (a bad body is the servers' 400) at
//! every microversion.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, member_of_new_project};

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

/// Polls `GET path` (2.1) until `key.status` is `status`, or the thing is
/// gone when `status` is empty.
fn wait(server: &Server, token: &str, path: &str, key: &str, status: &str) {
    let start = Instant::now();
    loop {
        let reply = nova(server, token, "2.1", "GET", path, None);
        if status.is_empty() && reply.status == 404 {
            return;
        }
        if reply.status == 200 && reply.json()[key]["status"] == status {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path} not {status:?}: {} {}",
            reply.status,
            reply.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(reply: &Reply, key: &str) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()[key]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn volume_and_snapshot_proxies_below_2_36() {
    let server = Server::start();
    let admin = server.admin_token();
    let (_, other) = member_of_new_project(&server, &admin, "volproxy-other");

    // Create: Nova's request and view.
    let created = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        "/os-volumes",
        Some(&json!({"volume": {"size": "1", "display_name": "pv",
            "display_description": "proxied", "metadata": {"k": "v"}}})),
    );
    assert_eq!(created.status, 200, "{}", created.text);
    let vol = created.json()["volume"].clone();
    let vid = vol["id"].as_str().expect("id").to_string();
    assert_eq!(vol["displayName"], "pv");
    assert_eq!(vol["displayDescription"], "proxied");
    assert_eq!(vol["size"], 1);
    assert_eq!(vol["availabilityZone"], "nova");
    assert_eq!(vol["metadata"], json!({"k": "v"}));
    assert_eq!(vol["attachments"], json!([{}]));
    assert!(vol["createdAt"].is_string(), "{vol}");
    assert!(vol["volumeType"].is_string(), "{vol}");
    assert!(
        created
            .header("location")
            .is_some_and(|l| l.ends_with(&format!("/os-volumes/{vid}"))),
        "{:?}",
        created.headers
    );
    wait(
        &server,
        &admin,
        &format!("/os-volumes/{vid}"),
        "volume",
        "available",
    );

    // The same volume through Cinder, and in both of Nova's lists.
    let cinder = server.request(
        "GET",
        &format!("/volume/v3/volumes/{vid}"),
        Some(&admin),
        None,
    );
    assert_eq!(cinder.status, 200, "{}", cinder.text);
    assert_eq!(cinder.json()["volume"]["name"], "pv");
    for path in ["/os-volumes", "/os-volumes/detail"] {
        let list = nova(&server, &admin, "2.35", "GET", path, None);
        assert!(ids(&list, "volumes").contains(&vid), "{}", list.text);
    }
    let paged = nova(&server, &admin, "2.1", "GET", "/os-volumes?limit=0", None);
    assert!(ids(&paged, "volumes").is_empty());

    // Another project does not see it.
    let hidden = nova(
        &server,
        &other,
        "2.1",
        "GET",
        &format!("/os-volumes/{vid}"),
        None,
    );
    assert_eq!(hidden.status, 404, "{}", hidden.text);
    assert!(
        !ids(
            &nova(&server, &other, "2.1", "GET", "/os-volumes", None),
            "volumes"
        )
        .contains(&vid)
    );

    // Nova's schema refuses what it does not know.
    for bad in [
        json!({"volume": {}}),
        json!({"volume": {"size": 1, "name": "cinder-style"}}),
        json!({"volume": {"size": 0}}),
        json!({}),
    ] {
        let r = nova(&server, &admin, "2.1", "POST", "/os-volumes", Some(&bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }

    // Snapshots.
    let snap = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        "/os-snapshots",
        Some(&json!({"snapshot": {"volume_id": vid, "display_name": "ps",
            "display_description": "snap", "force": false}})),
    );
    assert_eq!(snap.status, 200, "{}", snap.text);
    let sn = snap.json()["snapshot"].clone();
    let sid = sn["id"].as_str().expect("id").to_string();
    assert_eq!(sn["volumeId"], vid.as_str());
    assert_eq!(sn["displayName"], "ps");
    assert_eq!(sn["displayDescription"], "snap");
    assert_eq!(sn["size"], 1);
    assert!(sn["createdAt"].is_string(), "{sn}");
    wait(
        &server,
        &admin,
        &format!("/os-snapshots/{sid}"),
        "snapshot",
        "available",
    );
    for path in ["/os-snapshots", "/os-snapshots/detail"] {
        let list = nova(&server, &admin, "2.1", "GET", path, None);
        assert!(ids(&list, "snapshots").contains(&sid), "{}", list.text);
    }
    let missing = nova(
        &server,
        &admin,
        "2.1",
        "POST",
        "/os-snapshots",
        Some(&json!({"snapshot": {"volume_id": "no-such-volume"}})),
    );
    assert_eq!(missing.status, 404, "{}", missing.text);

    // Cinder's state check holds: a volume with a snapshot stays.
    let refused = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/os-volumes/{vid}"),
        None,
    );
    assert_eq!(refused.status, 400, "{}", refused.text);

    // At 2.36 the proxies are gone.
    for (method, path) in [
        ("GET", "/os-volumes".to_string()),
        ("GET", "/os-volumes/detail".to_string()),
        ("GET", format!("/os-volumes/{vid}")),
        ("DELETE", format!("/os-volumes/{vid}")),
        ("GET", "/os-snapshots".to_string()),
        ("GET", format!("/os-snapshots/{sid}")),
        ("DELETE", format!("/os-snapshots/{sid}")),
    ] {
        let r = nova(&server, &admin, "2.36", method, &path, None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    let r = nova(
        &server,
        &admin,
        "2.36",
        "POST",
        "/os-volumes",
        Some(&json!({"volume": {"size": 1}})),
    );
    assert_eq!(r.status, 404, "{}", r.text);

    // Delete: the snapshot, then the volume.
    let gone = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/os-snapshots/{sid}"),
        None,
    );
    assert_eq!(gone.status, 202, "{}", gone.text);
    wait(
        &server,
        &admin,
        &format!("/os-snapshots/{sid}"),
        "snapshot",
        "",
    );
    let gone = nova(
        &server,
        &admin,
        "2.1",
        "DELETE",
        &format!("/os-volumes/{vid}"),
        None,
    );
    assert_eq!(gone.status, 202, "{}", gone.text);
    wait(&server, &admin, &format!("/os-volumes/{vid}"), "volume", "");

    // os-volumes_boot is server create, at any microversion.
    for mv in ["2.1", "2.90"] {
        let r = nova(
            &server,
            &admin,
            mv,
            "POST",
            "/os-volumes_boot",
            Some(&json!({"server": {}})),
        );
        assert_eq!(r.status, 400, "{mv}: {}", r.text);
    }
}
