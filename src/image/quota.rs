//! What bounds image data: Glance's `image_size_cap`, a free-space reserve
//! on the filesystem that holds the store (and the state file), and the
//! per-project quotas Glance reads from Keystone's unified limits
//! (`use_keystone_limits`): `image_count_total`, `image_count_uploading`,
//! `image_size_total` and `image_stage_total` (sizes in MiB).
//!
//! Quotas are checked when Glance checks them (create, upload, stage,
//! import), with oslo.limit's flat rule: usage + delta > limit is refused,
//! a resource without any limit counts as 0. Data is also counted while it
//! streams in, so a body without `Content-Length` cannot run past the
//! quota, the cap or the reserve (Glance checks its quotas only up front).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rusqlite::Connection;

use super::{ImageConfig, ImageError, ImageResult};
use crate::db::image as store;

/// The service type the image quotas are registered under.
pub const SERVICE_TYPE: &str = "image";
/// MiB of image data a project may store.
pub const IMAGE_SIZE_TOTAL: &str = "image_size_total";
/// MiB of data a project may have staged for import.
pub const IMAGE_STAGE_TOTAL: &str = "image_stage_total";
/// Images a project may have (not deleted).
pub const IMAGE_COUNT_TOTAL: &str = "image_count_total";
/// Images a project may be uploading or importing at once.
pub const IMAGE_COUNT_UPLOADING: &str = "image_count_uploading";

/// Registered limits created once when the image service first starts, so a
/// fresh cloud works; an operator lowers them (`openstack registered limit
/// set`) or overrides them per project (`openstack limit create`).
pub const DEFAULT_REGISTERED_LIMITS: &[(&str, i64, &str)] = &[
    (
        IMAGE_COUNT_TOTAL,
        1000,
        "Images a project may own (yunhe's default).",
    ),
    (
        IMAGE_COUNT_UPLOADING,
        100,
        "Images a project may upload or import at once (yunhe's default).",
    ),
    (
        IMAGE_SIZE_TOTAL,
        1_048_576,
        "MiB of image data a project may store: 1 TiB (yunhe's default).",
    ),
    (
        IMAGE_STAGE_TOTAL,
        1_048_576,
        "MiB of data a project may stage for import: 1 TiB (yunhe's default).",
    ),
];

/// Glance's default `image_size_cap`: 1 TiB.
pub const DEFAULT_IMAGE_SIZE_CAP: u64 = 1_099_511_627_776;

const MIB: i64 = 1 << 20;

/// Space to keep free on the store's filesystem: bytes, or a percentage of
/// the filesystem's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpaceReserve {
    Bytes(u64),
    Percent(f64),
}

/// The default reserve: 1 GiB, enough for the state file to keep working.
pub const DEFAULT_MIN_FREE_SPACE: FreeSpaceReserve = FreeSpaceReserve::Bytes(1 << 30);

/// A `--min-free-space` value that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReserveParseError {
    /// Not a number with an optional unit or `%`.
    #[error("'{0}' is not a size (e.g. 1073741824, 512MiB, 1G) or a percentage (e.g. 5%)")]
    Malformed(String),
    /// A percentage outside 0–100.
    #[error("'{0}': a percentage must be between 0 and 100")]
    PercentRange(String),
}

impl FromStr for FreeSpaceReserve {
    type Err = ReserveParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent: f64 = number
                .trim()
                .parse()
                .map_err(|_| ReserveParseError::Malformed(text.to_string()))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(ReserveParseError::PercentRange(text.to_string()));
            }
            return Ok(FreeSpaceReserve::Percent(percent));
        }
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| ReserveParseError::Malformed(text.to_string()))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(ReserveParseError::Malformed(text.to_string())),
        };
        number
            .checked_mul(1u64 << shift)
            .map(FreeSpaceReserve::Bytes)
            .ok_or_else(|| ReserveParseError::Malformed(text.to_string()))
    }
}

impl fmt::Display for FreeSpaceReserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeSpaceReserve::Bytes(b) => write!(f, "{b}"),
            FreeSpaceReserve::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FreeSpaceReserve {
    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn bytes_of(&self, total: u64) -> u64 {
        match *self {
            FreeSpaceReserve::Bytes(b) => b,
            FreeSpaceReserve::Percent(p) => ((total as f64) * p / 100.0).ceil() as u64,
        }
    }
}

/// Free and total bytes of the filesystem holding `dir`, for an unprivileged writer.
fn filesystem_space(dir: &Path) -> ImageResult<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let unit = stat.fragment_size();
    Ok((
        stat.blocks_available().saturating_mul(unit),
        stat.blocks().saturating_mul(unit),
    ))
}

fn storage_full() -> ImageError {
    ImageError::TooLarge(
        "Image storage media is full: There is not enough disk space on the image storage media."
            .into(),
    )
}

fn too_large() -> ImageError {
    ImageError::TooLarge("The incoming image is too large: The provided image is too large.".into())
}

/// oslo.limit's `ProjectOverLimit` text, which Glance puts into its 413.
fn over_limit(project: &str, resource: &str, limit: i64, usage: i64, delta: i64) -> ImageError {
    ImageError::TooLarge(format!(
        "Project {project} is over a limit for [Resource {resource} is over limit of {limit} \
         due to current usage {usage} and delta {delta}]"
    ))
}

/// The limit that applies (none registered counts as 0, as in oslo.limit).
fn limit_of(conn: &Connection, project: &str, resource: &str) -> ImageResult<i64> {
    Ok(crate::identity::limits::project_limit(conn, SERVICE_TYPE, resource, project)?.unwrap_or(0))
}

/// A resource's usage as Glance counts it (sizes in whole MiB).
fn usage_of(usage: &store::ImageUsage, resource: &str) -> i64 {
    match resource {
        IMAGE_SIZE_TOTAL => usage.stored_bytes / MIB,
        IMAGE_STAGE_TOTAL => usage.staged_bytes / MIB,
        IMAGE_COUNT_TOTAL => usage.images,
        IMAGE_COUNT_UPLOADING => usage.uploading,
        _ => 0,
    }
}

/// Refuses with 413 when the project's usage plus `delta` goes over its
/// limit for `resource` (Glance's `enforce_image_*`).
pub fn enforce(conn: &Connection, project: &str, resource: &str, delta: i64) -> ImageResult<()> {
    let limit = limit_of(conn, project, resource)?;
    let usage = usage_of(&store::usage_of(conn, project)?, resource);
    if usage + delta > limit {
        tracing::info!(
            project,
            resource,
            limit,
            usage,
            delta,
            "image quota reached"
        );
        return Err(over_limit(project, resource, limit, usage, delta));
    }
    Ok(())
}

/// A byte quota that data streaming in is counted against.
#[derive(Debug, Clone)]
pub struct ByteQuota {
    project: String,
    resource: &'static str,
    limit_mib: i64,
    /// Bytes the project used before this upload.
    used: i64,
}

/// The byte quota of `resource` (`image_size_total` or `image_stage_total`)
/// for a project, as it stands now.
pub fn byte_quota(
    conn: &Connection,
    project: &str,
    resource: &'static str,
) -> ImageResult<ByteQuota> {
    let usage = store::usage_of(conn, project)?;
    let used = if resource == IMAGE_STAGE_TOTAL {
        usage.staged_bytes
    } else {
        usage.stored_bytes
    };
    Ok(ByteQuota {
        project: project.to_string(),
        resource,
        limit_mib: limit_of(conn, project, resource)?,
        used,
    })
}

/// Bytes between two free-space checks at most.
const SPACE_CHECK_STEP: u64 = 4 << 20;

/// Counts data as it streams into the store and stops it at the size cap,
/// the project's byte quota, or the free-space reserve.
pub struct DataBudget {
    cap: u64,
    quota: Option<ByteQuota>,
    dir: PathBuf,
    reserve: FreeSpaceReserve,
    received: u64,
    /// The next `received` at which free space is looked at again.
    next_space_check: u64,
}

impl DataBudget {
    /// A budget for data written below `dir`, with the configured cap and reserve.
    pub fn new(dir: &Path, quota: Option<ByteQuota>, config: &ImageConfig) -> DataBudget {
        DataBudget {
            cap: config.size_cap,
            quota,
            dir: dir.to_path_buf(),
            reserve: config.min_free_space,
            received: 0,
            next_space_check: 0,
        }
    }

    /// Checks before any data is read: the declared length (if any) against
    /// the cap, the quota and the free space.
    pub fn check_declared(&mut self, declared: Option<u64>) -> ImageResult<()> {
        let length = declared.unwrap_or(0);
        if length > self.cap {
            return Err(too_large());
        }
        if let Some(q) = &self.quota {
            let delta = (length / MIB as u64) as i64;
            let usage = q.used / MIB;
            if usage + delta > q.limit_mib {
                return Err(over_limit(
                    &q.project,
                    q.resource,
                    q.limit_mib,
                    usage,
                    delta,
                ));
            }
        }
        self.check_space(length)
    }

    /// Counts `len` more bytes; refuses once they go past a bound.
    pub fn admit(&mut self, len: usize) -> ImageResult<()> {
        self.received = self.received.saturating_add(len as u64);
        if self.received > self.cap {
            return Err(too_large());
        }
        if let Some(q) = &self.quota {
            let total = q.used.saturating_add(self.received as i64);
            if total > q.limit_mib.saturating_mul(MIB) {
                let delta = (self.received as i64 + MIB - 1) / MIB;
                return Err(over_limit(
                    &q.project,
                    q.resource,
                    q.limit_mib,
                    q.used / MIB,
                    delta,
                ));
            }
        }
        if self.received >= self.next_space_check {
            self.check_space(len as u64)?;
        }
        Ok(())
    }

    /// Refuses when writing `more` bytes would eat into the reserve; plans the
    /// next check so that no more than half the headroom is written unseen.
    fn check_space(&mut self, more: u64) -> ImageResult<()> {
        let (available, total) = filesystem_space(&self.dir)?;
        let reserve = self.reserve.bytes_of(total);
        let headroom = available.saturating_sub(reserve);
        if more > headroom || headroom == 0 {
            tracing::warn!(
                available,
                reserve,
                dir = %self.dir.display(),
                "image upload refused: the store's filesystem is at its free-space reserve"
            );
            return Err(storage_full());
        }
        self.next_space_check = self.received + (headroom / 2).clamp(1, SPACE_CHECK_STEP);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_as_bytes_units_and_percentages() {
        assert_eq!(
            "1073741824".parse::<FreeSpaceReserve>().ok(),
            Some(FreeSpaceReserve::Bytes(1 << 30))
        );
        assert_eq!(
            "512MiB".parse::<FreeSpaceReserve>().ok(),
            Some(FreeSpaceReserve::Bytes(512 << 20))
        );
        assert_eq!(
            "2G".parse::<FreeSpaceReserve>().ok(),
            Some(FreeSpaceReserve::Bytes(2 << 30))
        );
        assert_eq!(
            "5%".parse::<FreeSpaceReserve>().ok(),
            Some(FreeSpaceReserve::Percent(5.0))
        );
        assert!("150%".parse::<FreeSpaceReserve>().is_err());
        assert!("lots".parse::<FreeSpaceReserve>().is_err());
        assert!("12XB".parse::<FreeSpaceReserve>().is_err());
        assert_eq!(FreeSpaceReserve::Percent(5.0).bytes_of(1000), 50);
    }
}
