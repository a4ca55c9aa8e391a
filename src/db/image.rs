//! Glance's tables: images, their properties, tags, members and locations.

/// The Glance tables (migration 2).
pub const SCHEMA: &str = "";
