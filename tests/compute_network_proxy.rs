//! Nova's network proxies against the real `yunhe serve` (dataplane off):
//! the proxy APIs below 2.36 (os-security-groups, os-security-group-rules,
//! os-floating-ips, os-floating-ip-pools, os-networks, os-tenant-networks)
//! with their formats, errors, 404 from 2.36 and another project's 404;
//! and, on a server booted with a port (the echo guest on /dev/kvm,
//! skipped without it), add/removeSecurityGroup, the server's
//! os-security-groups, add/removeFloatingIp (404 from 2.44) and the
//! refused add/removeFixedIp.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, VmmStateDir, echo_image, http, kvm_usable, member_of_new_project};

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

fn neutron(server: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    server.request(method, &format!("/network/v2.0{path}"), Some(token), body)
}

fn message(reply: &Reply) -> String {
    let body = reply.json();
    body.as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// A network with one IPv4 subnet: (network id, subnet id).
fn network(server: &Server, token: &str, name: &str, cidr: &str, extra: Value) -> (String, String) {
    let mut body = json!({"network": {"name": name}});
    if let (Some(b), Some(e)) = (body["network"].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let net = neutron(server, token, "POST", "/networks", Some(&body));
    assert_eq!(net.status, 201, "{}", net.text);
    let id = id_of(&net.json()["network"]);
    let sub = neutron(
        server,
        token,
        "POST",
        "/subnets",
        Some(&json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4}})),
    );
    assert_eq!(sub.status, 201, "{}", sub.text);
    (id, id_of(&sub.json()["subnet"]))
}

#[test]
fn proxy_apis_below_2_36() {
    let server = Server::start();
    let admin = server.admin_token();
    let (_, other) = member_of_new_project(&server, &admin, "proxy-other");
    let mv = "2.35";

    // Gone from 2.36 on, every one of them.
    for path in [
        "/os-security-groups",
        "/os-floating-ips",
        "/os-floating-ip-pools",
        "/os-networks",
        "/os-tenant-networks",
    ] {
        let r = nova(&server, &admin, "2.36", "GET", path, None);
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert_eq!(
            nova(&server, &admin, mv, "GET", path, None).status,
            200,
            "{path}"
        );
    }
    let r = nova(
        &server,
        &admin,
        "2.36",
        "POST",
        "/os-security-group-rules",
        Some(&json!({"security_group_rule": {}})),
    );
    assert_eq!(r.status, 404);

    // Security groups: the list makes the project's default group.
    let list = nova(&server, &admin, mv, "GET", "/os-security-groups", None);
    let groups = list.json()["security_groups"].clone();
    let default = groups
        .as_array()
        .and_then(|l| l.iter().find(|g| g["name"] == "default").cloned())
        .expect("default group");
    assert!(default["tenant_id"].is_string());
    // Its two ingress rules come from the group itself; the egress rules
    // are not shown.
    let rules = default["rules"].as_array().cloned().unwrap_or_default();
    assert_eq!(rules.len(), 2, "{default}");
    assert_eq!(rules[0]["group"]["name"], "default");
    assert_eq!(rules[0]["ip_range"], json!({}));

    let bad = nova(
        &server,
        &admin,
        mv,
        "POST",
        "/os-security-groups",
        Some(&json!({"security_group": {"name": "web"}})),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    let made = nova(
        &server,
        &admin,
        mv,
        "POST",
        "/os-security-groups",
        Some(&json!({"security_group": {"name": "web", "description": "web servers"}})),
    );
    assert_eq!(made.status, 200, "{}", made.text);
    let web = made.json()["security_group"].clone();
    assert_eq!(web["name"], "web");
    assert_eq!(web["description"], "web servers");
    assert_eq!(web["rules"], json!([]));
    let web_id = id_of(&web);
    // Neutron sees the same group.
    let seen = neutron(
        &server,
        &admin,
        "GET",
        &format!("/security-groups/{web_id}"),
        None,
    );
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["security_group"]["description"], "web servers");

    let updated = nova(
        &server,
        &admin,
        mv,
        "PUT",
        &format!("/os-security-groups/{web_id}"),
        Some(&json!({"security_group": {"name": "www", "description": "renamed"}})),
    );
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json()["security_group"]["name"], "www");
    let shown = nova(
        &server,
        &admin,
        mv,
        "GET",
        &format!("/os-security-groups/{web_id}"),
        None,
    );
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["security_group"]["description"], "renamed");
    let missing = nova(
        &server,
        &admin,
        mv,
        "GET",
        "/os-security-groups/0a2b9f3e-7c55-4a6e-8d0a-2f5e1c3b4d6f",
        None,
    );
    assert_eq!(missing.status, 404);
    assert!(message(&missing).contains("not found"), "{}", missing.text);
    // Another project's member neither sees nor changes it.
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-security-groups/{web_id}"),
            None
        )
        .status,
        404
    );
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "DELETE",
            &format!("/os-security-groups/{web_id}"),
            None
        )
        .status,
        404
    );
    let theirs = nova(&server, &other, mv, "GET", "/os-security-groups", None).json();
    assert!(
        theirs["security_groups"]
            .as_array()
            .is_some_and(|l| l.iter().all(|g| g["id"] != web_id.as_str())),
        "{theirs}"
    );

    // Rules: a CIDR rule, a group rule, Nova's errors.
    let rule = |body: Value| {
        nova(
            &server,
            &admin,
            mv,
            "POST",
            "/os-security-group-rules",
            Some(&json!({ "security_group_rule": body })),
        )
    };
    let tcp = rule(json!({"parent_group_id": web_id, "ip_protocol": "tcp",
                          "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/8"}));
    assert_eq!(tcp.status, 200, "{}", tcp.text);
    let tcp = tcp.json()["security_group_rule"].clone();
    assert_eq!(tcp["ip_protocol"], "tcp");
    assert_eq!(tcp["from_port"], 22);
    assert_eq!(tcp["to_port"], 22);
    assert_eq!(tcp["ip_range"]["cidr"], "10.0.0.0/8");
    assert_eq!(tcp["group"], json!({}));
    assert_eq!(tcp["parent_group_id"], web_id.as_str());
    let default_id = id_of(&default);
    let icmp = rule(json!({"parent_group_id": web_id, "ip_protocol": "icmp",
                           "group_id": default_id}));
    assert_eq!(icmp.status, 200, "{}", icmp.text);
    let icmp = icmp.json()["security_group_rule"].clone();
    assert_eq!(icmp["from_port"], -1);
    assert_eq!(icmp["group"]["name"], "default");
    // Neutron has them as ingress rules.
    let n_rule = neutron(
        &server,
        &admin,
        "GET",
        &format!("/security-group-rules/{}", id_of(&tcp)),
        None,
    );
    assert_eq!(n_rule.json()["security_group_rule"]["direction"], "ingress");
    assert_eq!(n_rule.json()["security_group_rule"]["port_range_min"], 22);
    for (body, status) in [
        (
            json!({"parent_group_id": web_id, "ip_protocol": "tcp", "from_port": 30, "to_port": 20}),
            400,
        ),
        (
            json!({"parent_group_id": web_id, "ip_protocol": "tcp", "from_port": 0, "to_port": 20}),
            400,
        ),
        (
            json!({"parent_group_id": web_id, "ip_protocol": "gre", "from_port": 1, "to_port": 2}),
            400,
        ),
        (
            json!({"parent_group_id": web_id, "ip_protocol": "icmp", "from_port": 300, "to_port": 1}),
            400,
        ),
        (
            json!({"parent_group_id": web_id, "cidr": "10.0.0.0/8"}),
            400,
        ),
        (
            json!({"parent_group_id": web_id, "ip_protocol": "tcp", "from_port": 1, "to_port": 2, "cidr": "bogus"}),
            400,
        ),
        (json!({"parent_group_id": "nope"}), 400),
        (
            json!({"parent_group_id": "0a2b9f3e-7c55-4a6e-8d0a-2f5e1c3b4d6f", "ip_protocol": "tcp", "from_port": 1, "to_port": 2}),
            404,
        ),
        // The same rule again.
        (
            json!({"parent_group_id": web_id, "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/8"}),
            400,
        ),
    ] {
        let r = rule(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text);
    }
    let shown = nova(
        &server,
        &admin,
        mv,
        "GET",
        &format!("/os-security-groups/{web_id}"),
        None,
    );
    assert_eq!(
        shown.json()["security_group"]["rules"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Another project cannot add a rule to the group or delete one.
    let r = nova(
        &server,
        &other,
        mv,
        "POST",
        "/os-security-group-rules",
        Some(
            &json!({"security_group_rule": {"parent_group_id": web_id, "ip_protocol": "tcp",
                                             "from_port": 80, "to_port": 80}}),
        ),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let tcp_id = id_of(&tcp);
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "DELETE",
            &format!("/os-security-group-rules/{tcp_id}"),
            None
        )
        .status,
        404
    );
    assert_eq!(
        nova(
            &server,
            &admin,
            mv,
            "DELETE",
            &format!("/os-security-group-rules/{tcp_id}"),
            None
        )
        .status,
        202
    );
    assert_eq!(
        nova(
            &server,
            &admin,
            mv,
            "DELETE",
            &format!("/os-security-group-rules/{tcp_id}"),
            None
        )
        .status,
        404
    );
    // Deleting a group takes the rules naming it as their remote group
    // with it, as Neutron's cascade.
    let peer = nova(
        &server,
        &admin,
        mv,
        "POST",
        "/os-security-groups",
        Some(&json!({"security_group": {"name": "peer", "description": "peer"}})),
    );
    let peer_id = id_of(&peer.json()["security_group"]);
    let r = rule(json!({"parent_group_id": web_id, "ip_protocol": "udp", "group_id": peer_id}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["security_group_rule"]["from_port"], 1);
    assert_eq!(r.json()["security_group_rule"]["to_port"], 65535);
    let count = || {
        nova(
            &server,
            &admin,
            mv,
            "GET",
            &format!("/os-security-groups/{web_id}"),
            None,
        )
        .json()["security_group"]["rules"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(count(), Some(2));
    assert_eq!(
        nova(
            &server,
            &admin,
            mv,
            "DELETE",
            &format!("/os-security-groups/{peer_id}"),
            None
        )
        .status,
        202
    );
    assert_eq!(count(), Some(1));
    // The group is deleted (202).
    let del = nova(
        &server,
        &admin,
        mv,
        "DELETE",
        &format!("/os-security-groups/{web_id}"),
        None,
    );
    assert_eq!(del.status, 202, "{}", del.text);
    assert_eq!(
        nova(
            &server,
            &admin,
            mv,
            "GET",
            &format!("/os-security-groups/{web_id}"),
            None
        )
        .status,
        404
    );

    // Floating IPs: no pool yet.
    let none = nova(
        &server,
        &admin,
        mv,
        "POST",
        "/os-floating-ips",
        Some(&json!({})),
    );
    assert_eq!(none.status, 404, "{}", none.text);
    let (public, _) = network(
        &server,
        &admin,
        "public",
        "203.0.113.0/29",
        json!({"router:external": true}),
    );
    let (private, _) = network(&server, &admin, "private", "10.9.0.0/24", json!({}));
    let pools = nova(&server, &other, mv, "GET", "/os-floating-ip-pools", None);
    assert_eq!(pools.status, 200);
    assert_eq!(
        pools.json(),
        json!({"floating_ip_pools": [{"name": "public"}]})
    );
    let got = nova(
        &server,
        &other,
        mv,
        "POST",
        "/os-floating-ips",
        Some(&json!({"pool": "public"})),
    );
    assert_eq!(got.status, 200, "{}", got.text);
    let fip = got.json()["floating_ip"].clone();
    assert_eq!(fip["pool"], "public");
    assert!(fip["fixed_ip"].is_null());
    assert!(fip["instance_id"].is_null());
    let fip_id = id_of(&fip);
    assert!(
        fip["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("203.0.113."))
    );
    // The only external network is the default pool; by id works too.
    let second = nova(&server, &other, mv, "POST", "/os-floating-ips", None);
    assert_eq!(second.status, 200, "{}", second.text);
    let by_id = nova(
        &server,
        &other,
        mv,
        "POST",
        "/os-floating-ips",
        Some(&json!({"pool": public})),
    );
    assert_eq!(by_id.status, 200, "{}", by_id.text);
    let unknown = nova(
        &server,
        &other,
        mv,
        "POST",
        "/os-floating-ips",
        Some(&json!({"pool": "private"})),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    // A /29 has five addresses (one the gateway's): the pool runs dry.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(nova(&server, &other, mv, "POST", "/os-floating-ips", None).status);
    }
    assert!(statuses.contains(&404), "{statuses:?}");
    let listed = nova(&server, &other, mv, "GET", "/os-floating-ips", None).json();
    let mine = listed["floating_ips"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(mine.iter().any(|f| f["id"] == fip_id.as_str()));
    // The admin's list is its own project's only.
    let admins = nova(&server, &admin, mv, "GET", "/os-floating-ips", None).json();
    assert_eq!(admins["floating_ips"], json!([]));
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-floating-ips/{fip_id}"),
            None
        )
        .status,
        200
    );
    let (_, third) = member_of_new_project(&server, &admin, "proxy-third");
    assert_eq!(
        nova(
            &server,
            &third,
            mv,
            "GET",
            &format!("/os-floating-ips/{fip_id}"),
            None
        )
        .status,
        404
    );
    assert_eq!(
        nova(
            &server,
            &third,
            mv,
            "DELETE",
            &format!("/os-floating-ips/{fip_id}"),
            None
        )
        .status,
        404
    );
    for f in &mine {
        let d = nova(
            &server,
            &other,
            mv,
            "DELETE",
            &format!("/os-floating-ips/{}", id_of(f)),
            None,
        );
        assert_eq!(d.status, 202, "{}", d.text);
    }
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-floating-ips/{fip_id}"),
            None
        )
        .status,
        404
    );
    let n = neutron(&server, &other, "GET", "/floatingips", None).json();
    assert_eq!(n["floatingips"], json!([]));

    // Networks: the admin sees both (its project owns both); a member of
    // another project sees only what Neutron shows it (the external
    // network), and none of them as its own tenant networks.
    let nets = nova(&server, &admin, mv, "GET", "/os-networks", None).json();
    let labels: Vec<&str> = nets["networks"]
        .as_array()
        .map(|l| l.iter().filter_map(|n| n["label"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        labels.contains(&"public") && labels.contains(&"private"),
        "{nets}"
    );
    let one = nova(
        &server,
        &admin,
        mv,
        "GET",
        &format!("/os-networks/{private}"),
        None,
    );
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["network"]["label"], "private");
    assert!(one.json()["network"]["cidr"].is_null());
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-networks/{private}"),
            None
        )
        .status,
        404
    );
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-networks/{public}"),
            None
        )
        .status,
        200
    );
    let tenant = nova(&server, &admin, mv, "GET", "/os-tenant-networks", None).json();
    assert_eq!(
        tenant["networks"].as_array().map(Vec::len),
        Some(2),
        "{tenant}"
    );
    let t = nova(
        &server,
        &admin,
        mv,
        "GET",
        &format!("/os-tenant-networks/{private}"),
        None,
    );
    assert_eq!(t.status, 200);
    assert_eq!(
        t.json(),
        json!({"network": {"id": private, "label": "private", "cidr": "None"}})
    );
    let theirs = nova(&server, &other, mv, "GET", "/os-tenant-networks", None).json();
    assert_eq!(theirs["networks"], json!([]));
    assert_eq!(
        nova(
            &server,
            &other,
            mv,
            "GET",
            &format!("/os-tenant-networks/{private}"),
            None
        )
        .status,
        404
    );
    // nova-network's admin actions are gone.
    for (method, path) in [
        ("POST", "/os-networks".to_string()),
        ("POST", "/os-networks/add".to_string()),
        ("DELETE", format!("/os-networks/{private}")),
        ("POST", format!("/os-networks/{private}/action")),
        ("POST", "/os-tenant-networks".to_string()),
        ("DELETE", format!("/os-tenant-networks/{private}")),
    ] {
        let r = nova(&server, &admin, mv, method, &path, Some(&json!({})));
        assert_eq!(r.status, 410, "{method} {path}: {}", r.text);
    }
}

fn wait_active(server: &Server, token: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let reply = nova(
            server,
            token,
            "2.73",
            "GET",
            &format!("/servers/{id}"),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        let s = reply.json()["server"].clone();
        if s["status"] == "ACTIVE" && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(
            s["status"] != "ERROR",
            "server {id} in ERROR: {}",
            s["fault"]
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{id} not ACTIVE: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_security_group_and_floating_ip_actions() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("np", "proxy");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let (_, other) = member_of_new_project(&server, &admin, "actions-other");
    let image = echo_image(&server, &admin, &state.0);
    let (public, _) = network(
        &server,
        &admin,
        "public",
        "198.51.100.0/24",
        json!({"router:external": true}),
    );
    let (private, subnet) = network(&server, &admin, "private", "10.7.0.0/24", json!({}));
    let router = neutron(
        &server,
        &admin,
        "POST",
        "/routers",
        Some(&json!({"router": {"name": "r", "external_gateway_info": {"network_id": public}}})),
    );
    assert_eq!(router.status, 201, "{}", router.text);
    let router_id = id_of(&router.json()["router"]);
    let iface = neutron(
        &server,
        &admin,
        "PUT",
        &format!("/routers/{router_id}/add_router_interface"),
        Some(&json!({"subnet_id": subnet})),
    );
    assert_eq!(iface.status, 200, "{}", iface.text);
    let created = nova(
        &server,
        &admin,
        "2.37",
        "POST",
        "/servers",
        Some(
            &json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "42",
                                "networks": [{"uuid": private}]}}),
        ),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let id = id_of(&created.json()["server"]);
    let shown = wait_active(&server, &admin, &id);
    let fixed = shown["addresses"]["private"][0]["addr"]
        .as_str()
        .expect("fixed address")
        .to_string();
    let action = |token: &str, mv: &str, body: Value| {
        nova(
            &server,
            token,
            mv,
            "POST",
            &format!("/servers/{id}/action"),
            Some(&body),
        )
    };
    let groups_of = |token: &str| {
        let r = nova(
            &server,
            token,
            "2.73",
            "GET",
            &format!("/servers/{id}/os-security-groups"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["security_groups"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(groups_of(&admin), vec!["default".to_string()]);
    let full = nova(
        &server,
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{id}/os-security-groups"),
        None,
    )
    .json();
    assert!(full["security_groups"][0]["rules"].is_array());
    assert!(full["security_groups"][0]["tenant_id"].is_string());

    // addSecurityGroup by name (any microversion), 404 unknown, 409 when
    // two groups share the name, 400 without a name.
    let made = neutron(
        &server,
        &admin,
        "POST",
        "/security-groups",
        Some(&json!({"security_group": {"name": "web"}})),
    );
    assert_eq!(made.status, 201);
    let web_id = id_of(&made.json()["security_group"]);
    assert_eq!(
        action(&admin, "2.96", json!({"addSecurityGroup": {"name": "web"}})).status,
        202
    );
    let names = groups_of(&admin);
    assert!(
        names.contains(&"web".to_string()) && names.contains(&"default".to_string()),
        "{names:?}"
    );
    let port = neutron(
        &server,
        &admin,
        "GET",
        &format!("/ports?device_id={id}"),
        None,
    )
    .json();
    let sgs = port["ports"][0]["security_groups"].clone();
    assert!(
        sgs.as_array()
            .is_some_and(|l| l.iter().any(|g| g == web_id.as_str())),
        "{sgs}"
    );
    assert_eq!(
        action(&admin, "2.1", json!({"addSecurityGroup": {"name": "nope"}})).status,
        404
    );
    assert_eq!(
        action(&admin, "2.1", json!({"addSecurityGroup": {}})).status,
        400
    );
    assert_eq!(
        action(&admin, "2.1", json!({"addSecurityGroup": {"name": ""}})).status,
        400
    );
    for _ in 0..2 {
        let dup = neutron(
            &server,
            &admin,
            "POST",
            "/security-groups",
            Some(&json!({"security_group": {"name": "twin"}})),
        );
        assert_eq!(dup.status, 201);
    }
    assert_eq!(
        action(&admin, "2.1", json!({"addSecurityGroup": {"name": "twin"}})).status,
        409
    );
    // Another project's member: 404 for the server.
    assert_eq!(
        action(&other, "2.1", json!({"addSecurityGroup": {"name": "web"}})).status,
        404
    );
    assert_eq!(
        nova(
            &server,
            &other,
            "2.1",
            "GET",
            &format!("/servers/{id}/os-security-groups"),
            None
        )
        .status,
        404
    );
    // removeSecurityGroup by id; again: 404 (not on the server).
    assert_eq!(
        action(
            &admin,
            "2.1",
            json!({"removeSecurityGroup": {"name": web_id}})
        )
        .status,
        202
    );
    assert_eq!(groups_of(&admin), vec!["default".to_string()]);
    assert_eq!(
        action(
            &admin,
            "2.1",
            json!({"removeSecurityGroup": {"name": "web"}})
        )
        .status,
        404
    );

    // Floating IPs: allocate through the proxy, associate, see it in the
    // addresses, refuse a second server's removal, remove.
    let fip = nova(
        &server,
        &admin,
        "2.35",
        "POST",
        "/os-floating-ips",
        Some(&json!({"pool": "public"})),
    );
    assert_eq!(fip.status, 200, "{}", fip.text);
    let address = fip.json()["floating_ip"]["ip"]
        .as_str()
        .expect("ip")
        .to_string();
    let fip_id = id_of(&fip.json()["floating_ip"]);
    // Gone from 2.44 on (404 before anything else).
    assert_eq!(
        action(
            &admin,
            "2.44",
            json!({"addFloatingIp": {"address": address}})
        )
        .status,
        404
    );
    assert_eq!(
        action(
            &admin,
            "2.44",
            json!({"removeFloatingIp": {"address": address}})
        )
        .status,
        404
    );
    assert_eq!(
        action(&admin, "2.43", json!({"addFloatingIp": {}})).status,
        400
    );
    assert_eq!(
        action(
            &admin,
            "2.43",
            json!({"addFloatingIp": {"address": "bogus"}})
        )
        .status,
        400
    );
    assert_eq!(
        action(
            &admin,
            "2.43",
            json!({"addFloatingIp": {"address": "192.0.2.99"}})
        )
        .status,
        404
    );
    assert_eq!(
        action(
            &admin,
            "2.43",
            json!({"addFloatingIp": {"address": address, "fixed_address": "10.7.0.250"}})
        )
        .status,
        400
    );
    // Not associated yet: removing is a conflict.
    assert_eq!(
        action(
            &admin,
            "2.43",
            json!({"removeFloatingIp": {"address": address}})
        )
        .status,
        409
    );
    let add = action(
        &admin,
        "2.43",
        json!({"addFloatingIp": {"address": address, "fixed_address": fixed}}),
    );
    assert_eq!(add.status, 202, "{}", add.text);
    let f = neutron(
        &server,
        &admin,
        "GET",
        &format!("/floatingips/{fip_id}"),
        None,
    )
    .json();
    assert_eq!(f["floatingip"]["fixed_ip_address"], fixed.as_str());
    assert_eq!(f["floatingip"]["router_id"], router_id.as_str());
    let shown = nova(
        &server,
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{id}"),
        None,
    )
    .json();
    let addrs = shown["server"]["addresses"]["private"].clone();
    assert!(
        addrs.as_array().is_some_and(|l| l
            .iter()
            .any(|a| a["addr"] == address.as_str() && a["OS-EXT-IPS:type"] == "floating")),
        "{addrs}"
    );
    let proxied = nova(
        &server,
        &admin,
        "2.35",
        "GET",
        &format!("/os-floating-ips/{fip_id}"),
        None,
    )
    .json();
    assert_eq!(proxied["floating_ip"]["instance_id"], id.as_str());
    assert_eq!(proxied["floating_ip"]["fixed_ip"], fixed.as_str());
    // Another project's member: 404 for the server.
    assert_eq!(
        action(
            &other,
            "2.1",
            json!({"removeFloatingIp": {"address": address}})
        )
        .status,
        404
    );
    let rm = action(
        &admin,
        "2.1",
        json!({"removeFloatingIp": {"address": address}}),
    );
    assert_eq!(rm.status, 202, "{}", rm.text);
    let f = neutron(
        &server,
        &admin,
        "GET",
        &format!("/floatingips/{fip_id}"),
        None,
    )
    .json();
    assert!(f["floatingip"]["port_id"].is_null());

    // add/removeFixedIp: refused truthfully (no NIC hot-plug yet), 404 at 2.44.
    let add_fixed = action(&admin, "2.1", json!({"addFixedIp": {"networkId": private}}));
    assert_eq!(add_fixed.status, 409, "{}", add_fixed.text);
    assert!(
        message(&add_fixed).contains("hot-plug"),
        "{}",
        add_fixed.text
    );
    let rm_fixed = action(&admin, "2.1", json!({"removeFixedIp": {"address": fixed}}));
    assert_eq!(rm_fixed.status, 409, "{}", rm_fixed.text);
    assert_eq!(action(&admin, "2.1", json!({"addFixedIp": {}})).status, 400);
    assert_eq!(
        action(
            &admin,
            "2.44",
            json!({"addFixedIp": {"networkId": private}})
        )
        .status,
        404
    );

    let del = nova(
        &server,
        &admin,
        "2.73",
        "DELETE",
        &format!("/servers/{id}"),
        None,
    );
    assert_eq!(del.status, 204, "{}", del.text);
}
