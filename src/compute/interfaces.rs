//! `os-interface` attach and detach (Nova's attach_interfaces): a port made
//! (or a user's port bound) in one transaction as a create makes them, its
//! NIC hot-added to the running VM through the driver (the VMM's PCI
//! hotplug), the NIC recorded in the server's `ports` so that every later
//! boot (reboot, start, resize, unshelve) has it; a detach asks the guest to
//! eject the NIC, then deletes the port (made by compute) or unbinds it
//! (passed in). A stopped server only has its ports changed: the next boot
//! brings the NICs it then has. Both record an instance action
//! (`attach_interface`, `detach_interface`).
//!
//! NICs need the dataplane (their taps): without it both answer 409, as
//! Nova does for a hypervisor that cannot attach interfaces.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::access::{load_authorized, load_for_action};
use super::build::{finish_action, record_action};
use super::networking::{self, InterfaceView, MAX_NICS, NetRequest, write_atomic};
use super::request::{self, IpAddress, Tag, Uuid, present};
use super::states::{Action, VmState};
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server, ServerPort};
use crate::http::{RequestId, json_response};
use crate::identity::Auth;

type S = Arc<ComputeState>;

fn bad(message: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(message.into())
}

/// `POST /servers/{id}/os-interface`'s body (Nova's
/// `attach_interfaces.create`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachBody {
    #[serde(rename = "interfaceAttachment", default, deserialize_with = "present")]
    attachment: Option<AttachArg>,
}

/// `interfaceAttachment`: a network or a port, one fixed address on the
/// network, and `tag` from 2.49.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachArg {
    #[serde(default, deserialize_with = "present")]
    net_id: Option<Uuid>,
    #[serde(default, deserialize_with = "present")]
    port_id: Option<Uuid>,
    #[serde(default, deserialize_with = "present")]
    fixed_ips: Option<Vec<FixedIp>>,
    #[serde(default, deserialize_with = "present")]
    tag: Option<Tag>,
}

/// One item of `fixed_ips`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedIp {
    ip_address: IpAddress,
}

/// Reads an attach's body as Nova's schema (`interfaceAttachment` with
/// `net_id`, `port_id`, one `fixed_ips` address, and `tag` from 2.49) and
/// its checks; an empty body asks for the project's one network.
pub fn parse_attach(mv: Mv, body: &[u8]) -> ComputeResult<NetRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NetRequest::default());
    }
    let AttachBody { attachment } = request::body(body)?;
    let Some(a) = attachment else {
        return Ok(NetRequest::default());
    };
    if a.tag.is_some() && !mv.at_least(49) {
        return Err(request::unexpected("interfaceAttachment", "tag"));
    }
    let fixed_ip = match a.fixed_ips {
        None => None,
        Some(mut items) if items.len() == 1 => items.pop().map(|f| f.ip_address.0),
        Some(items) => {
            return Err(bad(format!(
                "Invalid input for field/attribute fixed_ips. Value: {} items. One address is allowed",
                items.len()
            )));
        }
    };
    let network_id = a.net_id.map(|u| u.0);
    let port_id = a.port_id.map(|u| u.0);
    if network_id.is_some() && port_id.is_some() {
        return Err(bad("Must not input both network_id and port_id"));
    }
    if fixed_ip.is_some() && network_id.is_none() {
        return Err(bad("Must input network_id when request IP address"));
    }
    Ok(NetRequest {
        network_id,
        port_id,
        fixed_ip,
        tag: a.tag.map(|t| t.0),
    })
}

/// Nova's answer for a cloud whose servers cannot have NICs changed (no dataplane).
fn not_supported(attach: bool, id: &str) -> ComputeError {
    ComputeError::Conflict(if attach {
        format!("Attaching interfaces is not supported for instance {id}.")
    } else {
        format!("Detaching interfaces is not supported for instance {id}.")
    })
}

/// `POST /servers/{id}/os-interface`.
pub async fn attach_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let server =
        load_authorized(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:create").await?;
    let request = parse_attach(mv, &body)?;
    if s.config.network.dataplane.is_none() {
        return Err(not_supported(true, &server.id));
    }
    let admin = super::is_admin_context(&s, &ctx);
    let view = attach(&s, &server.id, admin, request, &rid.0, mv).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "interfaceAttachment": view }),
    ))
}

/// `DELETE /servers/{id}/os-interface/{port_id}`: 202, the NIC leaves in
/// the background (the instance action says how it went).
pub async fn detach_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    Extension(rid): Extension<RequestId>,
    Path((id, port)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server =
        load_authorized(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:delete").await?;
    if !server.ports.iter().any(|p| p.port_id == port) {
        return Err(ComputeError::NotFound(format!(
            "Port {port} is not attached"
        )));
    }
    if s.config.network.dataplane.is_none() {
        return Err(not_supported(false, &server.id));
    }
    let admin = super::is_admin_context(&s, &ctx);
    begin_detach(&s, &server.id, admin, &port, &rid.0).await?;
    Ok(super::empty(StatusCode::ACCEPTED))
}

/// Attaches one NIC to server `id` (already authorized): the port, the
/// record, the instance action, and the hot-add when the VM runs. A failed
/// hot-add takes the port back (deleted or unbound) and answers 500.
pub async fn attach(
    s: &S,
    id: &str,
    admin: bool,
    request: NetRequest,
    request_id: &str,
    mv: Mv,
) -> ComputeResult<InterfaceView> {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let (id_owned, rid) = (id.to_string(), request_id.to_string());
    let (server, added) = write_atomic(s, move |tx| {
        let mut server = load_for_action(tx, &id_owned, admin, Action::AttachInterface)?;
        if server.ports.len() >= MAX_NICS {
            return Err(bad(format!(
                "Instance {id_owned} has the most interfaces a server may have ({MAX_NICS})."
            )));
        }
        let plan = networking::plan_attach(tx, &request, &server.project_id, admin)?;
        let host = server.host.clone().unwrap_or_else(super::hosts::hostname);
        let made = networking::make_ports(tx, &plan, &server, &host)?;
        let Some(added) = made.into_iter().next() else {
            return Err(ComputeError::Internal("no port was made".into()));
        };
        server.ports.push(added.clone());
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        record_action(
            tx,
            &server,
            &rid,
            Action::AttachInterface.name(),
            now_unix(),
        )?;
        Ok((server, added))
    })
    .await?;
    networking::notify(s);
    s.config.events.server(&server.id, &server.project_id);
    if server.vm_state == VmState::Active
        && let Err(e) = s.driver.attach_nic(id, &added).await
    {
        tracing::warn!(server = %id, port = %added.port_id, error = %e, "cannot hot-add a NIC");
        take_back(s, id, &added).await;
        s.config.events.server(id, &server.project_id);
        finish_action(s, id, request_id, None, false, Some(e.to_string())).await;
        return Err(ComputeError::Internal(format!(
            "Failed to attach network adapter device to {id}"
        )));
    }
    finish_action(s, id, request_id, None, true, None).await;
    let server = Server {
        ports: vec![added.clone()],
        ..server
    };
    networking::interfaces_of(s, &server, mv)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ComputeError::Internal(format!("port {} is gone", added.port_id)))
}

/// Forgets `port` on server `id` and releases it (deleted when compute made
/// it, else unbound).
async fn take_back(s: &S, id: &str, port: &ServerPort) {
    let (id_owned, port) = (id.to_string(), port.clone());
    let result = write_atomic(s, move |tx| {
        let Some(mut server) = db::get_server(tx, &id_owned)? else {
            return Ok(());
        };
        server.ports.retain(|p| p.port_id != port.port_id);
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        let only = Server {
            ports: vec![port],
            ..server
        };
        networking::release(tx, &only)
    })
    .await;
    if let Err(e) = result {
        tracing::error!(server = %id, error = %e, "cannot release a detached port");
    }
    networking::notify(s);
}

/// Checks a detach (state, lock) and records its instance action; the NIC
/// leaves in the background ([`detach`]).
pub async fn begin_detach(
    s: &S,
    id: &str,
    admin: bool,
    port_id: &str,
    request_id: &str,
) -> ComputeResult<()> {
    let (id_owned, rid, port) = (id.to_string(), request_id.to_string(), port_id.to_string());
    s.write(move |tx| {
        let server = load_for_action(tx, &id_owned, admin, Action::DetachInterface)?;
        if !server.ports.iter().any(|p| p.port_id == port) {
            return Err(ComputeError::NotFound(format!(
                "Port {port} is not attached"
            )));
        }
        record_action(
            tx,
            &server,
            &rid,
            Action::DetachInterface.name(),
            now_unix(),
        )?;
        Ok(())
    })
    .await?;
    let (s2, id2, port2, rid2) = (
        s.clone(),
        id.to_string(),
        port_id.to_string(),
        request_id.to_string(),
    );
    tokio::spawn(async move {
        let result = detach(&s2, &id2, &port2).await;
        let ok = result.is_ok();
        if let Err(e) = &result {
            tracing::warn!(server = %id2, port = %port2, error = %e, "cannot detach a NIC");
        }
        finish_action(&s2, &id2, &rid2, None, ok, result.err()).await;
    });
    Ok(())
}

/// Takes `port_id`'s NIC out of server `id` under the server's lock: the
/// guest's eject when the VM runs, then the port released. A guest that
/// does not eject keeps the NIC and the port (the detach can be asked
/// again; the VMM still completes the eject should it come later).
pub async fn detach(s: &S, id: &str, port_id: &str) -> Result<(), String> {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let id_owned = id.to_string();
    let server = s
        .read(move |conn| Ok(db::get_server(conn, &id_owned)?))
        .await
        .map_err(|e| e.to_string())?
        .filter(|sv| !sv.deleted)
        .ok_or_else(|| format!("server {id} is gone"))?;
    let Some(index) = server.ports.iter().position(|p| p.port_id == port_id) else {
        // Detached meanwhile.
        return Ok(());
    };
    let port = server.ports[index].clone();
    if s.driver.is_alive(id) {
        s.driver
            .detach_nic(id, &port, index)
            .await
            .map_err(|e| e.to_string())?;
    }
    take_back(s, id, &port).await;
    s.config.events.server(id, &server.project_id);
    Ok(())
}

/// `network-vif-deleted`: the port `port_id` bound to server `id` was
/// deleted through the network API (Neutron lets a user do that; Nova then
/// detaches the interface). The NIC leaves the running VM as in a detach,
/// and the server forgets the port even when the guest does not eject it:
/// the port, its addresses and its tap are gone whatever the guest does,
/// and the next boot must not look for them. No instance action, as Nova.
pub async fn port_deleted(s: &S, id: &str, port_id: &str) {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let id_owned = id.to_string();
    let server = match s
        .read(move |conn| Ok(db::get_server(conn, &id_owned)?))
        .await
    {
        Ok(Some(server)) if !server.deleted => server,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(server = %id, port = %port_id, error = %e, "network-vif-deleted: cannot read the server");
            return;
        }
    };
    let Some(index) = server.ports.iter().position(|p| p.port_id == port_id) else {
        return;
    };
    let port = server.ports[index].clone();
    if s.driver.is_alive(id)
        && let Err(e) = s.driver.detach_nic(id, &port, index).await
    {
        tracing::warn!(server = %id, port = %port_id, error = %e,
            "network-vif-deleted: the guest kept the NIC of the deleted port");
    }
    take_back(s, id, &port).await;
    s.config.events.server(id, &server.project_id);
    tracing::info!(server = %id, port = %port_id, "network-vif-deleted: the port's NIC is gone");
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::compute::driver::ComputeDriver;
    use crate::compute::fake_driver::FakeDriver;
    use crate::compute::states::{PowerState, TaskState};
    use crate::network::model::{Network, Port, Subnet};
    use crate::network::store::{self as nstore, Std};

    const NET: &str = "0b6f3c56-52b6-4d0e-9d8e-2f7a3f0d1a11";

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn attach_bodies_follow_novas_schema() {
        let p = |mv: u16, v: Value| parse_attach(Mv(mv), &body(v));
        assert_eq!(parse_attach(Mv(1), b"").ok(), Some(NetRequest::default()));
        assert_eq!(
            p(1, json!({"interfaceAttachment": {}})).ok(),
            Some(NetRequest::default())
        );
        let ok = p(
            1,
            json!({"interfaceAttachment": {"net_id": NET, "fixed_ips": [{"ip_address": "10.0.0.9"}]}}),
        )
        .expect("valid");
        assert_eq!(ok.network_id.as_deref(), Some(NET));
        assert_eq!(ok.fixed_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(
            p(
                49,
                json!({"interfaceAttachment": {"port_id": NET, "tag": "eth1"}})
            )
            .ok()
            .and_then(|r| r.tag),
            Some("eth1".into())
        );
        for bad in [
            json!({"interfaceAttachment": {"net_id": "x"}}),
            json!({"interfaceAttachment": {"port_id": 1}}),
            json!({"interfaceAttachment": {"net_id": NET, "port_id": NET}}),
            json!({"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.0.0.9"}]}}),
            json!({"interfaceAttachment": {"net_id": NET, "fixed_ips": [{"ip_address": "10.0.0"}]}}),
            json!({"interfaceAttachment": {"net_id": NET, "fixed_ips": []}}),
            json!({"interfaceAttachment": {"net_id": NET, "fixed_ips": [{"ip_address": "10.0.0.9", "x": 1}]}}),
            json!({"interfaceAttachment": {"net_id": NET, "other": 1}}),
            json!({"interfaceAttachment": {"port_id": NET, "tag": "eth1"}}),
            json!({"interfaceAttachment": "x"}),
            json!({"other": {}}),
        ] {
            assert!(p(48, bad.clone()).is_err(), "{bad}");
        }
        assert!(
            p(
                49,
                json!({"interfaceAttachment": {"port_id": NET, "tag": "a/b"}})
            )
            .is_err()
        );
        assert_eq!(
            request::refused(p(
                48,
                json!({"interfaceAttachment": {"port_id": NET, "tag": "eth1"}})
            )),
            "Invalid input for field/attribute interfaceAttachment. Additional properties are not allowed ('tag' was unexpected)"
        );
        assert_eq!(
            request::refused(p(1, json!({"interfaceAttachment": {"net_id": "x"}}))),
            "Invalid input for field/attribute net_id. Value: \"x\". \"x\" is not a 'uuid'"
        );
        assert_eq!(
            request::refused(p(1, json!({"other": {}}))),
            "Additional properties are not allowed ('other' was unexpected)"
        );
    }

    struct Cloud {
        s: S,
        fake: Arc<FakeDriver>,
        dir: std::path::PathBuf,
        net: String,
    }

    impl Drop for Cloud {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn std_of(project: &str) -> Std {
        Std::new(project, String::new())
    }

    /// A compute state over a fresh state file and the fake driver: network
    /// `net1` (10.9.0.0/24) of project `p`, one ACTIVE server `srv` of `p`
    /// whose VM runs.
    async fn cloud(name: &str) -> Cloud {
        let dir =
            std::env::temp_dir().join(format!("yunhe-interfaces-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = crate::db::Db::open(&dir.join("yunhe.db")).expect("db");
        let identity = crate::identity::IdentityState::new(
            db,
            "http://127.0.0.1:1".into(),
            Arc::new(crate::policy::Policy::defaults().expect("policy")),
            Default::default(),
        )
        .expect("identity");
        let fake = Arc::new(FakeDriver::default());
        let s = ComputeState::new(identity, Default::default(), fake.clone());
        let net = Network {
            std: std_of("p"),
            name: "net1".into(),
            admin_state_up: true,
            status: "ACTIVE".into(),
            shared: false,
            external: false,
            network_type: "vxlan".into(),
            physical_network: None,
            segmentation_id: None,
            mtu: 1450,
            port_security_enabled: true,
            availability_zone_hints: Vec::new(),
            availability_zones: Vec::new(),
            is_default: false,
            ipv4_address_scope: None,
            ipv6_address_scope: None,
            l2_adjacency: true,
        };
        let subnet = Subnet {
            std: std_of("p"),
            name: "sub1".into(),
            network_id: net.std.id.clone(),
            ip_version: 4,
            cidr: "10.9.0.0/24".into(),
            gateway_ip: Some("10.9.0.1".into()),
            allocation_pools: vec![crate::network::ipam::Pool {
                start: "10.9.0.2".into(),
                end: "10.9.0.254".into(),
            }],
            dns_nameservers: Vec::new(),
            host_routes: Vec::new(),
            enable_dhcp: true,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            subnetpool_id: None,
            service_types: Vec::new(),
            segment_id: None,
            dns_publish_fixed_ip: false,
        };
        let net_id = net.std.id.clone();
        let server = Server {
            id: "srv".into(),
            name: "vm".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            vm_state: VmState::Active,
            power_state: PowerState::Running,
            reservation_id: "r-1".into(),
            hostname: "vm".into(),
            ..Default::default()
        };
        let stored = server.clone();
        s.write(move |tx| {
            nstore::insert(tx, &net).map_err(|e| ComputeError::Internal(e.to_string()))?;
            nstore::insert(tx, &subnet).map_err(|e| ComputeError::Internal(e.to_string()))?;
            Ok(db::insert_server(tx, &stored)?)
        })
        .await
        .expect("insert");
        fake.spawn(&server, false).await.expect("spawn");
        Cloud {
            s,
            fake,
            dir,
            net: net_id,
        }
    }

    async fn stored(s: &S) -> Server {
        s.read(|conn| Ok(db::get_server(conn, "srv")?))
            .await
            .expect("read")
            .expect("server")
    }

    async fn port(s: &S, id: &str) -> Option<Port> {
        let id = id.to_string();
        s.read(move |conn| {
            nstore::load::<Port>(conn, &id).map_err(|e| ComputeError::Internal(e.to_string()))
        })
        .await
        .expect("read")
    }

    async fn actions(s: &S) -> Vec<(String, Option<String>)> {
        s.read(|conn| Ok(db::list_actions(conn, "srv")?))
            .await
            .expect("actions")
            .into_iter()
            .map(|a| {
                let result = a.events.last().and_then(|e| e.result.clone());
                (a.action, result)
            })
            .collect()
    }

    fn on(net: &str) -> NetRequest {
        NetRequest {
            network_id: Some(net.to_string()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn attach_hot_adds_a_nic_and_detach_takes_it_and_its_port_away() {
        let c = cloud("flow").await;
        let view = attach(&c.s, "srv", false, on(&c.net), "req-1", Mv(1))
            .await
            .expect("attach");
        assert_eq!(view.net_id, c.net);
        assert_eq!(view.fixed_ips.len(), 1);
        let sv = stored(&c.s).await;
        assert_eq!(sv.ports.len(), 1);
        let added = sv.ports[0].clone();
        assert!(added.created);
        assert_eq!(added.port_id, view.port_id);
        assert_eq!(
            c.fake.calls().last().cloned(),
            Some(format!("attach_nic srv {}", added.port_id))
        );
        let p = port(&c.s, &added.port_id).await.expect("the port");
        assert_eq!(p.device_id, "srv");
        assert!(p.device_owner.starts_with("compute:"));
        // A second NIC with a fixed address.
        let mut second = on(&c.net);
        second.fixed_ip = Some("10.9.0.77".into());
        let view2 = attach(&c.s, "srv", false, second.clone(), "req-2", Mv(1))
            .await
            .expect("attach");
        assert_eq!(view2.fixed_ips[0].ip_address, "10.9.0.77");
        // The address is taken now: 409.
        assert!(matches!(
            attach(&c.s, "srv", false, second, "req-3", Mv(1)).await,
            Err(ComputeError::Conflict(_))
        ));
        // Detach: the NIC leaves, then the port (made by compute) is deleted.
        begin_detach(&c.s, "srv", false, &added.port_id, "req-4")
            .await
            .expect("detach");
        detach(&c.s, "srv", &added.port_id).await.expect("detach");
        let sv = stored(&c.s).await;
        assert_eq!(sv.ports.len(), 1);
        assert_eq!(sv.ports[0].port_id, view2.port_id);
        assert!(port(&c.s, &added.port_id).await.is_none());
        assert!(
            c.fake
                .calls()
                .contains(&format!("detach_nic srv {}", added.port_id))
        );
        let acts = actions(&c.s).await;
        assert!(
            acts.iter()
                .any(|(a, r)| a == "attach_interface" && r.as_deref() == Some("Success"))
        );
        assert!(acts.iter().any(|(a, _)| a == "detach_interface"));
    }

    #[tokio::test]
    async fn a_port_deleted_through_the_network_api_leaves_the_server() {
        let c = cloud("vifdel").await;
        let view = attach(&c.s, "srv", false, on(&c.net), "req-1", Mv(1))
            .await
            .expect("attach");
        let kept = attach(&c.s, "srv", false, on(&c.net), "req-2", Mv(1))
            .await
            .expect("attach");
        // Neutron's side: the port row goes (ports::delete), then the event.
        let gone = view.port_id.clone();
        c.s.write(move |tx| {
            let port = nstore::load::<Port>(tx, &gone)
                .map_err(|e| ComputeError::Internal(e.to_string()))?
                .ok_or_else(|| ComputeError::Internal("no port".into()))?;
            crate::network::delete_port_in(tx, &port)
                .map_err(|e| ComputeError::Internal(e.to_string()))
        })
        .await
        .expect("delete the port");
        port_deleted(&c.s, "srv", &view.port_id).await;
        let sv = stored(&c.s).await;
        assert_eq!(
            sv.ports
                .iter()
                .map(|p| p.port_id.clone())
                .collect::<Vec<_>>(),
            vec![kept.port_id.clone()]
        );
        assert!(
            c.fake
                .calls()
                .contains(&format!("detach_nic srv {}", view.port_id))
        );
        // Nova records no instance action for network events.
        assert!(
            !actions(&c.s)
                .await
                .iter()
                .any(|(a, _)| a == "detach_interface")
        );
        // Again, or for a port the server never had: nothing happens.
        port_deleted(&c.s, "srv", &view.port_id).await;
        port_deleted(&c.s, "srv", "no-such-port").await;
        assert_eq!(stored(&c.s).await.ports.len(), 1);
        assert!(port(&c.s, &kept.port_id).await.is_some());
    }

    #[tokio::test]
    async fn a_users_port_is_bound_and_only_unbound_on_detach() {
        let c = cloud("userport").await;
        let net_id = c.net.clone();
        let made =
            c.s.write(move |tx| {
                let net: Network =
                    nstore::must(tx, &net_id).map_err(|e| ComputeError::Internal(e.to_string()))?;
                crate::network::new_port(tx, &net, "p", Default::default())
                    .map_err(|e| ComputeError::Internal(e.to_string()))
            })
            .await
            .expect("port");
        let request = NetRequest {
            port_id: Some(made.std.id.clone()),
            ..Default::default()
        };
        attach(&c.s, "srv", false, request.clone(), "req-1", Mv(1))
            .await
            .expect("attach");
        let sv = stored(&c.s).await;
        assert!(!sv.ports[0].created);
        assert_eq!(
            port(&c.s, &made.std.id).await.map(|p| p.device_id),
            Some("srv".into())
        );
        // In use now: 409.
        assert!(matches!(
            attach(&c.s, "srv", false, request, "req-2", Mv(1)).await,
            Err(ComputeError::Conflict(_))
        ));
        detach(&c.s, "srv", &made.std.id).await.expect("detach");
        let p = port(&c.s, &made.std.id).await.expect("still there");
        assert_eq!(p.device_id, "");
        assert!(stored(&c.s).await.ports.is_empty());
    }

    #[tokio::test]
    async fn refusals_are_novas() {
        let c = cloud("refusals").await;
        let missing = "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c";
        let unknown_port = NetRequest {
            port_id: Some(missing.into()),
            ..Default::default()
        };
        assert!(matches!(
            attach(&c.s, "srv", false, unknown_port, "r", Mv(1)).await,
            Err(ComputeError::NotFound(_))
        ));
        assert!(matches!(
            attach(&c.s, "srv", false, on(missing), "r", Mv(1)).await,
            Err(ComputeError::NotFound(_))
        ));
        // One NIC, for the detaches below.
        attach(&c.s, "srv", false, on(&c.net), "r", Mv(1))
            .await
            .expect("attach");
        // States: paused, a task running, locked.
        for (vm_state, task, locked) in [
            (VmState::Paused, None, false),
            (VmState::Active, Some(TaskState::Rebooting), false),
            (VmState::Active, None, true),
            (VmState::ShelvedOffloaded, None, false),
        ] {
            crate::compute::build::update_server(&c.s, "srv", move |sv| {
                sv.vm_state = vm_state;
                sv.task_state = task;
                sv.locked = locked;
            })
            .await;
            let r = attach(&c.s, "srv", false, on(&c.net), "r", Mv(1)).await;
            assert!(matches!(r, Err(ComputeError::Conflict(_))), "{vm_state}");
            let sv = stored(&c.s).await;
            let first = sv.ports[0].port_id.clone();
            assert!(matches!(
                begin_detach(&c.s, "srv", false, &first, "r").await,
                Err(ComputeError::Conflict(_))
            ));
        }
        // A stopped server: the port is recorded, no hot-add.
        crate::compute::build::update_server(&c.s, "srv", |sv| {
            sv.vm_state = VmState::Stopped;
            sv.power_state = PowerState::Shutdown;
            sv.task_state = None;
            sv.locked = false;
        })
        .await;
        c.fake.stop("srv", None).await;
        let calls = c.fake.calls().len();
        attach(&c.s, "srv", false, on(&c.net), "r", Mv(1))
            .await
            .expect("attach to a stopped server");
        assert_eq!(c.fake.calls().len(), calls, "no driver call");
        assert_eq!(stored(&c.s).await.ports.len(), 2);
        // Detach of a port the server does not have: 404.
        assert!(matches!(
            begin_detach(&c.s, "srv", false, missing, "r").await,
            Err(ComputeError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_failed_hot_add_gives_the_port_back() {
        let c = cloud("failing").await;
        c.fake.fail("attach_nic");
        let r = attach(&c.s, "srv", false, on(&c.net), "req-1", Mv(1)).await;
        assert!(matches!(r, Err(ComputeError::Internal(_))));
        assert!(stored(&c.s).await.ports.is_empty());
        let net = c.net.clone();
        let left: Vec<Port> =
            c.s.read(move |conn| {
                nstore::children(conn, &net).map_err(|e| ComputeError::Internal(e.to_string()))
            })
            .await
            .expect("ports");
        assert!(left.is_empty(), "the port made is deleted again");
        let acts = actions(&c.s).await;
        assert_eq!(
            acts.iter()
                .find(|(a, _)| a == "attach_interface")
                .and_then(|(_, r)| r.clone())
                .as_deref(),
            Some("Error")
        );
    }

    #[tokio::test]
    async fn a_guest_that_does_not_eject_keeps_the_nic_and_the_port() {
        let c = cloud("noeject").await;
        let view = attach(&c.s, "srv", false, on(&c.net), "req-1", Mv(1))
            .await
            .expect("attach");
        c.fake.fail("detach_nic");
        assert!(detach(&c.s, "srv", &view.port_id).await.is_err());
        assert_eq!(stored(&c.s).await.ports.len(), 1);
        assert!(port(&c.s, &view.port_id).await.is_some());
    }
}
