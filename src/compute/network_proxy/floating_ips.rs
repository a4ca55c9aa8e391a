//! Nova's `os-floating-ips` and `os-floating-ip-pools` proxies (below
//! 2.36) and the `addFloatingIp`/`removeFloatingIp` (and refused
//! `addFixedIp`/`removeFixedIp`) actions.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::security_groups::server_ports;
use super::{S, accepted, caller, changed, from_network, proxy_allowed};
use crate::compute::access;
use crate::compute::networking::write_atomic;
use crate::compute::request::{NonEmpty, Text, body, present};
use crate::compute::{ComputeError, ComputeResult, Mv};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::network::model::{FloatingIp, Network, Port};
use crate::network::{self, Caller, NetworkError, store};

/// A floating IP in Nova's proxy format.
#[derive(Debug, Serialize)]
pub(super) struct NovaFloatingIp {
    id: String,
    ip: String,
    pool: String,
    fixed_ip: Option<String>,
    instance_id: Option<String>,
}

pub(super) fn floating_view(conn: &Connection, f: &FloatingIp) -> ComputeResult<NovaFloatingIp> {
    let pool = store::load::<Network>(conn, &f.floating_network_id)
        .map_err(from_network)?
        .map_or_else(|| f.floating_network_id.clone(), |n| n.name);
    let instance_id = match &f.port_id {
        Some(p) => store::load::<Port>(conn, p)
            .map_err(from_network)?
            .map(|p| p.device_id)
            .filter(|d| !d.is_empty()),
        None => None,
    };
    Ok(NovaFloatingIp {
        id: f.std.id.clone(),
        ip: f.floating_ip_address.clone(),
        pool,
        fixed_ip: f.fixed_ip_address.clone(),
        instance_id,
    })
}

pub(super) fn floating_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Floating IP not found for ID {id}"))
}

/// The caller's floating IP with this address (Nova's
/// `get_floating_ip_by_address`), else 404.
pub(super) fn floating_by_address(
    conn: &Connection,
    c: &Caller,
    address: &str,
) -> ComputeResult<FloatingIp> {
    let all: Vec<FloatingIp> = store::all(conn).map_err(from_network)?;
    all.into_iter()
        .find(|f| f.floating_ip_address == address && (c.admin || f.std.project_id == c.project))
        .ok_or_else(|| ComputeError::NotFound("floating IP not found".into()))
}

pub(super) async fn floating_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-floating-ips:list")?;
    let project = ctx.project_id().unwrap_or_default().to_string();
    let list = s
        .read(move |conn| {
            let all: Vec<FloatingIp> = store::all(conn).map_err(from_network)?;
            all.iter()
                .filter(|f| f.std.project_id == project)
                .map(|f| floating_view(conn, f))
                .collect::<ComputeResult<Vec<_>>>()
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"floating_ips": list}),
    ))
}

pub(super) async fn floating_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-floating-ips:show")?;
    let c = caller(&s, &ctx);
    let view = s
        .read(move |conn| {
            let f =
                network::visible_floating_ip(conn, &c, &id).map_err(|_| floating_not_found(&id))?;
            floating_view(conn, &f)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"floating_ip": view})))
}

/// The external network a pool names (name or id); without one, the
/// network named `nova` (Nova's `default_floating_pool`) or else the only
/// external network.
pub(super) fn pool_network(
    conn: &Connection,
    c: &Caller,
    pool: Option<&str>,
) -> ComputeResult<Network> {
    let not_found = || ComputeError::NotFound("Floating IP pool not found.".into());
    let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
    let mut external = Vec::new();
    for n in nets.into_iter().filter(|n| n.external) {
        if network::visible_network(conn, c, &n.std.id).is_ok() {
            external.push(n);
        }
    }
    let chosen: Vec<&Network> = match pool {
        Some(p) => {
            let by_id: Vec<&Network> = external.iter().filter(|n| n.std.id == p).collect();
            if by_id.is_empty() {
                external.iter().filter(|n| n.name == p).collect()
            } else {
                by_id
            }
        }
        None => {
            let nova: Vec<&Network> = external.iter().filter(|n| n.name == "nova").collect();
            if nova.is_empty() && external.len() == 1 {
                external.iter().collect()
            } else {
                nova
            }
        }
    };
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_found()),
        _ => Err(ComputeError::Conflict(format!(
            "Multiple floating IP pools matches found for name '{}'",
            pool.unwrap_or("nova")
        ))),
    }
}

pub(super) async fn floating_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-floating-ips:create")?;
    let pool = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        body::<FloatingCreate>(&bytes)?.pool.map(|p| p.0)
    };
    let c = caller(&s, &ctx);
    let view = write_atomic(&s, move |tx| {
        let net = pool_network(tx, &c, pool.as_deref())?;
        let mut body = Map::new();
        body.insert("floating_network_id".into(), json!(net.std.id));
        let f = network::create_floating_ip_in(tx, &c, &body).map_err(|e| match e {
            NetworkError::Conflict {
                kind: "OverQuota", ..
            } => ComputeError::QuotaExceeded(format!(
                "IP allocation over quota in pool {}.",
                net.name
            )),
            NetworkError::Conflict {
                kind: "IpAddressGenerationFailure",
                ..
            } => ComputeError::NotFound(format!("No more floating IPs in pool {}.", net.name)),
            other => from_network(other),
        })?;
        floating_view(tx, &f)
    })
    .await?;
    changed(&s);
    Ok(json_response(StatusCode::OK, &json!({"floating_ip": view})))
}

pub(super) async fn floating_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-floating-ips:delete")?;
    let c = caller(&s, &ctx);
    write_atomic(&s, move |tx| {
        network::visible_floating_ip(tx, &c, &id).map_err(|_| floating_not_found(&id))?;
        network::delete_floating_ip_in(tx, &c, &id).map_err(from_network)
    })
    .await?;
    changed(&s);
    Ok(accepted())
}

pub(super) async fn pools(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-floating-ip-pools")?;
    let c = caller(&s, &ctx);
    let names = s
        .read(move |conn| {
            let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
            Ok(nets
                .into_iter()
                .filter(|n| n.external && network::visible_network(conn, &c, &n.std.id).is_ok())
                .map(|n| json!({"name": n.name}))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"floating_ip_pools": names}),
    ))
}

/// `POST /os-floating-ips` (Nova's schema leaves other members free; a
/// `null` pool is the default one, as an absent one).
#[derive(Debug, Deserialize)]
pub(super) struct FloatingCreate {
    #[serde(default)]
    pool: Option<Text>,
}

/// `addFloatingIp`'s argument (other members are ignored, as before).
#[derive(Debug, Deserialize)]
pub(super) struct AddFloatingIp {
    address: NonEmpty,
    #[serde(default, deserialize_with = "present")]
    fixed_address: Option<NonEmpty>,
}

/// `removeFloatingIp`'s and `removeFixedIp`'s argument.
#[derive(Debug, Deserialize)]
pub(super) struct AddressArg {
    address: NonEmpty,
}

/// `addFixedIp`'s argument: `networkId`, a string or a number.
#[derive(Debug, Deserialize)]
pub(super) struct AddFixedIp {
    #[serde(rename = "networkId", default)]
    network_id: Option<Value>,
}

/// An action's argument read into its declared type, members named under
/// the action. An argument that is not an object reads as one with no
/// members (so the first required member is what is reported missing), as
/// these proxies always answered.
pub(super) fn proxy_arg<T: serde::de::DeserializeOwned>(
    action: &str,
    arg: &Value,
) -> ComputeResult<T> {
    let arg = if arg.is_object() {
        arg.clone()
    } else {
        Value::Object(Map::new())
    };
    crate::compute::request::action_arg(action, arg)
}

pub(super) fn ipv4(text: &str, key: &str) -> ComputeResult<()> {
    if text.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {text}. '{text}' is not a 'ipv4'"
        )));
    }
    Ok(())
}

/// `addFloatingIp`: the project's floating IP `address` goes to the
/// server's port holding `fixed_address` (else its first fixed IPv4).
pub async fn add_floating_ip(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let request: AddFloatingIp = proxy_arg("addFloatingIp", arg)?;
    let address = request.address.0;
    ipv4(&address, "address")?;
    let fixed_address = match request.fixed_address {
        None => None,
        Some(NonEmpty(f)) => {
            if f.parse::<std::net::IpAddr>().is_err() {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute fixed_address. Value: {f}. '{f}' is not a 'ip-address'"
                )));
            }
            Some(f)
        }
    };
    let server = access::load(s, ctx, id).await?;
    let c = caller(s, ctx);
    write_atomic(s, move |tx| {
        let ports = server_ports(tx, &server)?;
        if ports.is_empty() {
            return Err(ComputeError::BadRequest(
                "Instance network is not ready yet".into(),
            ));
        }
        let fixed: Vec<(&Port, &str)> = ports
            .iter()
            .flat_map(|p| p.fixed_ips.iter().map(move |f| (p, f.ip_address.as_str())))
            .collect();
        if fixed.is_empty() {
            return Err(ComputeError::BadRequest(
                "No fixed IPs associated to instance".into(),
            ));
        }
        let (port, chosen) = match &fixed_address {
            Some(want) => *fixed.iter().find(|(_, ip)| ip == want).ok_or_else(|| {
                ComputeError::BadRequest("Specified fixed address not assigned to instance".into())
            })?,
            None => *fixed
                .iter()
                .find(|(_, ip)| ip.parse::<std::net::Ipv4Addr>().is_ok())
                .ok_or_else(|| {
                    ComputeError::BadRequest(format!(
                        "Unable to associate floating IP {address} to any fixed IPs for instance {}. Instance has no fixed IPv4 addresses to associate.",
                        server.id
                    ))
                })?,
        };
        let f = floating_by_address(tx, &c, &address)?;
        network::set_floating_ip_port_in(
            tx,
            &c,
            &f.std.id,
            Some((&port.std.id, Some(chosen.to_string()))),
        )
        .map_err(|e| match e {
            NetworkError::Db(d) => ComputeError::Db(d),
            NetworkError::Forbidden(m) => ComputeError::Forbidden(m),
            other => ComputeError::BadRequest(format!(
                "Unable to associate floating IP {address} to fixed IP {chosen} for instance {}. Error: {other}",
                server.id
            )),
        })?;
        Ok(())
    })
    .await?;
    changed(s);
    Ok(accepted())
}

/// `removeFloatingIp`: 409 unless the address is on one of the server's
/// ports.
pub async fn remove_floating_ip(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let address = proxy_arg::<AddressArg>("removeFloatingIp", arg)?.address.0;
    ipv4(&address, "address")?;
    let server = access::load(s, ctx, id).await?;
    let c = caller(s, ctx);
    write_atomic(s, move |tx| {
        let f = floating_by_address(tx, &c, &address)?;
        let ports = server_ports(tx, &server)?;
        let on_server = f
            .port_id
            .as_ref()
            .is_some_and(|p| ports.iter().any(|port| &port.std.id == p));
        if !on_server {
            return Err(ComputeError::Conflict(format!(
                "Floating IP {address} is not associated with instance {}.",
                server.id
            )));
        }
        network::set_floating_ip_port_in(tx, &c, &f.std.id, None).map_err(from_network)?;
        Ok(())
    })
    .await?;
    changed(s);
    Ok(accepted())
}

/// `addFixedIp`/`removeFixedIp`: a new address means a new NIC in a
/// running guest (Nova's neutron driver makes a port on the network and
/// plugs it), and taking one off changes a NIC under a running guest; the
/// VMM cannot hot-plug PCI devices yet, so both answer 409 as Nova does
/// when the hypervisor cannot attach an interface.
pub async fn fixed_ip_action(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
    add: bool,
) -> ComputeResult<Response> {
    if add {
        match proxy_arg::<AddFixedIp>("addFixedIp", arg)?.network_id {
            Some(Value::String(_)) | Some(Value::Number(_)) => {}
            _ => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute addFixedIp. 'networkId' is a required property"
                        .into(),
                ));
            }
        }
    } else {
        let address = proxy_arg::<AddressArg>("removeFixedIp", arg)?.address.0;
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute address. Value: {address}. '{address}' is not a 'ip-address'"
            )));
        }
    }
    let server = access::load(s, ctx, id).await?;
    Err(ComputeError::Conflict(if add {
        format!(
            "Adding a fixed IP needs a new interface plugged into instance {}, and this cloud's hypervisor cannot hot-plug interfaces yet; attach the server to the network at create time.",
            server.id
        )
    } else {
        format!(
            "Removing a fixed IP changes an interface of instance {} while it runs, and this cloud's hypervisor cannot hot-plug interfaces yet; change the port through the Network service.",
            server.id
        )
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compute::request::refused;

    #[test]
    fn floating_ip_requests_keep_novas_wording() {
        let create: FloatingCreate = body(br#"{"pool": "public", "x": 1}"#).expect("accepted");
        assert_eq!(create.pool, Some(Text("public".into())));
        let create: FloatingCreate = body(br#"{"pool": null}"#).expect("accepted");
        assert_eq!(create.pool, None);
        assert_eq!(
            refused(body::<FloatingCreate>(br#"{"pool": 1}"#)),
            "Invalid input for field/attribute pool. Value: 1. 1 is not of type 'string'"
        );
        let add: AddFloatingIp = proxy_arg(
            "addFloatingIp",
            &json!({"address": "10.0.0.5", "fixed_address": "192.168.0.3"}),
        )
        .expect("accepted");
        assert_eq!(add.address.0, "10.0.0.5");
        assert_eq!(
            add.fixed_address.map(|f| f.0).as_deref(),
            Some("192.168.0.3")
        );
        assert_eq!(
            refused(proxy_arg::<AddFloatingIp>("addFloatingIp", &json!({}))),
            "Invalid input for field/attribute addFloatingIp. 'address' is a required property"
        );
        assert_eq!(
            refused(proxy_arg::<AddFloatingIp>("addFloatingIp", &json!("x"))),
            "Invalid input for field/attribute addFloatingIp. 'address' is a required property"
        );
        assert_eq!(
            refused(proxy_arg::<AddFloatingIp>(
                "addFloatingIp",
                &json!({"address": "10.0.0.5", "fixed_address": null})
            )),
            "Invalid input for field/attribute fixed_address. Value: null. null is not valid"
        );
        assert_eq!(
            refused(proxy_arg::<AddressArg>(
                "removeFloatingIp",
                &json!({"address": ""})
            )),
            "Invalid input for field/attribute address. Value: \"\". \"\" is not valid"
        );
        let fixed: AddFixedIp =
            proxy_arg("addFixedIp", &json!({"networkId": 3})).expect("accepted");
        assert_eq!(fixed.network_id, Some(json!(3)));
    }
}
