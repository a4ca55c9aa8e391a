//! Rebuild of a volume-backed server: which image it may take, and the
//! reimage of its root volume (2.93).

use super::{S, bad};
use crate::compute::{ComputeError, ComputeResult, Mv};
use crate::db::volume as vstore;
use crate::image::service::BootImage;
use crate::volume::ops;

/// What a rebuild does with a server's root disk.
#[derive(Debug, Clone, PartialEq)]
pub enum RootRebuild {
    /// An image-backed server: a fresh root disk from the image.
    Image,
    /// A volume-backed server below 2.93: the root volume is kept (the
    /// image must be the one it was booted from).
    KeepVolume,
    /// A volume-backed server at 2.93+: the root volume is reimaged
    /// (Cinder's `os-reimage`, 3.68) from the image.
    ReimageVolume(String),
}

/// How a rebuild of server `id` with `image` treats its root disk, with
/// Nova's checks: before 2.93 a volume-backed server is rebuilt only with
/// the image it was booted from (its root volume's `volume_image_metadata`);
/// from 2.93 its root volume is reimaged, and the image must fit it.
pub async fn check_rebuild(
    s: &S,
    id: &str,
    image: &BootImage,
    mv: Mv,
) -> ComputeResult<RootRebuild> {
    let id_owned = id.to_string();
    let Some(server) = s
        .read(move |conn| Ok(crate::db::servers::get_server(conn, &id_owned)?))
        .await?
    else {
        return Ok(RootRebuild::Image);
    };
    let Some(root) = server.root_volume() else {
        return Ok(RootRebuild::Image);
    };
    let vid = root.volume_id.clone();
    let volume = s
        .volumes
        .read(move |conn| Ok(vstore::get_volume(conn, &vid)?))
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))?;
    if !mv.at_least(93) {
        let booted_from = volume.and_then(|v| v.image_metadata.get("image_id").cloned());
        if booted_from.as_deref() != Some(image.id.as_str()) {
            return Err(bad(
                "Unable to rebuild with a different image for a volume-backed server.",
            ));
        }
        return Ok(RootRebuild::KeepVolume);
    }
    let volume = volume
        .ok_or_else(|| ComputeError::Internal(format!("volume {} is gone", root.volume_id)))?;
    // the disk's bytes (a qcow2 image's virtual size); formats the volume
    // service cannot reimage from are refused
    let bytes = match ops::image_data(image) {
        Ok((bytes, _qcow2)) => i64::try_from(bytes).unwrap_or(i64::MAX),
        Err(_) => {
            return Err(bad(format!(
                "Image {} has disk_format {}; volumes are reimaged from raw and qcow2 images only.",
                image.id,
                image.disk_format.clone().unwrap_or_default()
            )));
        }
    };
    let needed = ((bytes + (1 << 30) - 1) >> 30).max(image.min_disk);
    if volume.size < needed {
        return Err(bad(format!(
            "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
            volume.size << 30,
            needed << 30
        )));
    }
    Ok(RootRebuild::ReimageVolume(volume.id))
}

/// The reimage of a stopped volume-backed server's root volume (a rebuild
/// at 2.93): through the volume service as Cinder's `os-reimage` with
/// `reimage_reserved` (the volume `downloading` meanwhile, then `in-use`
/// again), the volume's data is the image's.
pub async fn reimage_root(s: &S, volume_id: &str, image: &BootImage) -> Result<(), String> {
    let before = ops::begin_reimage(&s.volumes, volume_id, image, ops::ReimageFrom::Rebuild)
        .await
        .map_err(|e| e.to_string())?;
    ops::finish_reimage(&s.volumes, volume_id, image, before)
        .await
        .map_err(|e| e.to_string())
}
