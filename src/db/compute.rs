//! Nova's tables: flavors, keypairs, quotas, servers and their actions.

/// The Nova tables (migration 3).
pub const SCHEMA: &str = "";
