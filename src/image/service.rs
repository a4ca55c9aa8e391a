//! The image service's Rust API for other services (Nova boots from images
//! through it, as OpenStack's nova asks glance).
// Nova (another branch) is its first caller; until they meet nothing here calls it.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

use crate::db::Db;
use crate::db::image as store;

/// Errors of the image service API.
#[derive(Debug, thiserror::Error)]
pub enum ImageServiceError {
    /// No such image, or the project may not use it.
    #[error("Image {0} could not be found.")]
    NotFound(String),
    /// The image exists but has no usable data yet (or is deactivated).
    #[error("Image {id} is not active (status {status}).")]
    NotActive { id: String, status: String },
    /// The state file failed.
    #[error("image service: {0}")]
    Db(#[from] crate::db::DbError),
}

/// What a boot needs to know about an image.
#[derive(Debug, Clone)]
pub struct BootImage {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub min_disk: i64,
    pub min_ram: i64,
    pub owner: Option<String>,
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
                Ok(allowed.then_some(image))
            })
            .await?;
        let image = found.ok_or_else(|| ImageServiceError::NotFound(id.to_string()))?;
        Ok(self.boot_image(image))
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
        Ok(images.into_iter().map(|i| self.boot_image(i)).collect())
    }

    fn boot_image(&self, image: store::Image) -> BootImage {
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
            path: self.data_path(&image.id),
            id: image.id,
            name: image.name,
            status: image.status,
            disk_format: image.disk_format,
            container_format: image.container_format,
            size: image.size,
            virtual_size: image.virtual_size,
            min_disk: image.min_disk,
            min_ram: image.min_ram,
            owner: image.owner,
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
