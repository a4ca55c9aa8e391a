//! The scheduler of this one-host cloud: does a flavor fit on the host next
//! to what is placed there, given the allocation ratios? Create, and resize
//! (with the server itself left out of the usage), ask the same
//! [`fit`]. No HTTP and no SQL here: the usage comes from
//! `db::servers::host_usage`, the capacity from `hosts::capacity`.

use super::AllocationRatios;
use super::hosts::Capacity;
use crate::db::servers::HostUsage;

/// What is asked for: vCPUs, RAM (MiB), disk (GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    pub vcpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
}

/// The answer, per resource, with what the host would then hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub cpu: bool,
    pub ram: bool,
    pub disk: bool,
    /// The usage with the demand placed.
    pub after: HostUsage,
}

impl Fit {
    /// True when every resource fits.
    pub fn all(&self) -> bool {
        self.cpu && self.ram && self.disk
    }

    /// How full the host would be, for a "No valid host" fault's details.
    pub fn describe(&self, host: &str, cap: &Capacity, ratios: AllocationRatios) -> String {
        format!(
            "host {host}: cpu {}/{} (x{}), ram {}/{} MiB (x{}), disk {}/{} GiB (x{})",
            self.after.vcpus,
            cap.vcpus,
            ratios.cpu,
            self.after.ram_mb,
            cap.memory_mb,
            ratios.ram,
            self.after.disk_gb,
            cap.disk_gb,
            ratios.disk,
        )
    }
}

/// Whether `demand` fits next to `used` on a host of capacity `cap`
/// overcommitted by `ratios` (at most capacity x ratio of each resource).
pub fn fit(used: HostUsage, demand: Demand, cap: &Capacity, ratios: AllocationRatios) -> Fit {
    let after = HostUsage {
        vcpus: used.vcpus + demand.vcpus,
        ram_mb: used.ram_mb + demand.ram_mb,
        disk_gb: used.disk_gb + demand.disk_gb,
    };
    Fit {
        cpu: after.vcpus as f64 <= cap.vcpus as f64 * ratios.cpu,
        ram: after.ram_mb as f64 <= cap.memory_mb as f64 * ratios.ram,
        disk: after.disk_gb as f64 <= cap.disk_gb as f64 * ratios.disk,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_counts_the_ratios_and_the_edges() {
        let cap = Capacity {
            vcpus: 4,
            memory_mb: 8192,
            disk_gb: 100,
        };
        let ratios = AllocationRatios {
            cpu: 4.0,
            ram: 1.0,
            disk: 1.0,
        };
        let used = HostUsage {
            vcpus: 14,
            ram_mb: 4096,
            disk_gb: 90,
        };
        let small = Demand {
            vcpus: 2,
            ram_mb: 4096,
            disk_gb: 10,
        };
        // Exactly full fits (16 vCPUs of 4 x 4, all RAM, all disk).
        let f = fit(used, small, &cap, ratios);
        assert!(f.all());
        assert_eq!(
            f.after,
            HostUsage {
                vcpus: 16,
                ram_mb: 8192,
                disk_gb: 100
            }
        );
        let f = fit(used, Demand { vcpus: 3, ..small }, &cap, ratios);
        assert!(!f.cpu && f.ram && f.disk && !f.all());
        let f = fit(
            used,
            Demand {
                ram_mb: 4097,
                disk_gb: 11,
                ..small
            },
            &cap,
            ratios,
        );
        assert!(f.cpu && !f.ram && !f.disk);
        assert_eq!(
            f.describe("h", &cap, ratios),
            "host h: cpu 16/4 (x4), ram 8193/8192 MiB (x1), disk 101/100 GiB (x1)"
        );
    }
}
