//! Start-up repair: whatever a crash (kill -9) interrupted is settled into a
//! state Cinder allows, and files and rows agree again.
//!
//! - a volume left `creating` becomes `error` (its unfinished file goes);
//!   `extending` becomes `error_extending`; `uploading` goes back to
//!   `available` or `in-use`; `deleting` is finished;
//! - a snapshot left `creating` becomes `error`; `deleting` is finished;
//! - an unfinished copy (`*.partial`) is removed, and so is a file whose
//!   row does not exist (a create that never committed);
//! - a row whose file is missing (and should have one) becomes `error`.

use std::collections::HashSet;

use super::backend::{Backend, StoredFile};
use super::{VolumeResult, VolumeState, now_string};
use crate::db::volume as store;

/// What the repair changed (for the log and the tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    pub errored: usize,
    pub finished_deletes: usize,
    pub removed_files: usize,
}

/// Statuses a volume or snapshot has no file in (yet or any more).
const NO_FILE_NEEDED: &[&str] = &["creating", "error", "deleting", "error_deleting"];

pub fn run(s: &VolumeState) -> VolumeResult<Repairs> {
    s.backend.prepare()?;
    let mut repairs = Repairs::default();
    let backend = &s.backend;
    // Rows first: settle transitional statuses, finish deletes.
    let now = now_string();
    let (gone_volumes, gone_snapshots, errored) = s.db.write_blocking(|tx| {
        let mut errored = 0;
        let mut gone_v = Vec::new();
        let mut gone_s = Vec::new();
        for (id, status) in store::volume_statuses(tx)? {
            let Some(mut v) = store::get_volume(tx, &id)? else {
                continue;
            };
            let has_file = backend.volume_path(&id).exists();
            let new_status = match status.as_str() {
                "deleting" => {
                    gone_v.push(id.clone());
                    continue;
                }
                "creating" => Some("error"),
                "extending" => Some("error_extending"),
                // An interrupted reimage: the old file stays (the copy
                // replaces it only when complete), the status is Cinder's.
                "downloading" => Some("error"),
                // An interrupted upload to an image: the file was only read.
                "uploading" if has_file => Some(super::upload::settled_status(&v)),
                s if !NO_FILE_NEEDED.contains(&s) && !has_file => Some("error"),
                _ => None,
            };
            if let Some(st) = new_status {
                v.status = st.into();
                v.updated_at = Some(now.clone());
                store::put_volume(tx, &v)?;
                errored += 1;
            }
        }
        for (id, status) in store::snapshot_statuses(tx)? {
            let Some(mut snap) = store::get_snapshot(tx, &id)? else {
                continue;
            };
            let has_file = backend.snapshot_path(&id).exists();
            let new_status = match status.as_str() {
                "deleting" => {
                    gone_s.push(id.clone());
                    continue;
                }
                "creating" => Some("error"),
                s if !NO_FILE_NEEDED.contains(&s) && !has_file => Some("error"),
                _ => None,
            };
            if let Some(st) = new_status {
                snap.status = st.into();
                snap.updated_at = Some(now.clone());
                store::put_snapshot(tx, &snap)?;
                errored += 1;
            }
        }
        Ok((gone_v, gone_s, errored))
    })?;
    repairs.errored = errored;
    for id in &gone_snapshots {
        Backend::remove(&backend.snapshot_path(id))?;
    }
    for id in &gone_volumes {
        Backend::remove(&backend.volume_path(id))?;
    }
    if !gone_volumes.is_empty() || !gone_snapshots.is_empty() {
        s.db.write_blocking(|tx| {
            for id in &gone_snapshots {
                store::delete_snapshot(tx, id)?;
            }
            for id in &gone_volumes {
                crate::db::volume_records::delete_transfers_of_volume(tx, id)?;
                store::delete_volume(tx, id)?;
            }
            Ok(())
        })?;
    }
    repairs.finished_deletes = gone_volumes.len() + gone_snapshots.len();
    // Then files: partial copies and files without a row (or whose row is
    // in error after an interrupted create) go.
    let (volumes, snapshots) = s.db.read_blocking(|conn| {
        let v: HashSet<(String, String)> = store::volume_statuses(conn)?.into_iter().collect();
        let sn: HashSet<(String, String)> = store::snapshot_statuses(conn)?.into_iter().collect();
        Ok((v, sn))
    })?;
    let volume_ids: HashSet<&str> = volumes.iter().map(|(id, _)| id.as_str()).collect();
    let snapshot_ids: HashSet<&str> = snapshots.iter().map(|(id, _)| id.as_str()).collect();
    for file in backend.files()? {
        let path = match file {
            StoredFile::Stray(path) => path,
            StoredFile::Volume(id) if !volume_ids.contains(id.as_str()) => backend.volume_path(&id),
            StoredFile::Snapshot(id) if !snapshot_ids.contains(id.as_str()) => {
                backend.snapshot_path(&id)
            }
            _ => continue,
        };
        Backend::remove(&path)?;
        repairs.removed_files += 1;
    }
    if repairs != Repairs::default() {
        tracing::warn!(?repairs, "volumes repaired after an interrupted run");
    }
    Ok(repairs)
}
