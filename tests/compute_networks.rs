//! Nova's use of Neutron through HTTP against the real `yunhe serve`
//! (dataplane off): `networks` on server create in each form and with each
//! of Nova's errors, the ports made (device id and owner, binding host,
//! status), `addresses` in the views, `os-interface` and `ips`, ports gone
//! after delete, a port passed in only unbound, a port quota refusal that
//! leaves nothing behind, min_count 2 with one port each, and a build that
//! waits for its port's `network-vif-plugged` (Nova's vif_plugging_timeout), and a
//! bound port deleted through Neutron leaving its server (`network-vif-deleted`). Servers boot
//! the built-in echo guest on /dev/kvm; skipped (with a message) without it.
//!
//! The state directory's guard kills (by pid) every `yunhe vmm` whose spec
//! lies in it and removes it, so a failing assertion leaves nothing behind.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Reply, Server, VmmStateDir, echo_image, http, kvm_usable, member_of_new_project};

const NET: &str = "/network/v2.0";

struct Cloud<'a> {
    server: &'a Server,
}

impl Cloud<'_> {
    fn nova(&self, token: &str, mv: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        http(
            &self.server.addr,
            method,
            &format!("/compute/v2.1{path}"),
            &[
                ("X-Auth-Token", token.to_string()),
                ("OpenStack-API-Version", format!("compute {mv}")),
            ],
            body,
        )
    }

    fn create(&self, token: &str, mv: &str, server: Value) -> Reply {
        self.nova(
            token,
            mv,
            "POST",
            "/servers",
            Some(&json!({ "server": server })),
        )
    }

    fn neutron(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.server
            .request(method, &format!("{NET}{path}"), Some(token), body)
    }

    fn ports_of(&self, token: &str, device: &str) -> Vec<Value> {
        let reply = self.neutron(token, "GET", &format!("/ports?device_id={device}"), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn all_ports(&self, token: &str) -> Vec<Value> {
        let reply = self.neutron(token, "GET", "/ports", None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn network(&self, token: &str, name: &str, cidr: &str, extra: Value) -> String {
        let mut body = json!({"network": {"name": name}});
        if let (Some(b), Some(e)) = (body["network"].as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let net = self.neutron(token, "POST", "/networks", Some(&body));
        assert_eq!(net.status, 201, "{}", net.text);
        let id = net.json()["network"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let sub = self.neutron(
            token,
            "POST",
            "/subnets",
            Some(
                &json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4,
                                     "dns_nameservers": ["10.255.255.53"]}}),
            ),
        );
        assert_eq!(sub.status, 201, "{}", sub.text);
        id
    }

    fn wait_status(&self, token: &str, id: &str, status: &str) -> Value {
        let start = Instant::now();
        loop {
            let reply = self.nova(token, "2.73", "GET", &format!("/servers/{id}"), None);
            assert_eq!(reply.status, 200, "{}", reply.text);
            let server = reply.json()["server"].clone();
            if server["status"] == status && server["OS-EXT-STS:task_state"].is_null() {
                return server;
            }
            assert!(
                server["status"] != "ERROR" || status == "ERROR",
                "server {id} in ERROR: {}",
                server["fault"]
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server {id} not {status}: {server}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn delete_and_wait(&self, token: &str, id: &str) {
        let reply = self.nova(token, "2.73", "DELETE", &format!("/servers/{id}"), None);
        assert_eq!(reply.status, 204, "{}", reply.text);
        let start = Instant::now();
        while self
            .nova(token, "2.73", "GET", &format!("/servers/{id}"), None)
            .status
            != 404
        {
            assert!(start.elapsed() < Duration::from_secs(60), "{id} not gone");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn message(reply: &Reply) -> String {
    let body = reply.json();
    body.as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn server_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.json()["server"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[test]
fn networks_on_create_addresses_interfaces_and_cleanup() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("nn", "nets");
    let server = Server::start_in(state.0.clone(), true);
    let admin = server.admin_token();
    let cloud = Cloud { server: &server };
    let image = echo_image(&server, &admin, &state.0);
    let base = |extra: Value| -> Value {
        let mut s = json!({"name": "vm", "imageRef": image, "flavorRef": "42"});
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        s
    };

    // No network at all: an absent key (2.36) boots without a NIC; `auto`
    // has nothing to allocate (400); 2.37+ needs the key.
    let none_yet = cloud.create(&admin, "2.36", base(json!({})));
    let bare = server_id(&none_yet);
    assert_eq!(
        cloud
            .create(&admin, "2.37", base(json!({"networks": "auto"})))
            .status,
        400
    );
    let missing = cloud.create(&admin, "2.37", base(json!({})));
    assert_eq!(missing.status, 400, "{}", missing.text);
    assert!(message(&missing).contains("'networks' is a required property"));
    assert!(cloud.ports_of(&admin, &bare).is_empty());
    // No port, no security group: Nova leaves the key out.
    let bare_shown = cloud
        .nova(&admin, "2.73", "GET", &format!("/servers/{bare}"), None)
        .json();
    assert!(
        bare_shown["server"].get("security_groups").is_none(),
        "{bare_shown}"
    );

    // One usable network: absent (2.36) and `auto` both use it.
    let net1 = cloud.network(&admin, "net1", "10.1.0.0/24", json!({}));
    let first = server_id(&cloud.create(&admin, "2.36", base(json!({"name": "first"}))));
    let shown = cloud.wait_status(&admin, &first, "ACTIVE");
    // The groups on the server's ports, by name, as Nova's show.
    assert_eq!(
        shown["security_groups"],
        json!([{"name": "default"}]),
        "{shown}"
    );
    let addrs = shown["addresses"]["net1"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(addrs.len(), 1, "{shown}");
    assert_eq!(addrs[0]["version"], 4);
    assert_eq!(addrs[0]["OS-EXT-IPS:type"], "fixed");
    let ports = cloud.ports_of(&admin, &first);
    assert_eq!(ports.len(), 1, "{ports:?}");
    let port = &ports[0];
    assert_eq!(port["network_id"], net1.as_str());
    assert_eq!(port["device_owner"], "compute:nova");
    // No dataplane: the port goes ACTIVE when the build binds it, as with
    // Neutron's noop agent (docs/network.md, "Port status and VIF events").
    assert_eq!(port["status"], "ACTIVE");
    assert!(
        port["binding:host_id"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert_eq!(addrs[0]["OS-EXT-IPS-MAC:mac_addr"], port["mac_address"]);
    assert_eq!(addrs[0]["addr"], port["fixed_ips"][0]["ip_address"]);
    let port_id = port["id"].as_str().expect("port id").to_string();
    // os-interface and ips.
    let list = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{first}/os-interface"),
        None,
    );
    assert_eq!(list.status, 200, "{}", list.text);
    let attachments = list.json()["interfaceAttachments"].clone();
    assert_eq!(attachments[0]["port_id"], port_id.as_str());
    assert_eq!(attachments[0]["net_id"], net1.as_str());
    assert_eq!(attachments[0]["mac_addr"], port["mac_address"]);
    let one = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{first}/os-interface/{port_id}"),
        None,
    );
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json()["interfaceAttachment"]["port_state"], "ACTIVE");
    let other = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{first}/os-interface/{bare}"),
        None,
    );
    assert_eq!(other.status, 404);
    let ips = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{first}/ips"),
        None,
    );
    assert_eq!(ips.json()["addresses"]["net1"][0]["addr"], addrs[0]["addr"]);
    assert!(
        ips.json()["addresses"]["net1"][0]
            .get("OS-EXT-IPS:type")
            .is_none()
    );
    let by_net = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{first}/ips/net1"),
        None,
    );
    assert_eq!(by_net.status, 200);
    assert_eq!(by_net.json()["net1"][0]["version"], 4);
    assert_eq!(
        cloud
            .nova(
                &admin,
                "2.73",
                "GET",
                &format!("/servers/{first}/ips/nope"),
                None
            )
            .status,
        404
    );
    // The list's detail view has the addresses too.
    let detail = cloud
        .nova(&admin, "2.73", "GET", "/servers/detail", None)
        .json();
    let listed = detail["servers"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == first.as_str()).cloned())
        .expect("listed");
    assert_eq!(listed["addresses"], shown["addresses"]);
    assert_eq!(listed["security_groups"], shown["security_groups"]);
    // A floating IP on the port shows up as `floating`.
    let public = cloud.network(
        &admin,
        "public",
        "172.24.4.0/24",
        json!({"router:external": true}),
    );
    let sub1 = cloud
        .neutron(&admin, "GET", &format!("/subnets?network_id={net1}"), None)
        .json()["subnets"][0]["id"]
        .as_str()
        .expect("subnet")
        .to_string();
    let router = cloud.neutron(
        &admin,
        "POST",
        "/routers",
        Some(&json!({"router": {"name": "r", "external_gateway_info": {"network_id": public}}})),
    );
    assert_eq!(router.status, 201, "{}", router.text);
    let router_id = router.json()["router"]["id"]
        .as_str()
        .expect("router")
        .to_string();
    let iface = cloud.neutron(
        &admin,
        "PUT",
        &format!("/routers/{router_id}/add_router_interface"),
        Some(&json!({"subnet_id": sub1})),
    );
    assert_eq!(iface.status, 200, "{}", iface.text);
    let fip = cloud.neutron(
        &admin,
        "POST",
        "/floatingips",
        Some(&json!({"floatingip": {"floating_network_id": public, "port_id": port_id}})),
    );
    assert_eq!(fip.status, 201, "{}", fip.text);
    let fip_addr = fip.json()["floatingip"]["floating_ip_address"].clone();
    let shown = cloud.wait_status(&admin, &first, "ACTIVE");
    assert_eq!(shown["addresses"]["net1"][1]["addr"], fip_addr, "{shown}");
    assert_eq!(shown["addresses"]["net1"][1]["OS-EXT-IPS:type"], "floating");

    // Two usable networks: absent and `auto` are ambiguous (409).
    let net2 = cloud.network(&admin, "net2", "10.2.0.0/24", json!({}));
    for (mv, extra) in [("2.36", json!({})), ("2.37", json!({"networks": "auto"}))] {
        let reply = cloud.create(&admin, mv, base(extra));
        assert_eq!(reply.status, 409, "{}", reply.text);
        assert_eq!(
            message(&reply),
            "Multiple possible networks found, use a Network ID to be more specific."
        );
    }
    // `none`: no port.
    let nonic = server_id(&cloud.create(&admin, "2.37", base(json!({"networks": "none"}))));
    assert!(cloud.ports_of(&admin, &nonic).is_empty());

    // {uuid, fixed_ip} and its errors.
    let fixed = server_id(&cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": net2, "fixed_ip": "10.2.0.50"}]})),
    ));
    assert_eq!(
        cloud.ports_of(&admin, &fixed)[0]["fixed_ips"][0]["ip_address"],
        "10.2.0.50"
    );
    let again = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": net2, "fixed_ip": "10.2.0.50"}]})),
    );
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(
        message(&again).contains("is already in use on instance"),
        "{}",
        again.text
    );
    for bad in ["10.2.0", "not-an-ip"] {
        let reply = cloud.create(
            &admin,
            "2.37",
            base(json!({"networks": [{"uuid": net2, "fixed_ip": bad}]})),
        );
        assert_eq!(reply.status, 400, "{}", reply.text);
    }
    let outside = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": net2, "fixed_ip": "10.9.9.9"}]})),
    );
    assert_eq!(outside.status, 400, "{}", outside.text);
    let multi = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": net2, "fixed_ip": "10.2.0.60"}], "max_count": 2})),
    );
    assert_eq!(multi.status, 400, "{}", multi.text);
    // Unknown or malformed networks.
    let unknown = "4f1c1fd5-7a57-4d4f-9f4a-0c1b2c3d4e5f";
    let reply = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": unknown}]})),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        message(&reply),
        format!("Network {unknown} could not be found.")
    );
    assert_eq!(
        cloud
            .create(
                &admin,
                "2.37",
                base(json!({"networks": [{"uuid": "nope"}]}))
            )
            .status,
        400
    );
    assert_eq!(
        cloud
            .create(
                &admin,
                "2.36",
                base(json!({"networks": [{"uuid": "nope"}]}))
            )
            .status,
        400
    );
    assert_eq!(
        cloud
            .create(&admin, "2.37", base(json!({"networks": "everything"})))
            .status,
        400
    );
    assert_eq!(
        cloud
            .create(
                &admin,
                "2.37",
                base(json!({"networks": [{"fixed_ip": "10.2.0.9"}]}))
            )
            .status,
        400
    );
    assert_eq!(
        cloud
            .create(
                &admin,
                "2.41",
                base(json!({"networks": [{"uuid": net2, "tag": "a"}]}))
            )
            .status,
        400
    );
    let tagged = server_id(&cloud.create(
        &admin,
        "2.42",
        base(json!({"networks": [{"uuid": net2, "tag": "a"}]})),
    ));
    let tag_view = cloud.nova(
        &admin,
        "2.70",
        "GET",
        &format!("/servers/{tagged}/os-interface"),
        None,
    );
    assert_eq!(
        tag_view.json()["interfaceAttachments"][0]["tag"],
        "a",
        "{}",
        tag_view.text
    );
    // An unknown security group refuses the create, leaving no port.
    let before = cloud.all_ports(&admin).len();
    let reply = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"uuid": net2}], "security_groups": [{"name": "nope"}]})),
    );
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(cloud.all_ports(&admin).len(), before);

    // A port passed in: bound to the server, in use for others, unbound on delete.
    let made = cloud.neutron(
        &admin,
        "POST",
        "/ports",
        Some(&json!({"port": {"network_id": net2, "name": "mine"}})),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let mine = made.json()["port"]["id"]
        .as_str()
        .expect("port")
        .to_string();
    let with_port =
        server_id(&cloud.create(&admin, "2.37", base(json!({"networks": [{"port": mine}]}))));
    let bound = cloud
        .neutron(&admin, "GET", &format!("/ports/{mine}"), None)
        .json()["port"]
        .clone();
    assert_eq!(bound["device_id"], with_port.as_str());
    assert_eq!(bound["device_owner"], "compute:nova");
    let in_use = cloud.create(&admin, "2.37", base(json!({"networks": [{"port": mine}]})));
    assert_eq!(in_use.status, 409, "{}", in_use.text);
    assert_eq!(message(&in_use), format!("Port {mine} is still in use."));
    let no_port = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"port": unknown}]})),
    );
    assert_eq!(no_port.status, 400, "{}", no_port.text);
    let twice = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"port": mine}, {"port": mine}]})),
    );
    assert_eq!(twice.status, 400);
    let port_and_ip = cloud.create(
        &admin,
        "2.37",
        base(json!({"networks": [{"port": mine, "fixed_ip": "10.2.0.7"}]})),
    );
    assert_eq!(port_and_ip.status, 400);
    cloud.delete_and_wait(&admin, &with_port);
    let unbound = cloud.neutron(&admin, "GET", &format!("/ports/{mine}"), None);
    assert_eq!(unbound.status, 200, "the port passed in stays");
    assert_eq!(unbound.json()["port"]["device_id"], "");
    assert_eq!(unbound.json()["port"]["device_owner"], "");
    assert_eq!(unbound.json()["port"]["binding:host_id"], "");

    // Another project: admin's private network is not found, an external
    // network is forbidden, its own network works; the port quota refuses
    // what does not fit and leaves nothing behind; min_count 2 makes one
    // port per server.
    let (bob_project, bob) = member_of_new_project(&server, &admin, "bob");
    let reply = cloud.create(&bob, "2.37", base(json!({"networks": [{"uuid": net1}]})));
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = cloud.create(&bob, "2.37", base(json!({"networks": [{"uuid": public}]})));
    assert_eq!(reply.status, 403, "{}", reply.text);
    let reply = cloud.create(&bob, "2.37", base(json!({"networks": [{"port": port_id}]})));
    assert_eq!(reply.status, 400, "another project's port: {}", reply.text);
    let bobnet = cloud.network(&bob, "bobnet", "10.3.0.0/24", json!({}));
    let quota = cloud.neutron(
        &admin,
        "PUT",
        &format!("/quotas/{bob_project}"),
        Some(&json!({"quota": {"port": 1}})),
    );
    assert_eq!(quota.status, 200, "{}", quota.text);
    let over = cloud.create(
        &bob,
        "2.37",
        base(json!({"networks": "auto", "min_count": 2, "max_count": 2})),
    );
    assert_eq!(over.status, 403, "{}", over.text);
    assert!(cloud.all_ports(&bob).is_empty(), "the refusal left a port");
    let listed = cloud.nova(&bob, "2.73", "GET", "/servers", None).json();
    assert_eq!(listed["servers"].as_array().map(Vec::len), Some(0));
    let quota = cloud.neutron(
        &admin,
        "PUT",
        &format!("/quotas/{bob_project}"),
        Some(&json!({"quota": {"port": 10}})),
    );
    assert_eq!(quota.status, 200);
    let pair = cloud.create(
        &bob,
        "2.37",
        base(json!({"networks": [{"uuid": bobnet}], "min_count": 2,
        "max_count": 2, "security_groups": [{"name": "default"}]})),
    );
    assert_eq!(pair.status, 202, "{}", pair.text);
    assert_eq!(
        pair.json()["server"]["security_groups"][0]["name"],
        "default"
    );
    let listed = cloud.nova(&bob, "2.73", "GET", "/servers", None).json();
    let ids: Vec<String> = listed["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2);
    let mut macs = Vec::new();
    for id in &ids {
        let ports = cloud.ports_of(&bob, id);
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert_eq!(
            ports[0]["security_groups"].as_array().map(Vec::len),
            Some(1)
        );
        macs.push(ports[0]["mac_address"].clone());
    }
    assert_ne!(macs[0], macs[1]);

    // Delete: the ports made for the servers go.
    for id in [&first, &fixed, &tagged, &bare, &nonic] {
        cloud.delete_and_wait(&admin, id);
        assert!(cloud.ports_of(&admin, id).is_empty(), "ports of {id} left");
    }
    for id in &ids {
        cloud.delete_and_wait(&bob, id);
        assert!(cloud.ports_of(&bob, id).is_empty());
    }
    let left: Vec<Value> = cloud
        .all_ports(&admin)
        .into_iter()
        .filter(|p| {
            p["device_owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("compute:"))
        })
        .collect();
    assert!(left.is_empty(), "compute ports left: {left:?}");
}

/// A build waits for `network-vif-plugged` of its ports before the guest
/// starts (Nova's `vif_plugging_timeout`/`vif_plugging_is_fatal`). Without
/// the dataplane the event comes from the binding itself, as Neutron's noop
/// agent: the server is ACTIVE well within the timeout (had the event not
/// come, the build would have waited the whole timeout and gone to ERROR),
/// its port ACTIVE; Neutron's own events through `os-server-external-events`
/// for the server are accepted (200).
#[test]
fn a_build_waits_for_network_vif_plugged() {
    if !kvm_usable() {
        return;
    }
    let state = VmmStateDir::new("nv", "vif");
    let server = Server::start_in_with_args(
        Some(state.0.clone()),
        &[
            "--vif-plugging-timeout",
            "30",
            "--vif-plugging-is-fatal",
            "true",
        ],
    );
    let admin = server.admin_token();
    let cloud = Cloud { server: &server };
    let image = echo_image(&server, &admin, &state.0);
    let net = cloud.network(&admin, "vifnet", "10.9.0.0/24", json!({}));
    let started = Instant::now();
    let id = server_id(&cloud.create(
        &admin,
        "2.37",
        json!({"name": "vif", "imageRef": image, "flavorRef": "42",
               "networks": [{"uuid": net}]}),
    ));
    let shown = cloud.wait_status(&admin, &id, "ACTIVE");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the build waited for its event: {:?}",
        started.elapsed()
    );
    assert!(shown.get("fault").is_none(), "{shown}");
    let ports = cloud.ports_of(&admin, &id);
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["status"], "ACTIVE", "{ports:?}");
    let port_id = ports[0]["id"].as_str().expect("port id").to_string();
    // The build's instance action finished well (Nova records no action of
    // its own for network events).
    let actions = cloud.nova(
        &admin,
        "2.73",
        "GET",
        &format!("/servers/{id}/os-instance-actions"),
        None,
    );
    assert_eq!(actions.status, 200, "{}", actions.text);
    assert_eq!(
        actions.json()["instanceActions"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        1,
        "{}",
        actions.text
    );
    // Neutron's events through the API: known server, 200.
    let events = cloud.nova(
        &admin,
        "2.73",
        "POST",
        "/os-server-external-events",
        Some(&json!({"events": [
            {"name": "network-vif-plugged", "server_uuid": id, "tag": port_id},
            {"name": "network-vif-unplugged", "server_uuid": id, "tag": port_id,
             "status": "completed"}
        ]})),
    );
    assert_eq!(events.status, 200, "{}", events.text);
    let replies = events.json()["events"].clone();
    assert_eq!(replies[0]["code"], 200, "{replies}");
    assert_eq!(replies[0]["status"], "completed", "{replies}");
    assert_eq!(replies[1]["tag"], port_id.as_str(), "{replies}");
    // The port deleted through Neutron's API while bound (Neutron allows it):
    // the server's views lose it and the server starts again without it.
    // The `network-vif-deleted` it sends makes compute forget the port and
    // take the NIC out of a running VM; that part is checked by
    // compute/interfaces.rs's `a_port_deleted_through_the_network_api_...`
    // (without the dataplane nothing here tells the two apart).
    let stop = cloud.nova(
        &admin,
        "2.73",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"os-stop": null})),
    );
    assert_eq!(stop.status, 202, "{}", stop.text);
    cloud.wait_status(&admin, &id, "SHUTOFF");
    let deleted = cloud.neutron(&admin, "DELETE", &format!("/ports/{port_id}"), None);
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let started = Instant::now();
    let interfaces = loop {
        let list = cloud.nova(
            &admin,
            "2.73",
            "GET",
            &format!("/servers/{id}/os-interface"),
            None,
        );
        assert_eq!(list.status, 200, "{}", list.text);
        let attachments = list.json()["interfaceAttachments"].clone();
        if attachments.as_array().is_some_and(Vec::is_empty)
            || started.elapsed() > Duration::from_secs(10)
        {
            break attachments;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(interfaces, json!([]), "the deleted port's NIC stayed");
    let shown = cloud
        .nova(&admin, "2.73", "GET", &format!("/servers/{id}"), None)
        .json();
    assert_eq!(shown["server"]["addresses"], json!({}), "{shown}");
    // It starts again without the NIC.
    let start = cloud.nova(
        &admin,
        "2.73",
        "POST",
        &format!("/servers/{id}/action"),
        Some(&json!({"os-start": null})),
    );
    assert_eq!(start.status, 202, "{}", start.text);
    cloud.wait_status(&admin, &id, "ACTIVE");
    cloud.delete_and_wait(&admin, &id);
    assert!(cloud.ports_of(&admin, &id).is_empty());
}
