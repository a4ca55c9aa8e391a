//! Nova v2.1 foundation against the real `yunhe serve` on an ephemeral port.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::{Reply, Server, http};

/// A request with a token and a compute microversion.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    mv: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut headers = vec![("X-Auth-Token", token.to_string())];
    if let Some(mv) = mv {
        headers.push(("OpenStack-API-Version", format!("compute {mv}")));
    }
    http(&server.addr, method, path, &headers, body)
}

/// Creates a member user in a new project and returns (project id, token).
fn member(server: &Server, admin: &str, name: &str) -> (String, String) {
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
        .get("/identity/v3/roles?name=member", Some(admin))
        .json();
    let role_id = roles["roles"][0]["id"]
        .as_str()
        .expect("member role")
        .to_string();
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

#[test]
fn versions_and_microversion_negotiation() {
    let server = Server::start();
    let root = server.get("/compute/", None);
    assert_eq!(root.status, 200);
    let v21 = &root.json()["versions"][1];
    assert_eq!(v21["id"], "v2.1");
    assert_eq!(v21["min_version"], "2.1");
    let max = v21["version"].as_str().expect("max").to_string();
    let doc = server.get("/compute/v2.1", None).json();
    assert_eq!(doc["version"]["version"], max);

    let token = server.admin_token();
    let plain = call(&server, "GET", "/compute/v2.1/flavors", &token, None, None);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("openstack-api-version"), Some("compute 2.1"));
    assert_eq!(plain.header("x-openstack-nova-api-version"), Some("2.1"));
    assert!(
        plain
            .header("vary")
            .is_some_and(|v| v.contains("OpenStack-API-Version"))
    );

    let latest = call(
        &server,
        "GET",
        "/compute/v2.1/flavors",
        &token,
        Some("latest"),
        None,
    );
    assert_eq!(
        latest.header("openstack-api-version"),
        Some(format!("compute {max}").as_str())
    );
    let legacy = http(
        &server.addr,
        "GET",
        "/compute/v2.1/flavors",
        &[
            ("X-Auth-Token", token.clone()),
            ("X-OpenStack-Nova-API-Version", "2.10".into()),
        ],
        None,
    );
    assert_eq!(legacy.header("x-openstack-nova-api-version"), Some("2.10"));
    let too_new = call(
        &server,
        "GET",
        "/compute/v2.1/flavors",
        &token,
        Some("2.999"),
        None,
    );
    assert_eq!(too_new.status, 406);
    let bad = call(
        &server,
        "GET",
        "/compute/v2.1/flavors",
        &token,
        Some("two"),
        None,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["badRequest"]["message"].is_string());

    // With the project id in the path, and the major version by media type.
    let project_id = server
        .get("/identity/v3/auth/projects", Some(&token))
        .json()["projects"][0]["id"]
        .as_str()
        .expect("project")
        .to_string();
    let with_project = call(
        &server,
        "GET",
        &format!("/compute/v2.1/{project_id}/flavors/42"),
        &token,
        None,
        None,
    );
    assert_eq!(with_project.status, 200, "{}", with_project.text);
    assert_eq!(with_project.json()["flavor"]["name"], "m1.nano");
    let by_mime = http(
        &server.addr,
        "GET",
        &format!("/compute/{project_id}/flavors/42"),
        &[
            ("X-Auth-Token", token.clone()),
            (
                "Accept",
                "application/vnd.openstack.compute.v2.1+json".into(),
            ),
        ],
        None,
    );
    assert_eq!(by_mime.status, 200, "{}", by_mime.text);
    let missing = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/nope",
        &token,
        None,
        None,
    );
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["itemNotFound"]["code"], 404);
    assert!(missing.header("x-openstack-request-id").is_some());
    let wrong_method = call(
        &server,
        "DELETE",
        "/compute/v2.1/limits",
        &token,
        None,
        None,
    );
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["badMethod"]["code"], 405);
    let unauthenticated = server.get("/compute/v2.1/flavors", None);
    assert_eq!(unauthenticated.status, 401);
}

/// The flavors `GET /flavors/detail?is_public=none` lists for `token`, by id.
fn listed_flavors(server: &Server, token: &str) -> HashMap<String, Value> {
    call(
        server,
        "GET",
        "/compute/v2.1/flavors/detail?is_public=none",
        token,
        Some("2.61"),
        None,
    )
    .json()["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .filter_map(|f| Some((f["id"].as_str()?.to_string(), f.clone())))
        .collect()
}

#[test]
fn flavors_crud_extra_specs_access_and_pagination() {
    let server = Server::start();
    let admin = server.admin_token();
    // The list is served from memory between writes: each write below must show in the next.
    assert!(!listed_flavors(&server, &admin).contains_key("p1"));
    let list = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/detail",
        &admin,
        None,
        None,
    )
    .json();
    let names: Vec<&str> = list["flavors"]
        .as_array()
        .expect("flavors")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for wanted in [
        "m1.nano",
        "m1.micro",
        "m1.tiny",
        "m1.xlarge",
        "cirros256",
        "ds512M",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    let page = call(
        &server,
        "GET",
        "/compute/v2.1/flavors?limit=2",
        &admin,
        None,
        None,
    )
    .json();
    assert_eq!(page["flavors"].as_array().map(Vec::len), Some(2));
    let next = page["flavors_links"][0]["href"]
        .as_str()
        .expect("next link");
    assert!(next.contains("marker="), "{next}");
    let big = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/detail?minRam=4096",
        &admin,
        None,
        None,
    )
    .json();
    assert!(
        big["flavors"]
            .as_array()
            .expect("list")
            .iter()
            .all(|f| f["ram"].as_i64() >= Some(4096))
    );
    // The rendered views are kept per kind of view: lists at different microversions, one
    // after the other with no write between them, each get their own.
    let at = |mv: Option<&str>| {
        call(
            &server,
            "GET",
            "/compute/v2.1/flavors/detail",
            &admin,
            mv,
            None,
        )
        .json()["flavors"][0]
            .clone()
    };
    for _ in 0..2 {
        let old = at(None);
        assert_eq!(old["swap"], "", "{old}");
        assert!(old.get("description").is_none() && old.get("extra_specs").is_none());
        let new = at(Some("2.75"));
        assert_eq!(new["swap"], 0, "{new}");
        assert!(new.get("description").is_some() && new["extra_specs"].is_object());
        let brief = call(
            &server,
            "GET",
            "/compute/v2.1/flavors",
            &admin,
            Some("2.75"),
            None,
        )
        .json()["flavors"][0]
            .clone();
        assert!(brief.get("ram").is_none() && brief.get("description").is_some());
    }

    let created = call(
        &server,
        "POST",
        "/compute/v2.1/flavors",
        &admin,
        Some("2.61"),
        Some(
            &json!({"flavor": {"name": "private1", "ram": 64, "vcpus": 1, "disk": 0,
            "id": "p1", "os-flavor-access:is_public": false, "description": "tiny"}}),
        ),
    );
    assert_eq!(created.status, 200, "{}", created.text);
    let flavor = created.json()["flavor"].clone();
    assert_eq!(flavor["description"], "tiny");
    assert_eq!(flavor["extra_specs"], json!({}));
    let dup = call(
        &server,
        "POST",
        "/compute/v2.1/flavors",
        &admin,
        None,
        Some(&json!({"flavor": {"name": "private1", "ram": 64, "vcpus": 1, "disk": 0}})),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(listed_flavors(&server, &admin)["p1"]["description"], "tiny");

    let specs = call(
        &server,
        "POST",
        "/compute/v2.1/flavors/p1/os-extra_specs",
        &admin,
        None,
        Some(&json!({"extra_specs": {"hw:cpu_policy": "shared"}})),
    );
    assert_eq!(specs.status, 200, "{}", specs.text);
    let one = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/p1/os-extra_specs/hw:cpu_policy",
        &admin,
        None,
        None,
    );
    assert_eq!(one.json()["hw:cpu_policy"], "shared");
    assert_eq!(
        listed_flavors(&server, &admin)["p1"]["extra_specs"],
        json!({"hw:cpu_policy": "shared"})
    );

    let (project, user_token) = member(&server, &admin, "alice");
    assert!(!listed_flavors(&server, &user_token).contains_key("p1"));
    let hidden = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/p1",
        &user_token,
        None,
        None,
    );
    assert_eq!(hidden.status, 404);
    let denied = call(
        &server,
        "POST",
        "/compute/v2.1/flavors",
        &user_token,
        None,
        Some(&json!({"flavor": {"name": "x", "ram": 64, "vcpus": 1, "disk": 0}})),
    );
    assert_eq!(denied.status, 403);
    assert!(denied.json()["forbidden"]["message"].is_string());
    let granted = call(
        &server,
        "POST",
        "/compute/v2.1/flavors/p1/action",
        &admin,
        None,
        Some(&json!({"addTenantAccess": {"tenant": project}})),
    );
    assert_eq!(granted.status, 200, "{}", granted.text);
    assert_eq!(granted.json()["flavor_access"][0]["tenant_id"], project);
    let visible = call(
        &server,
        "GET",
        "/compute/v2.1/flavors/p1",
        &user_token,
        None,
        None,
    );
    assert_eq!(visible.status, 200);
    assert!(listed_flavors(&server, &user_token).contains_key("p1"));
    let deleted = call(
        &server,
        "DELETE",
        "/compute/v2.1/flavors/p1",
        &admin,
        None,
        None,
    );
    assert_eq!(deleted.status, 202);
    assert!(!listed_flavors(&server, &admin).contains_key("p1"));
    assert!(!listed_flavors(&server, &user_token).contains_key("p1"));
}

#[test]
fn keypairs_import_generate_fingerprint_and_quota() {
    let server = Server::start();
    let admin = server.admin_token();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx+qyD3RU4oPsmaRyNRVsRoHtrP2ioE7ZHPFJz51aXc me@host";
    let imported = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        Some("2.2"),
        Some(&json!({"keypair": {"name": "k1", "public_key": key}})),
    );
    assert_eq!(imported.status, 201, "{}", imported.text);
    let body = imported.json();
    assert_eq!(body["keypair"]["type"], "ssh");
    // md5 of the decoded blob, as `ssh-keygen -l -E md5` prints it.
    let fingerprint = body["keypair"]["fingerprint"]
        .as_str()
        .expect("fingerprint");
    assert_eq!(fingerprint.len(), 47);
    let generated = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        None,
        Some(&json!({"keypair": {"name": "gen"}})),
    );
    assert_eq!(generated.status, 200, "{}", generated.text);
    assert!(
        generated.json()["keypair"]["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );
    let refused = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        Some("2.92"),
        Some(&json!({"keypair": {"name": "gen2"}})),
    );
    assert_eq!(refused.status, 400);
    let bad = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        None,
        Some(&json!({"keypair": {"name": "bad", "public_key": "ssh-rsa notbase64"}})),
    );
    assert_eq!(bad.status, 400);
    let dup = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        None,
        Some(&json!({"keypair": {"name": "k1", "public_key": key}})),
    );
    assert_eq!(dup.status, 409);
    let list = call(
        &server,
        "GET",
        "/compute/v2.1/os-keypairs?limit=1",
        &admin,
        Some("2.35"),
        None,
    )
    .json();
    assert_eq!(list["keypairs"].as_array().map(Vec::len), Some(1));
    assert!(list["keypairs_links"][0]["href"].is_string());
    let shown = call(
        &server,
        "GET",
        "/compute/v2.1/os-keypairs/k1",
        &admin,
        None,
        None,
    )
    .json();
    assert_eq!(shown["keypair"]["fingerprint"], fingerprint);

    // Quota: set the admin project's key_pairs limit to the current count.
    let project_id = server
        .get("/identity/v3/auth/projects", Some(&admin))
        .json()["projects"][0]["id"]
        .as_str()
        .expect("project")
        .to_string();
    let set = call(
        &server,
        "PUT",
        &format!("/compute/v2.1/os-quota-sets/{project_id}"),
        &admin,
        None,
        Some(&json!({"quota_set": {"key_pairs": 2}})),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json()["quota_set"]["key_pairs"], 2);
    let over = call(
        &server,
        "POST",
        "/compute/v2.1/os-keypairs",
        &admin,
        None,
        Some(&json!({"keypair": {"name": "k3"}})),
    );
    assert_eq!(over.status, 403, "{}", over.text);
    let deleted = call(
        &server,
        "DELETE",
        "/compute/v2.1/os-keypairs/k1",
        &admin,
        Some("2.2"),
        None,
    );
    assert_eq!(deleted.status, 204);
}

#[test]
fn quotas_limits_hosts_and_server_groups() {
    let server = Server::start();
    let admin = server.admin_token();
    let (project, user_token) = member(&server, &admin, "bob");
    let defaults = call(
        &server,
        "GET",
        &format!("/compute/v2.1/os-quota-sets/{project}/defaults"),
        &user_token,
        None,
        None,
    )
    .json();
    assert_eq!(defaults["quota_set"]["instances"], 10);
    assert_eq!(defaults["quota_set"]["floating_ips"], 10);
    let modern = call(
        &server,
        "GET",
        &format!("/compute/v2.1/os-quota-sets/{project}/detail"),
        &user_token,
        Some("2.57"),
        None,
    )
    .json();
    assert_eq!(modern["quota_set"]["cores"]["limit"], 20);
    assert!(modern["quota_set"].get("floating_ips").is_none());
    assert!(modern["quota_set"].get("injected_files").is_none());
    let forbidden = call(
        &server,
        "PUT",
        &format!("/compute/v2.1/os-quota-sets/{project}"),
        &user_token,
        None,
        Some(&json!({"quota_set": {"cores": 1}})),
    );
    assert_eq!(forbidden.status, 403);
    let set = call(
        &server,
        "PUT",
        &format!("/compute/v2.1/os-quota-sets/{project}"),
        &admin,
        None,
        Some(&json!({"quota_set": {"server_groups": 1}})),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let unknown = call(
        &server,
        "GET",
        "/compute/v2.1/os-quota-sets/no-such-project",
        &admin,
        None,
        None,
    );
    assert_eq!(unknown.status, 400);
    let limits = call(
        &server,
        "GET",
        "/compute/v2.1/limits",
        &user_token,
        None,
        None,
    )
    .json();
    assert_eq!(limits["limits"]["absolute"]["maxServerGroups"], 1);
    assert_eq!(limits["limits"]["absolute"]["totalInstancesUsed"], 0);

    let group = call(
        &server,
        "POST",
        "/compute/v2.1/os-server-groups",
        &user_token,
        Some("2.64"),
        Some(
            &json!({"server_group": {"name": "g1", "policy": "anti-affinity",
            "rules": {"max_server_per_host": 1}}}),
        ),
    );
    assert_eq!(group.status, 200, "{}", group.text);
    let g = group.json()["server_group"].clone();
    assert_eq!(g["rules"]["max_server_per_host"], 1);
    let over = call(
        &server,
        "POST",
        "/compute/v2.1/os-server-groups",
        &user_token,
        None,
        Some(&json!({"server_group": {"name": "g2", "policies": ["affinity"]}})),
    );
    assert_eq!(over.status, 403, "{}", over.text);
    let old_view = call(
        &server,
        "GET",
        &format!(
            "/compute/v2.1/os-server-groups/{}",
            g["id"].as_str().expect("id")
        ),
        &user_token,
        None,
        None,
    )
    .json();
    assert_eq!(
        old_view["server_group"]["policies"],
        json!(["anti-affinity"])
    );
    let gone = call(
        &server,
        "DELETE",
        &format!(
            "/compute/v2.1/os-server-groups/{}",
            g["id"].as_str().expect("id")
        ),
        &user_token,
        None,
        None,
    );
    assert_eq!(gone.status, 204);

    let zones = call(
        &server,
        "GET",
        "/compute/v2.1/os-availability-zone",
        &user_token,
        None,
        None,
    )
    .json();
    assert_eq!(zones["availabilityZoneInfo"][0]["zoneName"], "nova");
    let stats = call(
        &server,
        "GET",
        "/compute/v2.1/os-hypervisors/statistics",
        &admin,
        None,
        None,
    );
    assert_eq!(stats.status, 200);
    assert!(stats.json()["hypervisor_statistics"]["vcpus"].as_i64() >= Some(1));
    assert!(stats.json()["hypervisor_statistics"]["memory_mb"].as_i64() > Some(0));
    let gone_stats = call(
        &server,
        "GET",
        "/compute/v2.1/os-hypervisors/statistics",
        &admin,
        Some("2.88"),
        None,
    );
    assert_eq!(gone_stats.status, 404);
    let hv = call(
        &server,
        "GET",
        "/compute/v2.1/os-hypervisors/detail",
        &admin,
        Some("2.53"),
        None,
    )
    .json();
    let hv_id = hv["hypervisors"][0]["id"]
        .as_str()
        .expect("uuid id")
        .to_string();
    let one = call(
        &server,
        "GET",
        &format!("/compute/v2.1/os-hypervisors/{hv_id}"),
        &admin,
        Some("2.53"),
        None,
    );
    assert_eq!(one.status, 200);
    let audit = call(
        &server,
        "GET",
        "/compute/v2.1/os-instance_usage_audit_log",
        &admin,
        None,
        None,
    );
    assert_eq!(audit.json()["instance_usage_audit_logs"]["num_hosts"], 1);
    let bad_time = call(
        &server,
        "GET",
        "/compute/v2.1/os-instance_usage_audit_log/not-a-time",
        &admin,
        None,
        None,
    );
    assert_eq!(bad_time.status, 400);
    let hosts = call(&server, "GET", "/compute/v2.1/os-hosts", &admin, None, None).json();
    let host_name = hosts["hosts"][0]["host_name"]
        .as_str()
        .expect("host")
        .to_string();
    assert_eq!(hosts["hosts"].as_array().map(Vec::len), Some(2));
    let detail = call(
        &server,
        "GET",
        &format!("/compute/v2.1/os-hosts/{host_name}"),
        &admin,
        None,
        None,
    );
    assert_eq!(detail.json()["host"][0]["resource"]["project"], "(total)");
    let removed = call(
        &server,
        "GET",
        "/compute/v2.1/os-hosts",
        &admin,
        Some("2.43"),
        None,
    );
    assert_eq!(removed.status, 404);
    let services = call(
        &server,
        "GET",
        "/compute/v2.1/os-services",
        &admin,
        None,
        None,
    )
    .json();
    let binaries: Vec<&str> = services["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["binary"].as_str())
        .collect();
    assert_eq!(binaries, ["nova-scheduler", "nova-compute"]);
    let denied = call(
        &server,
        "GET",
        "/compute/v2.1/os-services",
        &user_token,
        None,
        None,
    );
    assert_eq!(denied.status, 403);
    let usage = call(
        &server,
        "GET",
        &format!("/compute/v2.1/os-simple-tenant-usage/{project}"),
        &user_token,
        None,
        None,
    );
    assert_eq!(usage.status, 200);
    // A project without servers in the window: Nova answers an empty usage.
    assert_eq!(usage.json()["tenant_usage"], json!({}));
}

#[test]
fn aggregates_hold_this_host_and_metadata() {
    let server = Server::start();
    let admin = server.admin_token();
    let created = call(
        &server,
        "POST",
        "/compute/v2.1/os-aggregates",
        &admin,
        None,
        Some(&json!({"aggregate": {"name": "rack1", "availability_zone": "az1"}})),
    );
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json()["aggregate"]["id"].as_i64().expect("id");
    let dup = call(
        &server,
        "POST",
        "/compute/v2.1/os-aggregates",
        &admin,
        None,
        Some(&json!({"aggregate": {"name": "rack1"}})),
    );
    assert_eq!(dup.status, 409);
    let host = call(
        &server,
        "GET",
        "/compute/v2.1/os-hypervisors",
        &admin,
        None,
        None,
    )
    .json()["hypervisors"][0]["hypervisor_hostname"]
        .as_str()
        .expect("host")
        .to_string();
    let action = |body: Value| {
        call(
            &server,
            "POST",
            &format!("/compute/v2.1/os-aggregates/{id}/action"),
            &admin,
            None,
            Some(&body),
        )
    };
    assert_eq!(action(json!({"add_host": {"host": host}})).status, 200);
    assert_eq!(action(json!({"add_host": {"host": host}})).status, 409);
    assert_eq!(
        action(json!({"add_host": {"host": "elsewhere"}})).status,
        404
    );
    let meta = action(json!({"set_metadata": {"metadata": {"ssd": "true"}}})).json();
    assert_eq!(meta["aggregate"]["metadata"]["ssd"], "true");
    assert_eq!(meta["aggregate"]["metadata"]["availability_zone"], "az1");
    let busy = call(
        &server,
        "DELETE",
        &format!("/compute/v2.1/os-aggregates/{id}"),
        &admin,
        None,
        None,
    );
    assert_eq!(busy.status, 400);
    assert_eq!(action(json!({"remove_host": {"host": host}})).status, 200);
    let gone = call(
        &server,
        "DELETE",
        &format!("/compute/v2.1/os-aggregates/{id}"),
        &admin,
        None,
        None,
    );
    assert_eq!(gone.status, 200);
}

/// The image proxy answers below 2.36 from Glance's records and is gone at 2.36.
#[test]
fn image_proxy_lists_glance_images_below_2_36() {
    let server = Server::start();
    let admin = server.admin_token();
    let created = server.request(
        "POST",
        "/image/v2/images",
        Some(&admin),
        Some(
            &json!({"name": "proxied", "disk_format": "raw", "container_format": "bare",
                     "visibility": "public", "hw_rng_model": "virtio"}),
        ),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["id"].as_str().expect("id").to_string();
    let upload = support::http_bytes(
        &server.addr,
        "PUT",
        &format!("/image/v2/images/{id}/file"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        &[0u8; 4096],
    );
    assert_eq!(upload.status, 204);

    let list = call(
        &server,
        "GET",
        "/compute/v2.1/images",
        &admin,
        Some("2.35"),
        None,
    );
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        list.json()["images"]
            .as_array()
            .expect("images")
            .iter()
            .any(|i| i["id"] == id.as_str())
    );
    let detail = call(
        &server,
        "GET",
        "/compute/v2.1/images/detail?name=proxied",
        &admin,
        None,
        None,
    );
    let image = &detail.json()["images"][0];
    assert_eq!(image["status"], "ACTIVE");
    assert_eq!(image["OS-EXT-IMG-SIZE:size"], 4096);
    assert_eq!(image["metadata"]["hw_rng_model"], "virtio");
    let show = call(
        &server,
        "GET",
        &format!("/compute/v2.1/images/{id}"),
        &admin,
        Some("2.1"),
        None,
    );
    assert_eq!(show.json()["image"]["name"], "proxied");
    let missing = call(
        &server,
        "GET",
        "/compute/v2.1/images/nope",
        &admin,
        Some("2.1"),
        None,
    );
    assert_eq!(missing.status, 404);
    assert!(missing.json().get("itemNotFound").is_some());
    let gone = call(
        &server,
        "GET",
        "/compute/v2.1/images",
        &admin,
        Some("2.36"),
        None,
    );
    assert_eq!(gone.status, 404);
}
