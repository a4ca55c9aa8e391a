//! Cinder v3 against the real `yunhe serve` on an ephemeral port: volumes as
//! sparse files, snapshots and clones with the same bytes, types, QoS,
//! quotas, capacity and the start-up repair after a kill -9.

mod support;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, http, member_of_new_project};

const GIB: u64 = 1 << 30;

fn req(server: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    server.request(method, &format!("/volume/v3{path}"), Some(token), body)
}

fn req_mv(server: &Server, method: &str, path: &str, token: &str, mv: &str) -> Reply {
    let headers = vec![
        ("X-Auth-Token", token.to_string()),
        ("OpenStack-API-Version", format!("volume {mv}")),
    ];
    http(
        &server.addr,
        method,
        &format!("/volume/v3{path}"),
        &headers,
        None,
    )
}

/// Waits until the volume (or snapshot, `kind`) reaches `status`.
fn wait_for(server: &Server, token: &str, kind: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = req(server, "GET", &format!("/{kind}s/{id}"), token, None);
        let body = reply.json();
        if body[kind]["status"] == status {
            return body[kind].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {id} never became {status}: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(server: &Server, token: &str, kind: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while req(server, "GET", &format!("/{kind}s/{id}"), token, None).status != 404 {
        assert!(Instant::now() < deadline, "{kind} {id} never went away");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_volume(server: &Server, token: &str, body: Value) -> String {
    let reply = req(
        server,
        "POST",
        "/volumes",
        token,
        Some(&json!({"volume": body})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.json()["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn volume_file(dir: &Path, id: &str) -> PathBuf {
    dir.join("volumes").join(format!("volume-{id}"))
}

#[test]
fn catalog_versions_and_microversions() {
    let server = Server::start();
    let admin = server.admin_token();
    let token = server.token("admin", support::ADMIN_PASSWORD, Some("admin"));
    let catalog = &token.json()["token"]["catalog"];
    let types: Vec<&str> = catalog
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|s| s["type"].as_str())
        .collect();
    assert!(types.contains(&"block-storage"), "{types:?}");
    assert!(types.contains(&"volumev3"), "{types:?}");

    let doc = server.get("/volume/v3", None).json();
    assert_eq!(doc["versions"][0]["id"], "v3.0");
    assert_eq!(doc["versions"][0]["version"], "3.71");
    assert_eq!(doc["versions"][0]["min_version"], "3.0");

    let reply = req_mv(&server, "GET", "/volumes", &admin, "3.60");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("openstack-api-version"), Some("volume 3.60"));
    let reply = req_mv(&server, "GET", "/volumes", &admin, "3.99");
    assert_eq!(reply.status, 406);
    // The project id in the path is accepted when it is the token's, refused otherwise.
    let project = token.json()["token"]["project"]["id"]
        .as_str()
        .expect("project")
        .to_string();
    assert_eq!(
        req(&server, "GET", &format!("/{project}/volumes"), &admin, None).status,
        200
    );
    assert_eq!(
        req(
            &server,
            "GET",
            "/0123456789abcdef0123456789abcdef/volumes",
            &admin,
            None
        )
        .status,
        400
    );
    // Cinder's error format.
    let missing = req(&server, "GET", "/volumes/nope", &admin, None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["itemNotFound"]["code"], 404);
}

#[test]
fn volumes_snapshots_and_clones_keep_their_bytes_in_sparse_files() {
    let server = Server::start();
    let admin = server.admin_token();
    let id = create_volume(
        &server,
        &admin,
        json!({"size": 2, "name": "data", "metadata": {"tier": "gold"}}),
    );
    let v = wait_for(&server, &admin, "volume", &id, "available");
    assert_eq!(v["size"], 2);
    assert_eq!(v["volume_type"], "__DEFAULT__");
    assert_eq!(v["bootable"], "false");
    assert_eq!(v["metadata"]["tier"], "gold");
    let file = volume_file(&server.state_dir, &id);
    let meta = std::fs::metadata(&file).expect("volume file");
    assert_eq!(meta.len(), 2 * GIB);
    assert!(meta.blocks() * 512 < 1 << 20, "blank volumes are sparse");

    // Bytes written into the volume come back in a snapshot and its volumes.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.write_all_at(b"yunhe volume bytes", GIB + 4096)
        .expect("write");
    drop(f);
    let snap = req(
        &server,
        "POST",
        "/snapshots",
        &admin,
        Some(&json!({"snapshot": {"volume_id": id, "name": "s1"}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let snap_id = snap.json()["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(&server, &admin, "snapshot", &snap_id, "available");
    let from_snap = create_volume(&server, &admin, json!({"snapshot_id": snap_id, "size": 3}));
    let clone = create_volume(&server, &admin, json!({"source_volid": id}));
    for new in [&from_snap, &clone] {
        let v = wait_for(&server, &admin, "volume", new, "available");
        let f = std::fs::File::open(volume_file(&server.state_dir, new)).expect("copy");
        let mut back = [0u8; 18];
        f.read_exact_at(&mut back, GIB + 4096).expect("read");
        assert_eq!(&back, b"yunhe volume bytes");
        assert_eq!(
            f.metadata().expect("meta").len(),
            v["size"].as_u64().expect("size") * GIB
        );
    }
    // A smaller volume than the snapshot is refused.
    let small = req(
        &server,
        "POST",
        "/volumes",
        &admin,
        Some(&json!({"volume": {"snapshot_id": snap_id, "size": 1}})),
    );
    assert_eq!(small.status, 400, "{}", small.text);

    // Lists: filters, sort, paging.
    let list = req(&server, "GET", "/volumes/detail?name=data", &admin, None).json();
    assert_eq!(list["volumes"].as_array().expect("list").len(), 1);
    let sorted = req(
        &server,
        "GET",
        "/volumes/detail?sort=size:asc",
        &admin,
        None,
    )
    .json();
    let sizes: Vec<i64> = sorted["volumes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["size"].as_i64().expect("size"))
        .collect();
    assert_eq!(sizes, vec![2, 2, 3]);
    let page = req(&server, "GET", "/volumes?limit=2", &admin, None).json();
    assert_eq!(page["volumes"].as_array().expect("page").len(), 2);
    let next = page["volumes_links"][0]["href"].as_str().expect("next");
    assert!(next.contains("marker="), "{next}");
    let meta_filter = req(
        &server,
        "GET",
        "/volumes?metadata=%7B%27tier%27%3A%27gold%27%7D",
        &admin,
        None,
    )
    .json();
    assert_eq!(meta_filter["volumes"].as_array().expect("list").len(), 1);

    // Update, metadata, flags, extend.
    let updated = req(
        &server,
        "PUT",
        &format!("/volumes/{id}"),
        &admin,
        Some(&json!({"volume": {"name": "renamed", "description": "d"}})),
    );
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json()["volume"]["name"], "renamed");
    let meta = req(
        &server,
        "POST",
        &format!("/volumes/{id}/metadata"),
        &admin,
        Some(&json!({"metadata": {"k": "v"}})),
    );
    assert_eq!(meta.json()["metadata"], json!({"tier": "gold", "k": "v"}));
    for (action, status) in [
        (json!({"os-set_bootable": {"bootable": true}}), 200),
        (json!({"os-update_readonly_flag": {"readonly": true}}), 202),
        (json!({"os-extend": {"new_size": 4}}), 202),
        (json!({"os-extend": {"new_size": 1}}), 400),
        (json!({"os-nonsense": {}}), 400),
    ] {
        let reply = req(
            &server,
            "POST",
            &format!("/volumes/{id}/action"),
            &admin,
            Some(&action),
        );
        assert_eq!(reply.status, status, "{action}: {}", reply.text);
    }
    let v = wait_for(&server, &admin, "volume", &id, "available");
    assert_eq!(v["size"], 4);
    assert_eq!(v["bootable"], "true");
    assert_eq!(v["metadata"]["readonly"], "True");
    assert_eq!(std::fs::metadata(&file).expect("file").len(), 4 * GIB);

    // A volume with snapshots is not deleted, unless cascade.
    let refused = req(&server, "DELETE", &format!("/volumes/{id}"), &admin, None);
    assert_eq!(refused.status, 400, "{}", refused.text);
    let cascade = req(
        &server,
        "DELETE",
        &format!("/volumes/{id}?cascade=true"),
        &admin,
        None,
    );
    assert_eq!(cascade.status, 202, "{}", cascade.text);
    wait_gone(&server, &admin, "volume", &id);
    wait_gone(&server, &admin, "snapshot", &snap_id);
    assert!(!file.exists());
    assert!(
        !server
            .state_dir
            .join("volumes")
            .join(format!("snapshot-{snap_id}"))
            .exists()
    );
}

#[test]
fn types_qos_quotas_and_policy() {
    let server = Server::start();
    let admin = server.admin_token();
    let (project, member) = member_of_new_project(&server, &admin, "alice");

    // Types: admins create, members may not; private types need access.
    let t = req(
        &server,
        "POST",
        "/types",
        &admin,
        Some(
            &json!({"volume_type": {"name": "fast", "extra_specs": {"speed": "high"}, "os-volume-type-access:is_public": false}}),
        ),
    );
    assert_eq!(t.status, 200, "{}", t.text);
    let type_id = t.json()["volume_type"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let dup = req(
        &server,
        "POST",
        "/types",
        &admin,
        Some(&json!({"volume_type": {"name": "fast"}})),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(
        req(
            &server,
            "POST",
            "/types",
            &member,
            Some(&json!({"volume_type": {"name": "x"}}))
        )
        .status,
        403
    );
    let seen = req(&server, "GET", "/types", &member, None).json();
    let names: Vec<&str> = seen["volume_types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["__DEFAULT__"]);
    let add = req(
        &server,
        "POST",
        &format!("/types/{type_id}/action"),
        &admin,
        Some(&json!({"addProjectAccess": {"project": project}})),
    );
    assert_eq!(add.status, 202, "{}", add.text);
    let access = req(
        &server,
        "GET",
        &format!("/types/{type_id}/os-volume-type-access"),
        &admin,
        None,
    );
    assert_eq!(
        access.json()["volume_type_access"][0]["project_id"],
        project.as_str()
    );
    let spec = req(
        &server,
        "GET",
        &format!("/types/{type_id}/extra_specs/speed"),
        &admin,
        None,
    );
    assert_eq!(spec.json()["speed"], "high");

    // QoS specs and their association.
    let qos = req(
        &server,
        "POST",
        "/qos-specs",
        &admin,
        Some(
            &json!({"qos_specs": {"name": "gold", "consumer": "front-end", "read_iops_sec": "1000"}}),
        ),
    );
    assert_eq!(qos.status, 200, "{}", qos.text);
    let qos_id = qos.json()["qos_specs"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        req(
            &server,
            "GET",
            &format!("/qos-specs/{qos_id}/associate?vol_type_id={type_id}"),
            &admin,
            None
        )
        .status,
        202
    );
    let assoc = req(
        &server,
        "GET",
        &format!("/qos-specs/{qos_id}/associations"),
        &admin,
        None,
    )
    .json();
    assert_eq!(assoc["qos_associations"][0]["id"], type_id.as_str());

    // The member makes a volume of the shared type; another project cannot see it.
    let vid = create_volume(&server, &member, json!({"size": 1, "volume_type": "fast"}));
    let v = wait_for(&server, &member, "volume", &vid, "available");
    assert_eq!(v["volume_type"], "fast");
    assert!(
        v.get("os-vol-host-attr:host").is_none(),
        "members do not see the host"
    );
    let (_, bob) = member_of_new_project(&server, &admin, "bob");
    assert_eq!(
        req(&server, "GET", &format!("/volumes/{vid}"), &bob, None).status,
        404
    );
    let reset = req(
        &server,
        "POST",
        &format!("/volumes/{vid}/action"),
        &member,
        Some(&json!({"os-reset_status": {"status": "error"}})),
    );
    assert_eq!(reset.status, 403, "{}", reset.text);
    // A type in use is not deleted.
    assert_eq!(
        req(
            &server,
            "DELETE",
            &format!("/types/{type_id}"),
            &admin,
            None
        )
        .status,
        400
    );

    // Quotas: one more volume than the limit is a 413.
    let set = req(
        &server,
        "PUT",
        &format!("/os-quota-sets/{project}"),
        &admin,
        Some(&json!({"quota_set": {"volumes": 1, "gigabytes_fast": 5}})),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let over = req(
        &server,
        "POST",
        "/volumes",
        &member,
        Some(&json!({"volume": {"size": 1}})),
    );
    assert_eq!(over.status, 413, "{}", over.text);
    assert!(
        over.json()["overLimit"]["message"]
            .as_str()
            .expect("message")
            .contains("volumes")
    );
    let usage = req(
        &server,
        "GET",
        &format!("/os-quota-sets/{project}?usage=true"),
        &member,
        None,
    )
    .json();
    assert_eq!(usage["quota_set"]["volumes"]["in_use"], 1);
    assert_eq!(usage["quota_set"]["gigabytes_fast"]["limit"], 5);
    let limits = req(&server, "GET", "/limits", &member, None).json();
    assert_eq!(limits["limits"]["absolute"]["maxTotalVolumes"], 1);
    assert_eq!(limits["limits"]["absolute"]["totalGigabytesUsed"], 1);
    let bad = req(
        &server,
        "PUT",
        &format!("/os-quota-sets/{project}"),
        &admin,
        Some(&json!({"quota_set": {"volumes": 0}})),
    );
    assert_eq!(bad.status, 400, "a limit below the usage: {}", bad.text);

    // What the host offers.
    let zones = req(&server, "GET", "/os-availability-zone", &member, None).json();
    assert_eq!(zones["availabilityZoneInfo"][0]["zoneName"], "nova");
    let services = req(&server, "GET", "/os-services", &admin, None).json();
    let binaries: Vec<&str> = services["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["binary"].as_str())
        .collect();
    assert_eq!(
        binaries,
        vec!["cinder-scheduler", "cinder-volume", "cinder-backup"]
    );
    let pools = req(
        &server,
        "GET",
        "/scheduler-stats/get_pools?detail=true",
        &admin,
        None,
    )
    .json();
    let caps = &pools["pools"][0]["capabilities"];
    assert!(caps["total_capacity_gb"].as_f64().expect("total") > 0.0);
    assert_eq!(caps["provisioned_capacity_gb"], 1);
    assert_eq!(
        req(&server, "GET", "/scheduler-stats/get_pools", &member, None).status,
        403
    );
}

#[test]
fn capacity_is_enforced_and_bad_input_refused() {
    // Almost no over-subscription: a volume bigger than the disk cannot fit.
    let server = Server::start_with_args(&["--volume-over-subscription-ratio", "0.000001"]);
    let admin = server.admin_token();
    let id = create_volume(&server, &admin, json!({"size": 1}));
    let v = wait_for(&server, &admin, "volume", &id, "error");
    assert_eq!(v["status"], "error");
    assert!(!volume_file(&server.state_dir, &id).exists());
    // An error volume is deleted cleanly.
    assert_eq!(
        req(&server, "DELETE", &format!("/volumes/{id}"), &admin, None).status,
        202
    );
    wait_gone(&server, &admin, "volume", &id);
    for body in [
        json!({"volume": {"size": 0}}),
        json!({"volume": {"size": "x"}}),
        json!({"volume": {}}),
        json!({"volume": {"size": 1, "bogus": 1}}),
        json!({"volume": {"size": 1, "name": "n".repeat(256)}}),
        json!({"volume": {"size": 1, "availability_zone": "elsewhere"}}),
        json!({"volume": {"size": 1, "volume_type": "no-such-type"}}),
        json!([1]),
    ] {
        let reply = req(&server, "POST", "/volumes", &admin, Some(&body));
        assert!(
            reply.status == 400 || reply.status == 404,
            "{body}: {} {}",
            reply.status,
            reply.text
        );
    }
}

#[test]
fn kill_nine_leaves_states_the_start_up_repair_settles() {
    let server = Server::start();
    let admin = server.admin_token();
    let kept = create_volume(&server, &admin, json!({"size": 1, "name": "kept"}));
    let stuck = create_volume(&server, &admin, json!({"size": 1, "name": "stuck"}));
    let lost = create_volume(&server, &admin, json!({"size": 1, "name": "lost"}));
    for id in [&kept, &stuck, &lost] {
        wait_for(&server, &admin, "volume", id, "available");
    }
    let dir = server.kill9();
    // What a crash mid-create leaves: a row still `creating`, an unfinished
    // copy, a file whose row never committed; and a file lost under a row.
    let db = rusqlite::Connection::open(dir.join("yunhe.db")).expect("db");
    db.execute(
        "UPDATE volume_volumes SET status = 'creating', doc = json_set(doc, '$.status', 'creating') WHERE id = ?1",
        [&stuck],
    )
    .expect("update");
    drop(db);
    let volumes = dir.join("volumes");
    std::fs::write(volumes.join("volume-orphan"), b"x").expect("orphan");
    std::fs::write(volumes.join("volume-half.partial"), b"x").expect("partial");
    std::fs::remove_file(volume_file(&dir, &lost)).expect("lose a file");

    let server = Server::start_in(dir.clone(), false);
    let admin = server.admin_token();
    assert_eq!(
        req(&server, "GET", &format!("/volumes/{kept}"), &admin, None).json()["volume"]["status"],
        "available"
    );
    for id in [&stuck, &lost] {
        let v = req(&server, "GET", &format!("/volumes/{id}"), &admin, None).json();
        assert_eq!(v["volume"]["status"], "error", "{id}");
    }
    assert!(!volumes.join("volume-orphan").exists());
    assert!(!volumes.join("volume-half.partial").exists());
    assert!(volume_file(&dir, &kept).exists());
    // The error volumes can be deleted, and their files are gone.
    for id in [&stuck, &lost] {
        assert_eq!(
            req(&server, "DELETE", &format!("/volumes/{id}"), &admin, None).status,
            202
        );
        wait_gone(&server, &admin, "volume", id);
        assert!(!volume_file(&dir, id).exists());
    }
}

/// The shapes tempest checks: snapshot create without the extended
/// attributes, services without backend_state but for cinder-volume, type
/// update without the access flag, next links in the caller's URL shape; and
/// os-retype with its per-type quota.
#[test]
fn response_shapes_next_links_and_retype() {
    let server = Server::start();
    let admin = server.admin_token();

    let vol = create_volume(&server, &admin, json!({"size": 1}));
    wait_for(&server, &admin, "volume", &vol, "available");
    let snap = req(
        &server,
        "POST",
        "/snapshots",
        &admin,
        Some(&json!({"snapshot": {"volume_id": vol}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let body = snap.json();
    assert!(
        body["snapshot"]
            .get("os-extended-snapshot-attributes:progress")
            .is_none()
    );
    let snap_id = body["snapshot"]["id"].as_str().expect("id").to_string();
    let shown = wait_for(&server, &admin, "snapshot", &snap_id, "available");
    assert!(
        shown
            .get("os-extended-snapshot-attributes:project_id")
            .is_some()
    );

    let services = req(&server, "GET", "/os-services", &admin, None).json();
    for s in services["services"].as_array().expect("services") {
        assert_eq!(
            s.get("backend_state").is_some(),
            s["binary"] == "cinder-volume",
            "{s}"
        );
    }

    // Next links keep the URL's shape: no project id when the caller sent none.
    let second = create_volume(&server, &admin, json!({"size": 1}));
    wait_for(&server, &admin, "volume", &second, "available");
    let page = req(&server, "GET", "/volumes?limit=1", &admin, None).json();
    let href = page["volumes_links"][0]["href"].as_str().expect("next");
    assert!(href.contains("/volume/v3/volumes?"), "{href}");
    let project = req(&server, "GET", "/volumes/detail?limit=1", &admin, None).json()["volumes"][0]
        ["os-vol-tenant-attr:tenant_id"]
        .as_str()
        .expect("tenant")
        .to_string();
    let page = req(
        &server,
        "GET",
        &format!("/{project}/volumes/detail?limit=1"),
        &admin,
        None,
    )
    .json();
    let href = page["volumes_links"][0]["href"].as_str().expect("next");
    assert!(
        href.contains(&format!("/volume/v3/{project}/volumes/detail?")),
        "{href}"
    );

    // Type update answers the plain view; retype moves the volume.
    let t = req(
        &server,
        "POST",
        "/types",
        &admin,
        Some(&json!({"volume_type": {"name": "gold"}})),
    );
    assert_eq!(t.status, 200, "{}", t.text);
    let gold = t.json()["volume_type"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let up = req(
        &server,
        "PUT",
        &format!("/types/{gold}"),
        &admin,
        Some(&json!({"volume_type": {"description": "d"}})),
    );
    assert_eq!(up.status, 200, "{}", up.text);
    let view = up.json();
    assert!(
        view["volume_type"]
            .get("os-volume-type-access:is_public")
            .is_none()
    );
    assert!(view["volume_type"].get("qos_specs_id").is_none());

    let action = format!("/volumes/{second}/action");
    let retype = json!({"os-retype": {"new_type": "gold", "migration_policy": "never"}});
    let r = req(&server, "POST", &action, &admin, Some(&retype));
    assert_eq!(r.status, 202, "{}", r.text);
    let v = wait_for(&server, &admin, "volume", &second, "available");
    assert_eq!(v["volume_type"], "gold");
    let again = req(&server, "POST", &action, &admin, Some(&retype));
    assert_eq!(again.status, 400, "same type: {}", again.text);
    let bad = json!({"os-retype": {"new_type": "no-such-type"}});
    assert_eq!(
        req(&server, "POST", &action, &admin, Some(&bad)).status,
        400
    );
    // A per-type quota of 0 volumes refuses the move into that type.
    let t = req(
        &server,
        "POST",
        "/types",
        &admin,
        Some(&json!({"volume_type": {"name": "tight"}})),
    );
    assert_eq!(t.status, 200, "{}", t.text);
    let q = req(
        &server,
        "PUT",
        &format!("/os-quota-sets/{project}"),
        &admin,
        Some(&json!({"quota_set": {"volumes_tight": 0}})),
    );
    assert_eq!(q.status, 200, "{}", q.text);
    let tight = json!({"os-retype": {"new_type": "tight"}});
    assert_eq!(
        req(&server, "POST", &action, &admin, Some(&tight)).status,
        413
    );
}

fn put(server: &Server, path: &str, token: &str, body: Value) -> Reply {
    req(server, "PUT", path, token, Some(&body))
}

/// What tempest found missing: a `next` link on a full last page, snapshots
/// sorted by display_name, os-services by host (`yunhe` names the host's
/// backends too), disable with a reason, freeze and thaw.
#[test]
fn paging_sorting_and_service_actions() {
    let server = Server::start();
    let admin = server.admin_token();
    let a = create_volume(&server, &admin, json!({"size": 1}));
    wait_for(&server, &admin, "volume", &a, "available");
    // One volume, limit 1: a full page, so a next link (Cinder's rule).
    let page = req(&server, "GET", "/volumes?limit=1", &admin, None).json();
    assert!(page["volumes_links"][0]["href"].is_string(), "{page}");
    let page = req(&server, "GET", "/volumes?limit=2", &admin, None).json();
    assert!(page.get("volumes_links").is_none(), "{page}");

    for name in ["b-snap", "a-snap"] {
        let r = req(
            &server,
            "POST",
            "/snapshots",
            &admin,
            Some(&json!({"snapshot": {"volume_id": a, "name": name}})),
        );
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.json()["snapshot"]["id"].as_str().expect("id").to_string();
        wait_for(&server, &admin, "snapshot", &id, "available");
    }
    let sorted = req(
        &server,
        "GET",
        "/snapshots?sort_key=display_name&sort_dir=asc",
        &admin,
        None,
    );
    assert_eq!(sorted.status, 200, "{}", sorted.text);
    let names: Vec<String> = sorted.json()["snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["a-snap", "b-snap"]);

    let on_host = req(&server, "GET", "/os-services?host=yunhe", &admin, None).json();
    assert_eq!(on_host["services"].as_array().expect("list").len(), 3);
    let r = put(
        &server,
        "/os-services/disable-log-reason",
        &admin,
        json!({"host": "yunhe", "binary": "cinder-backup", "disabled_reason": null}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = put(
        &server,
        "/os-services/disable-log-reason",
        &admin,
        json!({"host": "yunhe", "binary": "cinder-backup", "disabled_reason": "maintenance"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = req(
        &server,
        "GET",
        "/os-services?binary=cinder-backup",
        &admin,
        None,
    )
    .json();
    assert_eq!(listed["services"][0]["status"], "disabled");
    assert_eq!(listed["services"][0]["disabled_reason"], "maintenance");
    let r = put(
        &server,
        "/os-services/enable",
        &admin,
        json!({"host": "yunhe", "binary": "cinder-backup"}),
    );
    assert_eq!(r.json()["status"], "enabled", "{}", r.text);
    let r = put(
        &server,
        "/os-services/enable",
        &admin,
        json!({"host": "invalid_host", "binary": "cinder-backup"}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    for action in ["freeze", "thaw"] {
        let r = put(
            &server,
            &format!("/os-services/{action}"),
            &admin,
            json!({"host": "invalid_host"}),
        );
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let r = put(
        &server,
        "/os-services/freeze",
        &admin,
        json!({"host": "yunhe@file"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = req(
        &server,
        "GET",
        "/os-services?binary=cinder-volume",
        &admin,
        None,
    )
    .json();
    assert_eq!(listed["services"][0]["frozen"], true);
}

fn wait_backup(server: &Server, token: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = req(server, "GET", &format!("/backups/{id}"), token, None);
        let body = reply.json();
        if body["backup"]["status"] == status {
            return body["backup"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "backup {id} never became {status}: {}",
            reply.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_backup(server: &Server, token: &str, body: Value) -> String {
    let reply = req(
        server,
        "POST",
        "/backups",
        token,
        Some(&json!({"backup": body})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.json()["backup"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read");
    buf
}

/// Full and incremental backups (compressed, holes skipped) in --backup-dir,
/// restore to a new and to an existing volume with the same bytes, export
/// and import of the record, dependents, reset-status, quotas, and the
/// start-up repair of a backup a kill -9 interrupted.
#[test]
fn backups_full_incremental_restore_export_import_and_repair() {
    let backup_dir = std::env::temp_dir().join(format!("yunhe-backups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&backup_dir);
    let dir_arg = backup_dir.to_string_lossy().into_owned();
    let server = Server::start_with_args(&["--backup-dir", &dir_arg]);
    let admin = server.admin_token();
    let vol = create_volume(
        &server,
        &admin,
        json!({"size": 1, "metadata": {"tier": "gold"}}),
    );
    wait_for(&server, &admin, "volume", &vol, "available");
    let file = volume_file(&server.state_dir, &vol);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.write_all_at(b"first bytes", 4096).expect("write");
    f.write_all_at(&vec![7u8; 1 << 20], 512 << 20)
        .expect("write");

    // Incremental with no full backup yet: refused.
    let r = req(
        &server,
        "POST",
        "/backups",
        &admin,
        Some(&json!({"backup": {"volume_id": vol, "incremental": true}})),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    let full = create_backup(&server, &admin, json!({"volume_id": vol, "name": "full"}));
    let shown = wait_backup(&server, &admin, &full, "available");
    assert_eq!(shown["is_incremental"], false);
    assert_eq!(shown["size"], 1);
    assert_eq!(shown["object_count"], 2, "{shown}");
    wait_for(&server, &admin, "volume", &vol, "available");
    let data = backup_dir.join(format!("backup-{full}"));
    assert!(data.join("manifest.json").is_file());
    let stored: u64 = std::fs::read_dir(&data)
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(stored < 256 << 10, "compressed and sparse: {stored} bytes");

    f.write_all_at(b"second bytes", 4096).expect("write");
    drop(f);
    let incr = create_backup(
        &server,
        &admin,
        json!({"volume_id": vol, "incremental": true}),
    );
    let shown = wait_backup(&server, &admin, &incr, "available");
    assert_eq!(shown["is_incremental"], true);
    assert_eq!(shown["object_count"], 1, "only the changed chunk: {shown}");
    let parent = req(&server, "GET", &format!("/backups/{full}"), &admin, None).json();
    assert_eq!(parent["backup"]["has_dependent_backups"], true);
    let r = req(&server, "DELETE", &format!("/backups/{full}"), &admin, None);
    assert_eq!(r.status, 400, "a parent stays: {}", r.text);

    // Restore the incremental to a new volume: the latest bytes.
    let r = req(
        &server,
        "POST",
        &format!("/backups/{incr}/restore"),
        &admin,
        Some(&json!({"restore": {}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let restored = r.json()["restore"]["volume_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(r.json()["restore"]["volume_name"].is_string());
    let v = wait_for(&server, &admin, "volume", &restored, "available");
    assert_eq!(v["metadata"]["tier"], "gold");
    let rfile = volume_file(&server.state_dir, &restored);
    assert_eq!(read_at(&rfile, 4096, 12), b"second bytes");
    assert_eq!(read_at(&rfile, 512 << 20, 4), vec![7u8; 4]);
    assert_eq!(std::fs::metadata(&rfile).expect("meta").len(), GIB);
    // Restore the full one over that existing volume: the old bytes.
    let r = req(
        &server,
        "POST",
        &format!("/backups/{full}/restore"),
        &admin,
        Some(&json!({"restore": {"volume_id": restored}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    wait_backup(&server, &admin, &full, "available");
    wait_for(&server, &admin, "volume", &restored, "available");
    assert_eq!(read_at(&rfile, 4096, 11), b"first bytes");

    // Export, then import the record under a new id: same data.
    let r = req(
        &server,
        "GET",
        &format!("/backups/{full}/export_record"),
        &admin,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let record = r.json()["backup-record"].clone();
    assert!(
        record["backup_service"]
            .as_str()
            .expect("service")
            .starts_with("cinder.backup.drivers")
    );
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut doc: Value = serde_json::from_slice(
        &engine
            .decode(record["backup_url"].as_str().expect("url"))
            .expect("base64"),
    )
    .expect("json");
    let new_id = "6c9f4a39-5c43-4a37-9d4c-2d0cf0a6f1aa";
    doc["id"] = json!(new_id);
    let r = req(
        &server,
        "POST",
        "/backups/import_record",
        &admin,
        Some(&json!({"backup-record": {
            "backup_service": record["backup_service"],
            "backup_url": engine.encode(doc.to_string()),
        }})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["backup"]["id"], new_id);
    wait_backup(&server, &admin, new_id, "available");
    // Importing the original again: it exists.
    let r = req(
        &server,
        "POST",
        "/backups/import_record",
        &admin,
        Some(&json!({"backup-record": record})),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // Deleting the import keeps the data the original still uses.
    assert_eq!(
        req(
            &server,
            "DELETE",
            &format!("/backups/{new_id}"),
            &admin,
            None
        )
        .status,
        202
    );
    wait_gone(&server, &admin, "backup", new_id);
    assert!(data.join("manifest.json").is_file());

    // Reset status (admin), list with detail, update (3.9).
    let r = req(
        &server,
        "POST",
        &format!("/backups/{incr}/action"),
        &admin,
        Some(&json!({"os-reset_status": {"status": "error"}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    wait_backup(&server, &admin, &incr, "error");
    let listed = req(&server, "GET", "/backups/detail", &admin, None).json();
    assert_eq!(listed["backups"].as_array().expect("list").len(), 2);
    let headers = vec![
        ("X-Auth-Token", admin.clone()),
        ("OpenStack-API-Version", "volume 3.9".to_string()),
    ];
    let r = http(
        &server.addr,
        "PUT",
        &format!("/volume/v3/backups/{full}"),
        &headers,
        Some(&json!({"backup": {"name": "renamed"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["backup"]["name"], "renamed");

    // Quotas: backups counted; a limit of 2 refuses a third.
    let project = v["os-vol-tenant-attr:tenant_id"]
        .as_str()
        .expect("tenant")
        .to_string();
    let r = put(
        &server,
        &format!("/os-quota-sets/{project}"),
        &admin,
        json!({"quota_set": {"backups": 2}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let usage = req(
        &server,
        "GET",
        &format!("/os-quota-sets/{project}?usage=true"),
        &admin,
        None,
    )
    .json();
    assert_eq!(usage["quota_set"]["backups"]["in_use"], 2, "{usage}");
    assert_eq!(usage["quota_set"]["backup_gigabytes"]["in_use"], 2);
    let r = req(
        &server,
        "POST",
        "/backups",
        &admin,
        Some(&json!({"backup": {"volume_id": vol}})),
    );
    assert_eq!(r.status, 413, "{}", r.text);

    // kill -9 mid-backup: the record is `creating`, the volume `backing-up`,
    // a partial data directory lies around. Start-up settles all three.
    let dir = server.kill9();
    let db = rusqlite::Connection::open(dir.join("yunhe.db")).expect("db");
    db.execute(
        "UPDATE volume_backups SET status = 'creating', doc = json_set(doc, '$.status', 'creating', '$.volume_previous_status', 'available') WHERE id = ?1",
        [&incr],
    )
    .expect("update");
    db.execute(
        "UPDATE volume_volumes SET status = 'backing-up', doc = json_set(doc, '$.status', 'backing-up') WHERE id = ?1",
        [&vol],
    )
    .expect("update");
    drop(db);
    std::fs::create_dir_all(backup_dir.join("backup-x.partial")).expect("partial");
    std::fs::create_dir_all(backup_dir.join("backup-orphan")).expect("orphan");
    std::fs::write(backup_dir.join("backup-orphan/manifest.json"), b"{}").expect("orphan");
    let server = Server::start_in_with_args(Some(dir), &["--backup-dir", &dir_arg]);
    let admin = server.admin_token();
    let b = req(&server, "GET", &format!("/backups/{incr}"), &admin, None).json();
    assert_eq!(b["backup"]["status"], "error", "{b}");
    assert!(b["backup"]["fail_reason"].is_string());
    wait_for(&server, &admin, "volume", &vol, "available");
    assert!(!backup_dir.join("backup-x.partial").exists());
    assert!(!backup_dir.join("backup-orphan").exists());
    assert!(data.join("manifest.json").is_file());
    // The error backup deletes, then its parent.
    for id in [&incr, &full] {
        let r = req(&server, "DELETE", &format!("/backups/{id}"), &admin, None);
        assert_eq!(r.status, 202, "{}", r.text);
        wait_gone(&server, &admin, "backup", id);
    }
    assert!(!data.exists());
    drop(server);
    let _ = std::fs::remove_dir_all(&backup_dir);
}

fn req_mv_body(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    mv: &str,
    body: &Value,
) -> Reply {
    let headers = vec![
        ("X-Auth-Token", token.to_string()),
        ("OpenStack-API-Version", format!("volume {mv}")),
    ];
    http(
        &server.addr,
        method,
        &format!("/volume/v3{path}"),
        &headers,
        Some(body),
    )
}

/// Transfers: offer (awaiting-transfer), the key checked, accept by another
/// project moving the volume, its snapshots and the quota usage; the 3.55
/// resource with no_snapshots, delete of an offer, and the quota refusal.
#[test]
fn volume_transfers_move_volumes_snapshots_and_usage_between_projects() {
    let server = Server::start();
    let admin = server.admin_token();
    let (other_project, other) = member_of_new_project(&server, &admin, "taker");
    let vol = create_volume(&server, &admin, json!({"size": 1, "name": "gift"}));
    wait_for(&server, &admin, "volume", &vol, "available");
    let snap = req(
        &server,
        "POST",
        "/snapshots",
        &admin,
        Some(&json!({"snapshot": {"volume_id": vol}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let snap_id = snap.json()["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(&server, &admin, "snapshot", &snap_id, "available");
    let admin_project = req(&server, "GET", &format!("/volumes/{vol}"), &admin, None).json()
        ["volume"]["os-vol-tenant-attr:tenant_id"]
        .as_str()
        .expect("tenant")
        .to_string();
    let used = |project: &str| {
        req(
            &server,
            "GET",
            &format!("/os-quota-sets/{project}?usage=true"),
            &admin,
            None,
        )
        .json()["quota_set"]["volumes"]["in_use"]
            .as_i64()
            .expect("in_use")
    };
    let (giver_before, taker_before) = (used(&admin_project), used(&other_project));

    let r = req(
        &server,
        "POST",
        "/os-volume-transfer",
        &admin,
        Some(&json!({"transfer": {"volume_id": vol, "name": "t1"}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let t = r.json()["transfer"].clone();
    let (tid, key) = (
        t["id"].as_str().expect("id").to_string(),
        t["auth_key"].as_str().expect("key").to_string(),
    );
    assert_eq!(key.len(), 16);
    wait_for(&server, &admin, "volume", &vol, "awaiting-transfer");
    let listed = req(&server, "GET", "/os-volume-transfer/detail", &admin, None).json();
    assert_eq!(listed["transfers"][0]["id"], tid.as_str());
    assert!(listed["transfers"][0].get("auth_key").is_none());
    // Another project neither sees the offer nor accepts it without the key.
    assert_eq!(
        req(
            &server,
            "GET",
            &format!("/os-volume-transfer/{tid}"),
            &other,
            None
        )
        .status,
        404
    );
    let r = req(
        &server,
        "POST",
        &format!("/os-volume-transfer/{tid}/accept"),
        &other,
        Some(&json!({"accept": {"auth_key": "0000000000000000"}})),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = req(
        &server,
        "POST",
        &format!("/os-volume-transfer/{tid}/accept"),
        &other,
        Some(&json!({"accept": {"auth_key": key}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["transfer"]["volume_id"], vol.as_str());
    let moved = wait_for(&server, &other, "volume", &vol, "available");
    assert_eq!(moved["name"], "gift");
    assert_eq!(
        req(
            &server,
            "GET",
            &format!("/snapshots/{snap_id}"),
            &other,
            None
        )
        .status,
        200,
        "the snapshot moved with the volume"
    );
    assert_eq!(used(&admin_project), giver_before - 1);
    assert_eq!(used(&other_project), taker_before + 1);
    assert_eq!(
        req(
            &server,
            "GET",
            &format!("/os-volume-transfer/{tid}"),
            &admin,
            None
        )
        .status,
        404,
        "an accepted offer is gone"
    );

    // The 3.55 resource: absent below 3.55; offer without snapshots, delete.
    let second = create_volume(&server, &admin, json!({"size": 1}));
    wait_for(&server, &admin, "volume", &second, "available");
    let body = json!({"transfer": {"volume_id": second, "no_snapshots": true}});
    assert_eq!(
        req_mv_body(&server, "POST", "/volume-transfers", &admin, "3.54", &body).status,
        404
    );
    let r = req_mv_body(&server, "POST", "/volume-transfers", &admin, "3.57", &body);
    assert_eq!(r.status, 202, "{}", r.text);
    let t2 = r.json()["transfer"].clone();
    assert_eq!(t2["accepted"], false);
    assert_eq!(t2["source_project_id"], admin_project.as_str());
    let t2_id = t2["id"].as_str().expect("id").to_string();
    wait_for(&server, &admin, "volume", &second, "awaiting-transfer");
    let r = req_mv(
        &server,
        "DELETE",
        &format!("/volume-transfers/{t2_id}"),
        &admin,
        "3.55",
    );
    assert_eq!(r.status, 202, "{}", r.text);
    wait_for(&server, &admin, "volume", &second, "available");

    // The taker's quota: a limit of 1 volume refuses a second one.
    let r = req(
        &server,
        "PUT",
        &format!("/os-quota-sets/{other_project}"),
        &admin,
        Some(&json!({"quota_set": {"volumes": 1}})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = req(
        &server,
        "POST",
        "/os-volume-transfer",
        &admin,
        Some(&json!({"transfer": {"volume_id": second}})),
    );
    let t3 = r.json()["transfer"].clone();
    let r = req(
        &server,
        "POST",
        &format!(
            "/os-volume-transfer/{}/accept",
            t3["id"].as_str().expect("id")
        ),
        &other,
        Some(&json!({"accept": {"auth_key": t3["auth_key"]}})),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    wait_for(&server, &admin, "volume", &second, "awaiting-transfer");
}

/// The attachments API on the ops seam: absent below 3.27; create reserves,
/// update with a connector attaches (the connection info names the file),
/// os-complete makes the volume in-use, delete frees it; read-only volumes
/// attach `ro` only.
#[test]
fn attachments_reserve_connect_complete_and_delete() {
    let server = Server::start();
    let admin = server.admin_token();
    let vol = create_volume(&server, &admin, json!({"size": 1}));
    wait_for(&server, &admin, "volume", &vol, "available");
    let instance = "0b0e4f5c-8d7a-4b59-a1a3-0d2a7c6f4e11";
    let body = json!({"attachment": {"volume_uuid": vol, "instance_uuid": instance}});
    assert_eq!(
        req_mv_body(&server, "POST", "/attachments", &admin, "3.26", &body).status,
        404
    );
    let r = req_mv_body(&server, "POST", "/attachments", &admin, "3.54", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json()["attachment"].clone();
    let aid = a["id"].as_str().expect("id").to_string();
    assert_eq!(a["status"], "reserved");
    assert_eq!(a["instance"], instance);
    assert!(a["connection_info"].is_null());
    wait_for(&server, &admin, "volume", &vol, "reserved");
    // A second attachment of a volume that is not multiattach: refused.
    let r = req_mv_body(&server, "POST", "/attachments", &admin, "3.54", &body);
    assert_eq!(r.status, 400, "{}", r.text);

    let connector = json!({"attachment": {"connector": {"host": "yunhe", "mountpoint": "/dev/vdb", "platform": "x86_64"}}});
    let r = req_mv_body(
        &server,
        "PUT",
        &format!("/attachments/{aid}"),
        &admin,
        "3.54",
        &connector,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json()["attachment"].clone();
    assert_eq!(a["status"], "attaching");
    assert_eq!(a["attach_mode"], "rw");
    assert_eq!(a["connection_info"]["driver_volume_type"], "file");
    let path = a["connection_info"]["data"]["device_path"]
        .as_str()
        .expect("path")
        .to_string();
    assert_eq!(PathBuf::from(path), volume_file(&server.state_dir, &vol));
    let r = req_mv_body(
        &server,
        "POST",
        &format!("/attachments/{aid}/action"),
        &admin,
        "3.44",
        &json!({"os-complete": null}),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let v = wait_for(&server, &admin, "volume", &vol, "in-use");
    assert_eq!(v["attachments"][0]["attachment_id"], aid.as_str());
    assert_eq!(v["attachments"][0]["server_id"], instance);
    let listed = req_mv(
        &server,
        "GET",
        &format!("/attachments/detail?volume_id={vol}"),
        &admin,
        "3.27",
    )
    .json();
    assert_eq!(listed["attachments"][0]["status"], "attached", "{listed}");
    // In use: not deleted.
    assert_eq!(
        req(&server, "DELETE", &format!("/volumes/{vol}"), &admin, None).status,
        400
    );
    let r = req_mv(
        &server,
        "DELETE",
        &format!("/attachments/{aid}"),
        &admin,
        "3.27",
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["attachments"], json!([]));
    wait_for(&server, &admin, "volume", &vol, "available");
    assert_eq!(
        req_mv(
            &server,
            "GET",
            &format!("/attachments/{aid}"),
            &admin,
            "3.27"
        )
        .status,
        404
    );

    // Read-only volumes: `rw` refused (nothing left reserved), `ro` taken.
    let r = req(
        &server,
        "POST",
        &format!("/volumes/{vol}/action"),
        &admin,
        Some(&json!({"os-update_readonly_flag": {"readonly": true}})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let rw = json!({"attachment": {"volume_uuid": vol, "instance_uuid": instance, "mode": "rw", "connector": {"host": "yunhe"}}});
    let r = req_mv_body(&server, "POST", "/attachments", &admin, "3.54", &rw);
    assert_eq!(r.status, 400, "{}", r.text);
    wait_for(&server, &admin, "volume", &vol, "available");
    let ro = json!({"attachment": {"volume_uuid": vol, "instance_uuid": instance, "connector": {"host": "yunhe"}}});
    let r = req_mv_body(&server, "POST", "/attachments", &admin, "3.54", &ro);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["attachment"]["attach_mode"], "ro");
    assert_eq!(r.json()["attachment"]["status"], "attaching");
}

/// The metadata sub-resource volumes and snapshots share: merge, replace, put one key,
/// show, delete, and the refusals in Cinder's words with each record's own noun.
#[test]
fn metadata_of_volumes_and_snapshots() {
    let server = Server::start();
    let admin = server.admin_token();
    let id = create_volume(&server, &admin, json!({"size": 1, "metadata": {"a": "1"}}));
    wait_for(&server, &admin, "volume", &id, "available");
    let snap = req(
        &server,
        "POST",
        "/snapshots",
        &admin,
        Some(&json!({"snapshot": {"volume_id": id, "metadata": {"a": "1"}}})),
    );
    assert_eq!(snap.status, 202, "{}", snap.text);
    let snap_id = snap.json()["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(&server, &admin, "snapshot", &snap_id, "available");
    for (collection, owner, noun) in [
        ("volumes", &id, "Volume"),
        ("snapshots", &snap_id, "Snapshot"),
    ] {
        let base = format!("/{collection}/{owner}/metadata");
        let merged = req(
            &server,
            "POST",
            &base,
            &admin,
            Some(&json!({"metadata": {"b": "2"}})),
        );
        assert_eq!(merged.status, 200, "{}", merged.text);
        assert_eq!(merged.json()["metadata"], json!({"a": "1", "b": "2"}));
        let put_one = put(
            &server,
            &format!("{base}/c"),
            &admin,
            json!({"meta": {"c": "3"}}),
        );
        assert_eq!(put_one.status, 200, "{}", put_one.text);
        assert_eq!(put_one.json()["meta"], json!({"c": "3"}));
        let mismatch = put(
            &server,
            &format!("{base}/c"),
            &admin,
            json!({"meta": {"d": "4"}}),
        );
        assert_eq!(mismatch.status, 400);
        assert!(
            mismatch.text.contains("Request body and URI mismatch"),
            "{}",
            mismatch.text
        );
        let shown = req(&server, "GET", &format!("{base}/c"), &admin, None);
        assert_eq!(shown.json()["meta"], json!({"c": "3"}));
        let replaced = put(&server, &base, &admin, json!({"metadata": {"z": "9"}}));
        assert_eq!(replaced.json()["metadata"], json!({"z": "9"}));
        let listed = req(&server, "GET", &base, &admin, None);
        assert_eq!(listed.json()["metadata"], json!({"z": "9"}));
        let missing = req(&server, "GET", &format!("{base}/a"), &admin, None);
        assert_eq!(missing.status, 404);
        assert!(
            missing
                .text
                .contains(&format!("{noun} {owner} has no metadata with key a.")),
            "{}",
            missing.text
        );
        assert_eq!(
            req(&server, "DELETE", &format!("{base}/z"), &admin, None).status,
            200
        );
        let gone = req(&server, "DELETE", &format!("{base}/z"), &admin, None);
        assert_eq!(gone.status, 404);
        assert!(
            gone.text
                .contains(&format!("{noun} {owner} has no metadata with key z.")),
            "{}",
            gone.text
        );
    }
}
