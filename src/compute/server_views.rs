//! How a server looks in Nova's API: its status from vm_state and
//! task_state (and the reverse, for the `status` filter), and the server
//! view of show, list detail, update and rebuild, serialised straight into
//! the response with what the caller's rights allow.

use std::collections::HashMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha224};

use super::networking::{Addresses, PortFacts};
use super::states::{TaskState, VmState};
use super::{ComputeState, Mv, iso_time, nova_time};
use crate::db::servers::{FlavorCopy, Server};
use crate::identity::AuthContext;
use crate::policy::Target;

/// Nova's status, from vm_state and task_state (matched by Nova's names, as
/// nova/api/openstack/common.py's state map is written).
pub(super) fn status_of(vm_state: VmState, task_state: Option<TaskState>) -> &'static str {
    match (vm_state.as_str(), task_state.map(TaskState::as_str)) {
        ("building", _) => "BUILD",
        ("active", Some("rebooting" | "reboot_pending" | "reboot_started")) => "REBOOT",
        ("active", Some("rebooting_hard" | "reboot_pending_hard" | "reboot_started_hard")) => {
            "HARD_REBOOT"
        }
        (
            "active" | "stopped" | "error",
            Some("rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning"),
        ) => "REBUILD",
        (
            "active" | "stopped",
            Some("resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish"),
        ) => "RESIZE",
        ("active", _) => "ACTIVE",
        ("stopped", _) => "SHUTOFF",
        ("paused", _) => "PAUSED",
        ("suspended", _) => "SUSPENDED",
        ("resized", Some("resize_reverting")) => "REVERT_RESIZE",
        ("resized", _) => "VERIFY_RESIZE",
        ("shelved", _) => "SHELVED",
        ("shelved_offloaded", _) => "SHELVED_OFFLOADED",
        ("error", _) => "ERROR",
        ("deleted", _) => "DELETED",
        ("soft-delete", _) => "SOFT_DELETED",
        ("rescued", _) => "RESCUE",
        _ => "UNKNOWN",
    }
}

/// The vm_states a `status` filter matches (Nova's reverse mapping).
pub(super) fn vm_states_for_status(status: &str) -> Option<&'static [&'static str]> {
    Some(match status.to_ascii_uppercase().as_str() {
        "BUILD" => &["building"],
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "PASSWORD" | "MIGRATING" => &["active"],
        "SHUTOFF" => &["stopped"],
        "PAUSED" => &["paused"],
        "SUSPENDED" => &["suspended"],
        "VERIFY_RESIZE" | "REVERT_RESIZE" => &["resized"],
        "RESIZE" => &["active", "stopped"],
        "REBUILD" => &["active", "stopped", "error"],
        "SHELVED" => &["shelved"],
        "SHELVED_OFFLOADED" => &["shelved_offloaded"],
        "ERROR" => &["error"],
        "DELETED" => &["deleted"],
        "SOFT_DELETED" => &["soft-delete"],
        "RESCUE" => &["rescued"],
        _ => return None,
    })
}

// ------------------------------------------------------------------- views

fn host_id(server: &Server) -> String {
    thread_local! {
        /// hostId is a hash of project and host; a listing repeats the same few.
        static CACHE: std::cell::RefCell<HashMap<String, String>> = std::cell::RefCell::new(HashMap::new());
    }
    match &server.host {
        Some(host) => {
            let key = format!("{}{host}", server.project_id);
            CACHE.with(|cache| {
                let mut cache = cache.borrow_mut();
                if cache.len() > 4096 {
                    cache.clear();
                }
                cache
                    .entry(key)
                    .or_insert_with_key(|k| hex::encode(Sha224::digest(k.as_bytes())))
                    .clone()
            })
        }
        None => String::new(),
    }
}

/// `instance-0000001a`-style name from the id (stable, unique enough).
fn instance_name(server: &Server) -> String {
    format!("instance-{}", &server.id.replace('-', "")[..8])
}

fn flavor_view(s: &ComputeState, f: &FlavorCopy, mv: Mv) -> Value {
    if mv.at_least(47) {
        json!({
            "original_name": f.name,
            "vcpus": f.vcpus,
            "ram": f.ram,
            "disk": f.disk,
            "ephemeral": f.ephemeral,
            "swap": f.swap,
            "extra_specs": f.extra_specs,
        })
    } else {
        json!({
            "id": f.id,
            "links": [{"rel": "bookmark", "href": format!("{}/compute/flavors/{}", s.public_url, f.id)}],
        })
    }
}

/// A server as Nova shows it. `full` is the show/detail view; without it
/// the view of update and rebuild below 2.75 (no extended attributes).
pub(super) fn view(
    s: &ComputeState,
    server: &Server,
    mv: Mv,
    ctx: &AuthContext,
    full: bool,
    ports: Option<&PortFacts>,
) -> Value {
    let shown = ServerView {
        s,
        server,
        mv,
        rights: ViewRights::of(s, ctx, &server.project_id),
        full,
        in_list: false,
        ports,
    };
    serde_json::to_value(&shown).unwrap_or(Value::Null)
}

/// The server view, serialised straight into the response: a 1,000-server
/// listing builds no intermediate `Value` tree.
/// What of a server the caller may see beyond the owner's view, as Nova's
/// rules decide.
#[derive(Debug, Clone, Copy)]
pub(super) struct ViewRights {
    /// An admin context: fault details.
    pub admin: bool,
    /// `os_compute_api:os-extended-server-attributes`: OS-EXT-SRV-ATTR:*.
    pub extended: bool,
    /// `os_compute_api:servers:show:host_status` (2.16).
    pub host_status: bool,
}

impl ViewRights {
    /// The rights of the caller on servers of `project_id`.
    pub fn of(s: &ComputeState, ctx: &AuthContext, project_id: &str) -> ViewRights {
        let target = Target::project(project_id);
        ViewRights {
            admin: super::is_admin_context(s, ctx),
            extended: super::allows(
                s,
                ctx,
                "os_compute_api:os-extended-server-attributes",
                &target,
            ),
            host_status: super::allows(s, ctx, "os_compute_api:servers:show:host_status", &target),
        }
    }
}

pub(super) struct ServerView<'a> {
    pub s: &'a ComputeState,
    pub server: &'a Server,
    pub mv: Mv,
    pub rights: ViewRights,
    pub full: bool,
    /// `/servers/detail` leaves out what only show, update and rebuild carry.
    pub in_list: bool,
    /// The server's addresses and security groups, read from its ports
    /// (None: no ports).
    pub ports: Option<&'a PortFacts>,
}

/// One address of the update and rebuild views below 2.75.
#[derive(serde::Serialize)]
struct PlainAddress<'a> {
    version: u8,
    addr: &'a str,
}

/// One entry of a server's `security_groups`.
#[derive(serde::Serialize)]
struct GroupName<'a> {
    name: &'a str,
}

impl serde::Serialize for ServerView<'_> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::SerializeMap;
        let mut m = z.serialize_map(None)?;
        let (s, server, mv, rights) = (self.s, self.server, self.mv, self.rights);
        let full = self.full || mv.at_least(75);
        self.entries(&mut m, s, server, mv, rights, full)?;
        m.end()
    }
}

impl ServerView<'_> {
    #[allow(clippy::too_many_arguments)]
    fn entries<M: serde::ser::SerializeMap>(
        &self,
        m: &mut M,
        s: &ComputeState,
        server: &Server,
        mv: Mv,
        rights: ViewRights,
        full: bool,
    ) -> Result<(), M::Error> {
        let status = status_of(server.vm_state, server.task_state);
        m.serialize_entry("id", &server.id)?;
        m.serialize_entry("name", &server.name)?;
        m.serialize_entry("status", &status)?;
        m.serialize_entry("tenant_id", &server.project_id)?;
        m.serialize_entry("user_id", &server.user_id)?;
        m.serialize_entry("metadata", &server.metadata)?;
        m.serialize_entry("hostId", &host_id(server))?;
        m.serialize_entry("image", &if server.image_id.is_empty() {
            json!("")
        } else {
            json!({
                "id": server.image_id,
                "links": [{"rel": "bookmark", "href": format!("{}/compute/images/{}", s.public_url, server.image_id)}],
            })
        },)?;
        m.serialize_entry("flavor", &flavor_view(s, &server.flavor, mv))?;
        m.serialize_entry("created", &iso_time(server.created_at))?;
        m.serialize_entry("updated", &iso_time(server.updated_at))?;
        match self.ports {
            Some(p) if full => m.serialize_entry("addresses", &p.addresses)?,
            // Update and rebuild below 2.75: Nova's view without the
            // OS-EXT-IPS extensions (`extend_address=False`).
            Some(p) => {
                let plain: std::collections::BTreeMap<&str, Vec<PlainAddress>> = p
                    .addresses
                    .iter()
                    .map(|(net, list)| {
                        let list = list
                            .iter()
                            .map(|a| PlainAddress {
                                version: a.version,
                                addr: &a.addr,
                            })
                            .collect();
                        (net.as_str(), list)
                    })
                    .collect();
                m.serialize_entry("addresses", &plain)?
            }
            None => m.serialize_entry("addresses", &Addresses::new())?,
        }
        // Nova's show and detail (and update and rebuild from 2.75).
        if let Some(p) = self.ports
            && full
            && !p.security_groups.is_empty()
        {
            let groups: Vec<GroupName> = p
                .security_groups
                .iter()
                .map(|name| GroupName { name })
                .collect();
            m.serialize_entry("security_groups", &groups)?;
        }
        m.serialize_entry("accessIPv4", &server.access_ipv4)?;
        m.serialize_entry("accessIPv6", &server.access_ipv6)?;
        m.serialize_entry("links", &s.links("servers", &server.id))?;
        m.serialize_entry("OS-DCF:diskConfig", &"MANUAL")?;
        if [
            "ACTIVE",
            "BUILD",
            "REBUILD",
            "RESIZE",
            "VERIFY_RESIZE",
            "MIGRATING",
        ]
        .contains(&status)
        {
            let progress = if status == "BUILD" { 0 } else { 100 };
            m.serialize_entry("progress", &progress)?;
        }
        if let Some(fault) = &server.fault
            && (status == "ERROR" || status == "DELETED")
        {
            let mut f = fault.clone();
            if !rights.admin
                && let Some(obj) = f.as_object_mut()
            {
                obj.remove("details");
            }
            m.serialize_entry("fault", &f)?;
        }
        if full {
            m.serialize_entry("key_name", &server.key_name)?;
            m.serialize_entry(
                "OS-SRV-USG:launched_at",
                &json!(server.launched_at.map(nova_time)),
            )?;
            m.serialize_entry(
                "OS-SRV-USG:terminated_at",
                &json!(server.terminated_at.map(nova_time)),
            )?;
            m.serialize_entry(
                "OS-EXT-AZ:availability_zone",
                &json!(server.availability_zone.clone().unwrap_or_else(|| {
                    if server.host.is_some() {
                        super::hosts::ZONE.to_string()
                    } else {
                        String::new()
                    }
                })),
            )?;
            m.serialize_entry("OS-EXT-STS:task_state", &server.task_state)?;
            m.serialize_entry("OS-EXT-STS:vm_state", &server.vm_state)?;
            m.serialize_entry("OS-EXT-STS:power_state", &server.power_state)?;
            // Nova: each attached volume's id, and from 2.3 its delete_on_termination.
            let volumes: Vec<Value> = server
                .volumes
                .iter()
                .map(|v| {
                    if mv.at_least(3) {
                        json!({"id": v.volume_id, "delete_on_termination": v.delete_on_termination})
                    } else {
                        json!({"id": v.volume_id})
                    }
                })
                .collect();
            m.serialize_entry("os-extended-volumes:volumes_attached", &json!(volumes))?;
            m.serialize_entry(
                "config_drive",
                &json!(if server.config_drive { "True" } else { "" }),
            )?;
            if rights.extended {
                m.serialize_entry("OS-EXT-SRV-ATTR:host", &server.host)?;
                m.serialize_entry(
                    "OS-EXT-SRV-ATTR:instance_name",
                    &json!(instance_name(server)),
                )?;
                m.serialize_entry("OS-EXT-SRV-ATTR:hypervisor_hostname", &json!(server.host))?;
                if mv.at_least(3) {
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:reservation_id",
                        &json!(server.reservation_id),
                    )?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:launch_index", &json!(server.launch_index))?;
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:kernel_id",
                        &json!(server.kernel_id.clone().unwrap_or_default()),
                    )?;
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:ramdisk_id",
                        &json!(server.ramdisk_id.clone().unwrap_or_default()),
                    )?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:root_device_name", &"/dev/vda")?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:user_data", &server.user_data)?;
                }
            }
            if mv.at_least(3) && (rights.extended || mv.at_least(90)) {
                m.serialize_entry("OS-EXT-SRV-ATTR:hostname", &server.hostname)?;
            }
            if mv.at_least(16) && rights.host_status {
                let host_status = if server.host.is_some() { "UP" } else { "" };
                m.serialize_entry("host_status", &host_status)?;
            }
        }
        if mv.at_least(9) {
            m.serialize_entry("locked", &server.locked)?;
        }
        if mv.at_least(19) {
            m.serialize_entry("description", &server.description)?;
        }
        if mv.at_least(26) {
            m.serialize_entry("tags", &server.tags)?;
        }
        if mv.at_least(63) {
            m.serialize_entry("trusted_image_certificates", &Value::Null)?;
        }
        if mv.at_least(71) && full && !self.in_list {
            let groups: Vec<&String> = server.server_group.iter().collect();
            m.serialize_entry("server_groups", &groups)?;
        }
        if mv.at_least(73) {
            m.serialize_entry("locked_reason", &server.locked_reason)?;
        }
        if mv.at_least(96) {
            m.serialize_entry("pinned_availability_zone", &json!(server.availability_zone))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_vm_and_task_state() {
        use TaskState as T;
        use VmState as V;
        assert_eq!(status_of(V::Active, None), "ACTIVE");
        assert_eq!(status_of(V::Active, Some(T::RebootingHard)), "HARD_REBOOT");
        assert_eq!(status_of(V::Stopped, None), "SHUTOFF");
        assert_eq!(status_of(V::Resized, None), "VERIFY_RESIZE");
        assert_eq!(status_of(V::Error, Some(T::Rebuilding)), "REBUILD");
        assert_eq!(status_of(V::Building, Some(T::Spawning)), "BUILD");
        assert_eq!(
            status_of(V::Resized, Some(T::ResizeReverting)),
            "REVERT_RESIZE"
        );
    }
}
