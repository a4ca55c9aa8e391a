//! Neutron v2.0 against the real `yunhe serve` on an ephemeral port.

mod support;

use serde_json::{Value, json};
use support::{Reply, Server, http, member_of_new_project};

const V2: &str = "/network/v2.0";

fn post(server: &Server, token: &str, path: &str, body: Value) -> Reply {
    server.request("POST", &format!("{V2}{path}"), Some(token), Some(&body))
}

fn put(server: &Server, token: &str, path: &str, body: Value) -> Reply {
    server.request("PUT", &format!("{V2}{path}"), Some(token), Some(&body))
}

fn get(server: &Server, token: &str, path: &str) -> Reply {
    server.get(&format!("{V2}{path}"), Some(token))
}

fn delete(server: &Server, token: &str, path: &str) -> Reply {
    server.request("DELETE", &format!("{V2}{path}"), Some(token), None)
}

fn created(reply: Reply, member: &str) -> Value {
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()[member].clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn error_type(reply: &Reply) -> String {
    reply.json()["NeutronError"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn catalog_versions_and_extensions() {
    let server = Server::start();
    let admin = server.admin_token();
    let reply = server.token("admin", support::ADMIN_PASSWORD, Some("admin"));
    let catalog = reply.json()["token"]["catalog"].clone();
    assert!(
        catalog
            .as_array()
            .expect("catalog")
            .iter()
            .any(|s| s["type"] == "network" && s["name"] == "neutron"),
        "{catalog}"
    );
    let versions = server.get("/network/", None).json();
    assert_eq!(versions["versions"][0]["id"], "v2.0");
    let exts = get(&server, &admin, "/extensions").json();
    let aliases: Vec<&str> = exts["extensions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    for a in [
        "router",
        "security-group",
        "external-net",
        "quotas",
        "standard-attr-tag",
    ] {
        assert!(aliases.contains(&a), "{a} missing");
    }
    assert_eq!(get(&server, &admin, "/extensions/router").status, 200);
    let missing = get(&server, &admin, "/extensions/dvr");
    assert_eq!(missing.status, 404);
    assert_eq!(server.get(&format!("{V2}/networks"), None).status, 401);
}

#[test]
fn networks_subnets_ports_and_ipam() {
    let server = Server::start();
    let admin = server.admin_token();
    let net = created(
        post(
            &server,
            &admin,
            "/networks",
            json!({"network": {"name": "n1", "mtu": 1400}}),
        ),
        "network",
    );
    assert_eq!(net["status"], "ACTIVE");
    assert_eq!(net["mtu"], 1400);
    assert_eq!(net["revision_number"], 0);
    assert_eq!(net["availability_zones"], json!(["nova"]));
    let net_id = id(&net);
    let subnet = created(
        post(
            &server,
            &admin,
            "/subnets",
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.9.0.0/29",
                   "dns_nameservers": ["10.9.0.1"], "host_routes": [{"destination": "10.20.0.0/16", "nexthop": "10.9.0.6"}]}}),
        ),
        "subnet",
    );
    assert_eq!(subnet["gateway_ip"], "10.9.0.1");
    assert_eq!(
        subnet["allocation_pools"],
        json!([{"start": "10.9.0.2", "end": "10.9.0.6"}])
    );
    let subnet_id = id(&subnet);
    // Overlapping CIDR on the same network: 400; a bad CIDR: 400.
    let overlap = post(
        &server,
        &admin,
        "/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.9.0.0/24"}}),
    );
    assert_eq!(overlap.status, 400, "{}", overlap.text);
    let bad = post(
        &server,
        &admin,
        "/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.9.1.1/24"}}),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["NeutronError"]["message"].is_string());
    // An IPv6 SLAAC subnet beside it.
    let v6 = created(
        post(
            &server,
            &admin,
            "/subnets",
            json!({"subnet": {"network_id": net_id, "ip_version": 6, "cidr": "2001:db8::/64",
                   "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}}),
        ),
        "subnet",
    );
    assert_eq!(v6["ipv6_address_mode"], "slaac");
    // Ports take the next free address and a fa:16:3e MAC.
    let port = created(
        post(
            &server,
            &admin,
            "/ports",
            json!({"port": {"network_id": net_id, "name": "p1"}}),
        ),
        "port",
    );
    assert!(
        port["mac_address"]
            .as_str()
            .expect("mac")
            .starts_with("fa:16:3e:")
    );
    assert_eq!(port["status"], "DOWN");
    assert_eq!(port["binding:vif_type"], "unbound");
    let ips = port["fixed_ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{port}");
    assert_eq!(ips[0]["ip_address"], "10.9.0.2");
    // A given address that is taken: 409 IpAddressAlreadyAllocated.
    let dup = post(
        &server,
        &admin,
        "/ports",
        json!({"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.9.0.2"}]}}),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(error_type(&dup), "IpAddressAlreadyAllocated");
    // Exhaust the pool: 4 more fit, the next is IpAddressGenerationFailure.
    for _ in 0..4 {
        created(
            post(
                &server,
                &admin,
                "/ports",
                json!({"port": {"network_id": net_id, "fixed_ips": [{"subnet_id": subnet_id}]}}),
            ),
            "port",
        );
    }
    let full = post(
        &server,
        &admin,
        "/ports",
        json!({"port": {"network_id": net_id, "fixed_ips": [{"subnet_id": subnet_id}]}}),
    );
    assert_eq!(full.status, 409, "{}", full.text);
    assert_eq!(error_type(&full), "IpAddressGenerationFailure");
    // Nothing half-made: the failed create left no port.
    let ports = get(&server, &admin, &format!("/ports?network_id={net_id}")).json();
    assert_eq!(ports["ports"].as_array().expect("list").len(), 5);
    // Availability counts the five.
    let avail = get(
        &server,
        &admin,
        &format!("/network-ip-availabilities/{net_id}"),
    )
    .json();
    // Five IPv4 addresses and the first port's SLAAC address.
    assert_eq!(avail["network_ip_availability"]["used_ips"], 6);
    // Subnet in use, network in use.
    assert_eq!(
        delete(&server, &admin, &format!("/subnets/{subnet_id}")).status,
        409
    );
    let inuse = delete(&server, &admin, &format!("/networks/{net_id}"));
    assert_eq!(inuse.status, 409);
    assert_eq!(error_type(&inuse), "NetworkInUse");
    // Paging with links, sorting, fields, filters.
    let page = get(&server, &admin, "/ports?limit=2&sort_key=name&sort_dir=asc").json();
    assert_eq!(page["ports"].as_array().expect("page").len(), 2);
    let next = page["ports_links"][0]["href"].as_str().expect("next link");
    assert!(next.contains("marker="), "{next}");
    let only = get(&server, &admin, "/ports?name=p1&fields=id&fields=name").json();
    assert_eq!(only["ports"].as_array().expect("list").len(), 1);
    assert_eq!(
        only["ports"][0].as_object().expect("obj").len(),
        2,
        "{only}"
    );
    let by_ip = get(&server, &admin, "/ports?fixed_ips=ip_address%3D10.9.0.2").json();
    assert_eq!(by_ip["ports"].as_array().expect("list").len(), 1);
    // Revision numbers and If-Match.
    let pid = id(&port);
    let updated = put(
        &server,
        &admin,
        &format!("/ports/{pid}"),
        json!({"port": {"name": "p1b"}}),
    );
    assert_eq!(updated.status, 200);
    assert_eq!(updated.json()["port"]["revision_number"], 1);
    let stale = http(
        &server.addr,
        "PUT",
        &format!("{V2}/ports/{pid}"),
        &[
            ("X-Auth-Token", admin.clone()),
            ("If-Match", "revision_number=0".into()),
        ],
        Some(&json!({"port": {"name": "p1c"}})),
    );
    assert_eq!(stale.status, 412, "{}", stale.text);
    // Tags.
    assert_eq!(
        server
            .request(
                "PUT",
                &format!("{V2}/networks/{net_id}/tags/red"),
                Some(&admin),
                None
            )
            .status,
        201
    );
    let tagged = get(&server, &admin, "/networks?tags=red").json();
    assert_eq!(tagged["networks"].as_array().expect("list").len(), 1);
    assert_eq!(
        get(&server, &admin, &format!("/networks/{net_id}/tags/blue")).status,
        404
    );
    // Unknown attributes and malformed bodies: 400 in Neutron's shape.
    let unknown = post(
        &server,
        &admin,
        "/networks",
        json!({"network": {"colour": "red"}}),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(error_type(&unknown), "HTTPBadRequest");
    let huge = "x".repeat(300 * 1024);
    let too_big = post(
        &server,
        &admin,
        "/networks",
        json!({"network": {"name": huge}}),
    );
    assert_eq!(too_big.status, 413);
}

#[test]
fn projects_security_groups_quotas_and_sharing() {
    let server = Server::start();
    let admin = server.admin_token();
    let (project_a, alice) = member_of_new_project(&server, &admin, "neta");
    let (_project_b, bob) = member_of_new_project(&server, &admin, "netb");
    // Bob cannot see or use Alice's private network.
    let net = created(
        post(
            &server,
            &alice,
            "/networks",
            json!({"network": {"name": "a"}}),
        ),
        "network",
    );
    let net_id = id(&net);
    assert!(net.get("provider:network_type").is_none(), "{net}");
    assert_eq!(
        get(&server, &bob, &format!("/networks/{net_id}")).status,
        404
    );
    let foreign = post(
        &server,
        &bob,
        "/ports",
        json!({"port": {"network_id": net_id}}),
    );
    assert_eq!(foreign.status, 404);
    // Sharing needs admin; an RBAC policy shares with Bob.
    let shared = post(
        &server,
        &alice,
        "/networks",
        json!({"network": {"shared": true}}),
    );
    assert_eq!(shared.status, 403, "{}", shared.text);
    created(
        post(
            &server,
            &admin,
            "/rbac-policies",
            json!({"rbac_policy": {"object_type": "network", "object_id": net_id,
                   "action": "access_as_shared", "target_tenant": "*"}}),
        ),
        "rbac_policy",
    );
    assert_eq!(
        get(&server, &bob, &format!("/networks/{net_id}")).status,
        200
    );
    // Security groups: default made on first use, rules checked, duplicates 409.
    let groups = get(&server, &alice, "/security-groups").json();
    let list = groups["security_groups"].as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "default");
    assert_eq!(
        list[0]["security_group_rules"]
            .as_array()
            .expect("rules")
            .len(),
        4
    );
    let sg = created(
        post(
            &server,
            &alice,
            "/security-groups",
            json!({"security_group": {"name": "web"}}),
        ),
        "security_group",
    );
    let sg_id = id(&sg);
    let rule = json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
        "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}});
    created(
        post(&server, &alice, "/security-group-rules", rule.clone()),
        "security_group_rule",
    );
    let dup = post(&server, &alice, "/security-group-rules", rule);
    assert_eq!(dup.status, 409);
    assert_eq!(error_type(&dup), "SecurityGroupRuleExists");
    let by_number = post(
        &server,
        &alice,
        "/security-group-rules",
        json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
            "protocol": "6", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}}),
    );
    assert_eq!(by_number.status, 409, "tcp and 6 are the same protocol");
    let bad_range = post(
        &server,
        &alice,
        "/security-group-rules",
        json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
            "protocol": "udp", "port_range_min": 90, "port_range_max": 80}}),
    );
    assert_eq!(bad_range.status, 400);
    let bad_proto = post(
        &server,
        &alice,
        "/security-group-rules",
        json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", "protocol": "bogus"}}),
    );
    assert_eq!(bad_proto.status, 400);
    // Quotas: admin lowers Alice's network quota; the next create is 409 OverQuota.
    let q = put(
        &server,
        &admin,
        &format!("/quotas/{project_a}"),
        json!({"quota": {"network": 1}}),
    );
    assert_eq!(q.status, 200, "{}", q.text);
    let over = post(
        &server,
        &alice,
        "/networks",
        json!({"network": {"name": "b"}}),
    );
    assert_eq!(over.status, 409);
    assert_eq!(error_type(&over), "OverQuota");
    // get_quota is admin or manager (a member gets 403), as Neutron.
    assert_eq!(
        get(&server, &alice, &format!("/quotas/{project_a}/details")).status,
        403
    );
    let details = get(&server, &admin, &format!("/quotas/{project_a}/details")).json();
    assert_eq!(details["quota"]["network"]["used"], 1);
    assert_eq!(details["quota"]["network"]["limit"], 1);
    assert_eq!(
        put(
            &server,
            &alice,
            &format!("/quotas/{project_a}"),
            json!({"quota": {"network": 9}})
        )
        .status,
        403
    );
}

#[test]
fn routers_and_floating_ips() {
    let server = Server::start();
    let admin = server.admin_token();
    let public = created(
        post(
            &server,
            &admin,
            "/networks",
            json!({"network": {"name": "public", "router:external": true}}),
        ),
        "network",
    );
    let public_id = id(&public);
    created(
        post(
            &server,
            &admin,
            "/subnets",
            json!({"subnet": {"network_id": public_id, "ip_version": 4, "cidr": "172.24.4.0/24"}}),
        ),
        "subnet",
    );
    let (_p, alice) = member_of_new_project(&server, &admin, "routers");
    let net = created(
        post(
            &server,
            &alice,
            "/networks",
            json!({"network": {"name": "private"}}),
        ),
        "network",
    );
    let net_id = id(&net);
    let subnet = created(
        post(
            &server,
            &alice,
            "/subnets",
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
        ),
        "subnet",
    );
    let subnet_id = id(&subnet);
    let port = created(
        post(
            &server,
            &alice,
            "/ports",
            json!({"port": {"network_id": net_id}}),
        ),
        "port",
    );
    let port_id = id(&port);
    // A floating IP on a port with no router path: 404.
    let fip = created(
        post(
            &server,
            &alice,
            "/floatingips",
            json!({"floatingip": {"floating_network_id": public_id}}),
        ),
        "floatingip",
    );
    let fip_id = id(&fip);
    assert!(
        fip["floating_ip_address"]
            .as_str()
            .expect("ip")
            .starts_with("172.24.4.")
    );
    let no_path = put(
        &server,
        &alice,
        &format!("/floatingips/{fip_id}"),
        json!({"floatingip": {"port_id": port_id}}),
    );
    assert_eq!(no_path.status, 404, "{}", no_path.text);
    assert_eq!(error_type(&no_path), "ExternalGatewayForFloatingIPNotFound");
    // A router with a gateway and an interface makes the path.
    let router = created(
        post(
            &server,
            &alice,
            "/routers",
            json!({"router": {"name": "r", "external_gateway_info": {"network_id": public_id}}}),
        ),
        "router",
    );
    let router_id = id(&router);
    assert_eq!(router["external_gateway_info"]["enable_snat"], true);
    assert_eq!(
        router["external_gateway_info"]["external_fixed_ips"]
            .as_array()
            .expect("ips")
            .len(),
        1
    );
    let snat = put(
        &server,
        &alice,
        &format!("/routers/{router_id}"),
        json!({"router": {"external_gateway_info": {"network_id": public_id, "enable_snat": false}}}),
    );
    assert_eq!(snat.status, 403, "enable_snat is admin-only: {}", snat.text);
    let iface = put(
        &server,
        &alice,
        &format!("/routers/{router_id}/add_router_interface"),
        json!({"subnet_id": subnet_id}),
    );
    assert_eq!(iface.status, 200, "{}", iface.text);
    assert_eq!(iface.json()["subnet_id"], subnet_id);
    let again = put(
        &server,
        &alice,
        &format!("/routers/{router_id}/add_router_interface"),
        json!({"subnet_id": subnet_id}),
    );
    assert_eq!(again.status, 400);
    let routes = put(
        &server,
        &alice,
        &format!("/routers/{router_id}"),
        json!({"router": {"routes": [{"destination": "10.50.0.0/16", "nexthop": "10.0.0.5"}]}}),
    );
    assert_eq!(routes.status, 200, "{}", routes.text);
    assert_eq!(routes.json()["router"]["routes"][0]["nexthop"], "10.0.0.5");
    // `"routes": null` clears them (tempest's cleanup sends it).
    let cleared = put(
        &server,
        &alice,
        &format!("/routers/{router_id}"),
        json!({"router": {"routes": null}}),
    );
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    assert_eq!(cleared.json()["router"]["routes"], json!([]));
    let assoc = put(
        &server,
        &alice,
        &format!("/floatingips/{fip_id}"),
        json!({"floatingip": {"port_id": port_id}}),
    );
    assert_eq!(assoc.status, 200, "{}", assoc.text);
    let assoc = assoc.json();
    assert_eq!(assoc["floatingip"]["router_id"], router_id);
    assert_eq!(
        assoc["floatingip"]["fixed_ip_address"],
        port["fixed_ips"][0]["ip_address"]
    );
    // The interface is in use by the floating IP; the router has ports.
    let busy = put(
        &server,
        &alice,
        &format!("/routers/{router_id}/remove_router_interface"),
        json!({"subnet_id": subnet_id}),
    );
    assert_eq!(busy.status, 409);
    assert_eq!(
        delete(&server, &alice, &format!("/routers/{router_id}")).status,
        409
    );
    // Disassociate, detach, delete.
    let off = put(
        &server,
        &alice,
        &format!("/floatingips/{fip_id}"),
        json!({"floatingip": {"port_id": null}}),
    );
    assert_eq!(off.json()["floatingip"]["port_id"], Value::Null);
    let detach = put(
        &server,
        &alice,
        &format!("/routers/{router_id}/remove_router_interface"),
        json!({"subnet_id": subnet_id}),
    );
    assert_eq!(detach.status, 200, "{}", detach.text);
    assert_eq!(
        delete(&server, &alice, &format!("/floatingips/{fip_id}")).status,
        204
    );
    assert_eq!(
        delete(&server, &alice, &format!("/routers/{router_id}")).status,
        204
    );
    assert_eq!(
        delete(&server, &alice, &format!("/ports/{port_id}")).status,
        204
    );
    assert_eq!(
        delete(&server, &alice, &format!("/networks/{net_id}")).status,
        204
    );
    assert_eq!(
        delete(&server, &admin, &format!("/networks/{public_id}")).status,
        204
    );
}

/// Neutron's bulk create: `{"networks": [...]}` (and subnets, ports) makes
/// all in one transaction and answers the list; one bad item makes none.
#[test]
fn bulk_create_networks_subnets_ports() {
    let server = Server::start();
    let admin = server.admin_token();
    let reply = post(
        &server,
        &admin,
        "/networks",
        json!({"networks": [{"name": "bulk-a"}, {"name": "bulk-b"}]}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let nets = reply.json()["networks"].as_array().cloned().expect("list");
    assert_eq!(nets.len(), 2);
    assert_eq!(nets[0]["name"], "bulk-a");
    assert_eq!(nets[1]["name"], "bulk-b");
    let (a, b) = (id(&nets[0]), id(&nets[1]));

    let reply = post(
        &server,
        &admin,
        "/subnets",
        json!({"subnets": [
            {"network_id": a, "cidr": "10.61.0.0/24", "ip_version": 4},
            {"network_id": b, "cidr": "10.62.0.0/24", "ip_version": 4}
        ]}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let subnets = reply.json()["subnets"].as_array().cloned().expect("list");
    assert_eq!(subnets.len(), 2);
    assert_eq!(subnets[1]["network_id"], b.as_str());

    let reply = post(
        &server,
        &admin,
        "/ports",
        json!({"ports": [{"network_id": a}, {"network_id": b, "name": "p-b"}]}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let ports = reply.json()["ports"].as_array().cloned().expect("list");
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[1]["name"], "p-b");
    assert_eq!(ports[0]["fixed_ips"][0]["subnet_id"], subnets[0]["id"]);

    // All or none: the second item is bad, so the first is not made either.
    let reply = post(
        &server,
        &admin,
        "/networks",
        json!({"networks": [{"name": "bulk-c"}, {"name": "bulk-d", "bogus": 1}]}),
    );
    assert_eq!(reply.status, 400, "{}", reply.text);
    let listed = get(&server, &admin, "/networks?name=bulk-c").json();
    assert_eq!(listed["networks"].as_array().map(Vec::len), Some(0));
    // An empty list and a body with neither form are 400s.
    let reply = post(&server, &admin, "/ports", json!({"ports": []}));
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = post(&server, &admin, "/ports", json!({"other": {}}));
    assert_eq!(reply.status, 400, "{}", reply.text);
}

/// Security-group rule ports with Neutron's wording (tempest matches it) and
/// no group renamed to `default`.
#[test]
fn security_group_rule_ports_and_default_name() {
    let server = Server::start();
    let admin = server.admin_token();
    let sg = created(
        post(
            &server,
            &admin,
            "/security-groups",
            json!({"security_group": {"name": "ports"}}),
        ),
        "security_group",
    );
    let sg_id = id(&sg);
    let rule = |proto: &str, min: Value, max: Value| {
        post(
            &server,
            &admin,
            "/security-group-rules",
            json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
                "protocol": proto, "port_range_min": min, "port_range_max": max}}),
        )
    };
    for (proto, min, max, wording) in [
        ("tcp", json!(-16), json!(80), "Invalid value for port -16"),
        (
            "tcp",
            json!(80),
            json!(65536),
            "Invalid value for port 65536",
        ),
        (
            "tcp",
            json!(80),
            json!(79),
            "port_range_min must be <= port_range_max",
        ),
        (
            "tcp",
            Value::Null,
            json!(6),
            "port_range_min must be <= port_range_max",
        ),
        ("icmp", json!(1), json!(256), "Invalid value for ICMP code"),
        ("icmp", json!(300), json!(1), "Invalid value for ICMP type"),
        ("icmp", json!(-1), json!(25), "Invalid value"),
        (
            "icmp",
            Value::Null,
            json!(6),
            "ICMP type (port-range-min) is missing",
        ),
    ] {
        let reply = rule(proto, min.clone(), max.clone());
        assert_eq!(reply.status, 400, "{proto} {min} {max}: {}", reply.text);
        assert!(
            reply.text.contains(wording),
            "{proto} {min} {max}: {}",
            reply.text
        );
    }
    // A one-ended TCP range from its lower end is one port.
    let one = created(rule("tcp", json!(22), Value::Null), "security_group_rule");
    assert_eq!(one["port_range_max"], 22);

    let renamed = put(
        &server,
        &admin,
        &format!("/security-groups/{sg_id}"),
        json!({"security_group": {"name": "default"}}),
    );
    assert_eq!(renamed.status, 409, "{}", renamed.text);
    assert_eq!(error_type(&renamed), "SecurityGroupDefaultAlreadyExists");
    let ok = put(
        &server,
        &admin,
        &format!("/security-groups/{sg_id}"),
        json!({"security_group": {"name": "ports-2"}}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// No agents (an empty list for everyone); subnets show their network's
/// `router:external` (subnet-external-network); deleting an external network
/// releases its floating IPs with it.
#[test]
fn agents_subnet_external_and_external_network_delete() {
    let server = Server::start();
    let admin = server.admin_token();
    let (_, alice) = member_of_new_project(&server, &admin, "agents-alice");
    for token in [&admin, &alice] {
        let agents = get(&server, token, "/agents");
        assert_eq!(agents.status, 200, "{}", agents.text);
        assert_eq!(agents.json()["agents"], json!([]));
    }
    assert_eq!(get(&server, &admin, "/agents/nope").status, 404);
    let exts = get(&server, &admin, "/extensions/subnet-external-network");
    assert_eq!(exts.status, 200, "{}", exts.text);

    let public = created(
        post(
            &server,
            &admin,
            "/networks",
            json!({"network": {"name": "ext", "router:external": true}}),
        ),
        "network",
    );
    let public_id = id(&public);
    let subnet = created(
        post(
            &server,
            &admin,
            "/subnets",
            json!({"subnet": {"network_id": public_id, "cidr": "172.30.4.0/24", "ip_version": 4}}),
        ),
        "subnet",
    );
    assert_eq!(subnet["router:external"], true);
    let seen = get(&server, &alice, &format!("/subnets?network_id={public_id}")).json();
    assert_eq!(seen["subnets"][0]["router:external"], true);
    let shown = get(&server, &alice, &format!("/subnets/{}", id(&subnet))).json();
    assert_eq!(shown["subnet"]["router:external"], true);

    let fip = created(
        post(
            &server,
            &alice,
            "/floatingips",
            json!({"floatingip": {"floating_network_id": public_id}}),
        ),
        "floatingip",
    );
    let gone = delete(&server, &admin, &format!("/networks/{public_id}"));
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(
        get(&server, &admin, &format!("/floatingips/{}", id(&fip))).status,
        404
    );
    assert_eq!(
        get(&server, &admin, &format!("/subnets/{}", id(&subnet))).status,
        404
    );
}

/// An auto-address (SLAAC) subnet is deleted while ordinary ports hold its
/// addresses: they lose them; the ports stay and keep the network in use.
#[test]
fn slaac_subnet_delete_takes_auto_addresses_off_ports() {
    let server = Server::start();
    let admin = server.admin_token();
    let net = created(
        post(
            &server,
            &admin,
            "/networks",
            json!({"network": {"name": "v6"}}),
        ),
        "network",
    );
    let net_id = id(&net);
    let subnet = created(
        post(
            &server,
            &admin,
            "/subnets",
            json!({"subnet": {"network_id": net_id, "cidr": "2001:db8:77::/64", "ip_version": 6,
                "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}}),
        ),
        "subnet",
    );
    let port = created(
        post(
            &server,
            &admin,
            "/ports",
            json!({"port": {"network_id": net_id}}),
        ),
        "port",
    );
    assert_eq!(port["fixed_ips"][0]["subnet_id"], subnet["id"]);
    let gone = delete(&server, &admin, &format!("/subnets/{}", id(&subnet)));
    assert_eq!(gone.status, 204, "{}", gone.text);
    let after = get(&server, &admin, &format!("/ports/{}", id(&port))).json();
    assert_eq!(after["port"]["fixed_ips"], json!([]));
    let busy = delete(&server, &admin, &format!("/networks/{net_id}"));
    assert_eq!(busy.status, 409, "{}", busy.text);
    assert!(busy.text.contains("ports still in use"), "{}", busy.text);
}
