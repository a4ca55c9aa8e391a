//! The image service's Rust API for other services (Nova boots from images
//! through it, as OpenStack's nova asks glance).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::db::Db;
use crate::db::image as store;
use crate::db::image_cache as cache_store;

/// Errors of the image service API.
#[derive(Debug, thiserror::Error)]
pub enum ImageServiceError {
    /// No such image, or the project may not use it.
    #[error("Image {0} could not be found.")]
    NotFound(String),
    /// The image exists but has no usable data yet (or is deactivated).
    #[error("Image {id} is not active (status {status}).")]
    NotActive { id: String, status: String },
    /// The image may be booted by the project, but not serve as its kernel
    /// or ramdisk: those come only from the project's own images, public
    /// ones, or ones shared with it and accepted.
    #[error(
        "Image {id} cannot be used as a {role} by project {project}: a kernel or ramdisk must be \
         owned by the project, public, or shared with it and accepted."
    )]
    NotTrusted {
        id: String,
        role: &'static str,
        project: String,
    },
    /// The state file failed.
    #[error("image service: {0}")]
    Db(#[from] crate::db::DbError),
    /// The change is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// Image data could not be written or read.
    #[error("image data: {0}")]
    Io(#[from] std::io::Error),
    /// A qcow2 image that cannot be converted to a raw root disk.
    #[error("Image {id}: {source}")]
    Qcow2 {
        id: String,
        source: super::qcow2::Qcow2Error,
    },
}

/// What a boot needs to know about an image.
#[derive(Debug, Clone)]
pub struct BootImage {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub disk_format: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub min_disk: i64,
    pub min_ram: i64,
    /// The data file (present when the image is active or deactivated).
    pub path: PathBuf,
    /// `kernel_id` (an aki image), `ramdisk_id` (ari) and `os_command_line`.
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub os_command_line: Option<String>,
    /// Every extra property (hw_*, os_*, ...), as strings.
    pub properties: serde_json::Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// An image another service creates (queued, to be filled by it).
#[derive(Debug, Clone)]
pub struct NewImage {
    pub name: String,
    pub owner: String,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: String,
    pub protected: bool,
    /// Extra properties (`kernel_id`, `hw_*`, ...).
    pub properties: serde_json::Map<String, Value>,
    pub min_disk: i64,
    pub min_ram: i64,
    /// The size of the data to come, when known: checked against
    /// `image_size_total` at create.
    pub data_bytes: Option<u64>,
}

/// Handle other services keep to ask about images.
#[derive(Clone)]
pub struct ImageService {
    db: Db,
    dir: PathBuf,
}

impl ImageService {
    pub fn new(db: Db) -> ImageService {
        let dir = db.state_dir().join("images");
        ImageService { db, dir }
    }

    /// Path of an image's data file.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The raw base of a qcow2 image: converted once (sparse) into
    /// `<state>/images-raw/<id>.raw` beside the image data, then reused;
    /// servers' root disks are reflinks or sparse copies of it. Written to a
    /// temporary file and renamed, so an interrupted conversion leaves
    /// nothing half-made (and its temporary file is removed on the next one).
    pub async fn raw_base(&self, image: &BootImage) -> Result<PathBuf, ImageServiceError> {
        let dest = super::qcow2::raw_base_path(&self.dir, &image.id);
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        if dest.exists() {
            return Ok(dest);
        }
        let (src, id) = (image.path.clone(), image.id.clone());
        let out = dest.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            super::qcow2::remove_leftovers(&dir);
            let started = std::time::Instant::now();
            let stats = super::qcow2::convert_file(&src, &out)
                .map_err(|source| ImageServiceError::Qcow2 { id: id.clone(), source })?;
            tracing::info!(image = %id, ?stats, took = ?started.elapsed(), "qcow2 converted to a raw base");
            Ok::<_, ImageServiceError>(())
        })
        .await
        .map_err(|e| ImageServiceError::Invalid(format!("qcow2 conversion: {e}")))??;
        Ok(dest)
    }

    /// A kernel (`role` "kernel") or ramdisk a server of `project` may boot
    /// with: owned by the project, public, or shared with it and accepted —
    /// never another project's community or private image, so an image id
    /// named in `kernel_id` cannot point at a stranger's data. The image must
    /// hold data (active, or deactivated for a server that booted before).
    pub async fn get_boot_asset(
        &self,
        id: &str,
        role: &'static str,
        project: &str,
    ) -> Result<BootImage, ImageServiceError> {
        let (id_owned, project_owned) = (id.to_string(), project.to_string());
        let found = self
            .db
            .read(move |conn| {
                let Some(image) = store::get_image(conn, &id_owned)? else {
                    return Ok(None);
                };
                let trusted = trusted_by(conn, &image, &project_owned)?;
                let visible = visible_to(conn, &image, Some(&project_owned))?;
                let cached = cache_store::cached_path(conn, &image.id)?;
                Ok(Some(((image, cached), trusted, visible)))
            })
            .await?;
        match found {
            None | Some((_, false, false)) => Err(ImageServiceError::NotFound(id.to_string())),
            Some((_, false, true)) => Err(ImageServiceError::NotTrusted {
                id: id.to_string(),
                role,
                project: project.to_string(),
            }),
            Some(((image, cached), true, _)) => {
                if !["active", "deactivated"].contains(&image.status.as_str()) {
                    return Err(ImageServiceError::NotActive {
                        id: image.id,
                        status: image.status,
                    });
                }
                Ok(self.boot_image(image, cached))
            }
        }
    }

    /// An image a project may use (its own, public, community, or shared
    /// with it; `project = None` means an administrator: any image).
    pub async fn get(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<BootImage, ImageServiceError> {
        let id_owned = id.to_string();
        let project_owned = project.map(str::to_string);
        let found = self
            .db
            .read(move |conn| {
                let Some(image) = store::get_image(conn, &id_owned)? else {
                    return Ok(None);
                };
                let allowed = visible_to(conn, &image, project_owned.as_deref())?;
                let cached = cache_store::cached_path(conn, &image.id)?;
                Ok(allowed.then_some((image, cached)))
            })
            .await?;
        let (image, cached) = found.ok_or_else(|| ImageServiceError::NotFound(id.to_string()))?;
        Ok(self.boot_image(image, cached))
    }

    /// Every image a project may use (`None`: all of them), oldest first.
    pub async fn list(&self, project: Option<&str>) -> Result<Vec<BootImage>, ImageServiceError> {
        let project_owned = project.map(str::to_string);
        let images = self
            .db
            .read(move |conn| {
                let mut out = Vec::new();
                for image in store::list_images(conn)? {
                    if visible_to(conn, &image, project_owned.as_deref())? {
                        out.push(image);
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(images
            .into_iter()
            .map(|i| self.boot_image(i, None))
            .collect())
    }

    /// Creates a queued private raw image that a server snapshot will fill
    /// (Nova's createImage); returns its id.
    pub async fn create_snapshot(
        &self,
        name: &str,
        owner: &str,
        properties: serde_json::Map<String, Value>,
        min_disk: i64,
        min_ram: i64,
    ) -> Result<String, ImageServiceError> {
        self.create_queued(NewImage {
            name: name.to_string(),
            owner: owner.to_string(),
            disk_format: "raw".into(),
            container_format: "bare".into(),
            visibility: "private".into(),
            protected: false,
            properties,
            min_disk,
            min_ram,
            data_bytes: None,
        })
        .await
    }

    /// Creates a queued image another service will fill (Nova's snapshots,
    /// Cinder's upload-to-image); returns its id. Glance's
    /// `image_count_total` applies, and with `data_bytes` also
    /// `image_size_total` for the data to come (refused up front, as the
    /// data is known before it is written).
    pub async fn create_queued(&self, new: NewImage) -> Result<String, ImageServiceError> {
        let now = crate::image::images::now_string();
        let image = store::Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: Some(new.name),
            status: "queued".into(),
            visibility: new.visibility,
            protected: new.protected,
            owner: Some(new.owner),
            disk_format: Some(new.disk_format),
            container_format: Some(new.container_format),
            min_disk: new.min_disk,
            min_ram: new.min_ram,
            created_at: now.clone(),
            updated_at: now,
            properties: new.properties,
            ..store::Image::default()
        };
        let id = image.id.clone();
        let data_mib = new.data_bytes.map(|b| b.div_ceil(1 << 20) as i64);
        let over_quota = self
            .db
            .write(move |tx| {
                let owner = image.owner.clone().unwrap_or_default();
                if let Some(message) = count_quota(tx, &owner)? {
                    return Ok(Some(message));
                }
                if let Some(mib) = data_mib
                    && let Some(message) = size_quota(tx, &owner, mib)?
                {
                    return Ok(Some(message));
                }
                store::insert_image(tx, &image)?;
                Ok(None)
            })
            .await?;
        if let Some(message) = over_quota {
            return Err(ImageServiceError::Invalid(message));
        }
        Ok(id)
    }

    /// A queued image's data starts to arrive: `saving`, as Glance marks an
    /// upload. False when the image is gone or no longer queued.
    pub async fn mark_saving(&self, id: &str) -> Result<bool, ImageServiceError> {
        let id_owned = id.to_string();
        Ok(self
            .db
            .write(move |tx| {
                let Some(mut image) = store::get_image(tx, &id_owned)? else {
                    return Ok(false);
                };
                if image.status != "queued" {
                    return Ok(false);
                }
                image.status = "saving".into();
                image.updated_at = crate::image::images::now_string();
                store::update_image(tx, &image)?;
                Ok(true)
            })
            .await?)
    }

    /// Where another service stages data for an image before
    /// [`ImageService::finish_snapshot`] checks it in: a `.partial` name, so
    /// the image service's start-up repair removes it after a crash (and
    /// puts the `saving` image back to `queued`).
    pub fn staging_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.upload.partial"))
    }

    /// Where a snapshot's data is written before it is checked in.
    pub fn snapshot_staging_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.snapshot"))
    }

    /// Checks the snapshot's data in: hashes, moves into place, active.
    pub async fn finish_snapshot(
        &self,
        id: &str,
        staged: PathBuf,
    ) -> Result<(), ImageServiceError> {
        self.finish_upload(id, staged, None).await
    }

    /// Checks staged data in as [`ImageService::finish_snapshot`] does, with
    /// the disk's `virtual_size` when it is not the data's size (a qcow2
    /// image: Glance reads it from the header).
    pub async fn finish_upload(
        &self,
        id: &str,
        staged: PathBuf,
        virtual_size: Option<u64>,
    ) -> Result<(), ImageServiceError> {
        let virtual_size = virtual_size.and_then(|v| i64::try_from(v).ok());
        let dest = self.data_path(id);
        let hashed =
            tokio::task::spawn_blocking(move || -> std::io::Result<(i64, String, String)> {
                let hashed = hash_file(&staged)?;
                std::fs::rename(&staged, &dest)?;
                Ok(hashed)
            })
            .await
            .map_err(|e| ImageServiceError::Io(std::io::Error::other(e)))??;
        let (size, md5, sha512) = hashed;
        let id_owned = id.to_string();
        let found = self
            .db
            .write(move |tx| {
                let Some(mut image) = store::get_image(tx, &id_owned)? else {
                    return Ok(false);
                };
                image.status = "active".into();
                image.size = Some(size);
                image.virtual_size = Some(virtual_size.unwrap_or(size));
                image.checksum = Some(md5);
                image.os_hash_algo = Some("sha512".into());
                image.os_hash_value = Some(sha512);
                image.updated_at = crate::image::images::now_string();
                store::update_image(tx, &image)?;
                Ok(true)
            })
            .await?;
        if !found {
            // Deleted while the snapshot was taken: drop the data.
            let _ = tokio::fs::remove_file(self.data_path(id)).await;
        }
        Ok(())
    }

    /// Changes an image's extra properties (Nova's image metadata proxy);
    /// `project = None` is an administrator. Returns the new properties.
    pub async fn update_properties<F>(
        &self,
        id: &str,
        project: Option<&str>,
        change: F,
    ) -> Result<serde_json::Map<String, Value>, ImageServiceError>
    where
        F: FnOnce(&mut serde_json::Map<String, Value>) -> Result<(), String> + Send + 'static,
    {
        let (id_owned, project) = (id.to_string(), project.map(str::to_string));
        self.db
            .write(move |tx| {
                let Some(mut image) = store::get_image(tx, &id_owned)? else {
                    return Ok(Err(ImageServiceError::NotFound(id_owned)));
                };
                if project.is_some() && image.owner != project {
                    return Ok(Err(ImageServiceError::NotFound(id_owned)));
                }
                if let Err(message) = change(&mut image.properties) {
                    return Ok(Err(ImageServiceError::Invalid(message)));
                }
                image.updated_at = crate::image::images::now_string();
                store::update_image(tx, &image)?;
                Ok(Ok(image.properties))
            })
            .await?
    }

    /// Deletes an image the project owns (`None`: an administrator).
    pub async fn delete(&self, id: &str, project: Option<&str>) -> Result<(), ImageServiceError> {
        let (id_owned, project) = (id.to_string(), project.map(str::to_string));
        let result = self
            .db
            .write(move |tx| {
                let Some(image) = store::get_image(tx, &id_owned)? else {
                    return Ok(Err(ImageServiceError::NotFound(id_owned)));
                };
                if project.is_some() && image.owner != project {
                    return Ok(Err(ImageServiceError::NotFound(id_owned)));
                }
                if image.protected {
                    return Ok(Err(ImageServiceError::Invalid(format!(
                        "Image {id_owned} is protected and cannot be deleted."
                    ))));
                }
                store::delete_image(tx, &id_owned, &crate::image::images::now_string())?;
                Ok(Ok(()))
            })
            .await?;
        result?;
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
        Ok(())
    }

    /// Removes a snapshot that failed, as Nova deletes the image.
    pub async fn discard_snapshot(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.snapshot_staging_path(id)).await;
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
        let id_owned = id.to_string();
        let _ = self
            .db
            .write(move |tx| {
                store::delete_image(tx, &id_owned, &crate::image::images::now_string())
            })
            .await;
    }

    /// What a boot reads: the image cache's copy when there is one (`cached`,
    /// from the image_cache table), else the store's file.
    fn boot_image(&self, image: store::Image, cached: Option<String>) -> BootImage {
        let prop = |k: &str| {
            image
                .properties
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        BootImage {
            kernel_id: prop("kernel_id"),
            ramdisk_id: prop("ramdisk_id"),
            os_command_line: prop("os_command_line"),
            path: cached
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .unwrap_or_else(|| self.data_path(&image.id)),
            id: image.id,
            name: image.name,
            status: image.status,
            disk_format: image.disk_format,
            size: image.size,
            virtual_size: image.virtual_size,
            min_disk: image.min_disk,
            min_ram: image.min_ram,
            properties: image.properties,
            created_at: image.created_at,
            updated_at: image.updated_at,
        }
    }
    /// Like [`ImageService::get`], but the image must be active (bootable).
    pub async fn get_active(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<BootImage, ImageServiceError> {
        let image = self.get(id, project).await?;
        if image.status != "active" {
            return Err(ImageServiceError::NotActive {
                id: image.id,
                status: image.status,
            });
        }
        Ok(image)
    }
}

/// Why `image_count_total` refuses one more image for `owner`, if it does.
fn count_quota(conn: &rusqlite::Connection, owner: &str) -> crate::db::DbResult<Option<String>> {
    if owner.is_empty() {
        return Ok(None);
    }
    match crate::image::quota::enforce(conn, owner, crate::image::quota::IMAGE_COUNT_TOTAL, 1) {
        Ok(()) => Ok(None),
        Err(crate::image::ImageError::Db(e)) => Err(e),
        Err(other) => Ok(Some(other.to_string())),
    }
}

/// Why `image_size_total` refuses `mib` more MiB of data for `owner`, if it
/// does.
fn size_quota(
    conn: &rusqlite::Connection,
    owner: &str,
    mib: i64,
) -> crate::db::DbResult<Option<String>> {
    if owner.is_empty() {
        return Ok(None);
    }
    match crate::image::quota::enforce(conn, owner, crate::image::quota::IMAGE_SIZE_TOTAL, mib) {
        Ok(()) => Ok(None),
        Err(crate::image::ImageError::Db(e)) => Err(e),
        Err(other) => Ok(Some(other.to_string())),
    }
}

/// True when a project may boot with the image as its kernel or ramdisk:
/// its own, public, or shared with it and accepted.
fn trusted_by(
    conn: &rusqlite::Connection,
    image: &store::Image,
    project: &str,
) -> crate::db::DbResult<bool> {
    if image.owner.as_deref() == Some(project) || image.visibility == "public" {
        return Ok(true);
    }
    Ok(image.visibility == "shared"
        && store::get_member(conn, &image.id, project)?.is_some_and(|m| m.status == "accepted"))
}

/// Glance's visibility rule for a project (`None`: an administrator).
fn visible_to(
    conn: &rusqlite::Connection,
    image: &store::Image,
    project: Option<&str>,
) -> crate::db::DbResult<bool> {
    Ok(match project {
        None => true,
        Some(p) => {
            image.owner.as_deref() == Some(p)
                || image.visibility == "public"
                || image.visibility == "community"
                || (image.visibility == "shared"
                    && store::get_member(conn, &image.id, p)?.is_some())
        }
    })
}

/// Size, MD5 (Glance's `checksum`) and SHA-512 (its `os_hash_value`) of a
/// file, the two digests computed on two threads while this one reads: a
/// snapshot is the root disk's whole size (GiBs), and the digests, not the
/// reading, are what takes the time (a 1 GiB snapshot: 35 s in the lab).
fn hash_file(path: &std::path::Path) -> std::io::Result<(i64, String, String)> {
    use md5::Digest as _;
    use std::io::Read;
    use std::sync::{Arc, mpsc};
    let mut file = std::fs::File::open(path)?;
    let (md5_tx, md5_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    let (sha_tx, sha_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        let md5 = scope.spawn(move || {
            let mut h = md5::Md5::new();
            for chunk in md5_rx {
                h.update(&chunk[..]);
            }
            hex::encode(h.finalize())
        });
        let sha = scope.spawn(move || {
            let mut h = sha2::Sha512::new();
            for chunk in sha_rx {
                h.update(&chunk[..]);
            }
            hex::encode(h.finalize())
        });
        let mut size = 0i64;
        let read = (|| -> std::io::Result<()> {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                size += n as i64;
                let chunk = Arc::new(buf);
                if md5_tx.send(chunk.clone()).is_err() || sha_tx.send(chunk).is_err() {
                    return Err(std::io::Error::other("a digest thread ended early"));
                }
            }
        })();
        // Closing the channels ends the digest threads' loops.
        drop(md5_tx);
        drop(sha_tx);
        let md5 = md5
            .join()
            .map_err(|_| std::io::Error::other("the MD5 thread panicked"))?;
        let sha = sha
            .join()
            .map_err(|_| std::io::Error::other("the SHA-512 thread panicked"))?;
        read?;
        Ok((size, md5, sha))
    })
}

#[cfg(test)]
mod hash_tests {
    use super::hash_file;

    #[test]
    fn hash_file_gives_glances_digests() {
        let path = std::env::temp_dir().join(format!("yunhe-hash-{}", std::process::id()));
        // three chunks and a bit: the digests must not depend on the chunking
        let data: Vec<u8> = (0..(3 << 20) + 17).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let (size, md5, sha) = hash_file(&path).expect("hash");
        let _ = std::fs::remove_file(&path);
        use md5::Digest as _;
        assert_eq!(size, data.len() as i64);
        assert_eq!(md5, hex::encode(md5::Md5::digest(&data)));
        assert_eq!(sha, hex::encode(sha2::Sha512::digest(&data)));
        let empty = std::env::temp_dir().join(format!("yunhe-hash-empty-{}", std::process::id()));
        std::fs::write(&empty, b"").expect("write");
        let (size, md5, _) = hash_file(&empty).expect("hash");
        let _ = std::fs::remove_file(&empty);
        assert_eq!(
            (size, md5.as_str()),
            (0, "d41d8cd98f00b204e9800998ecf8427e")
        );
    }
}
