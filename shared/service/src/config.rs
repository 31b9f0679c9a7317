//! Settings every service reads the same way.

/// The admin token used when `TRACELAB_ADMIN_TOKEN` is unset; `tracelab up`
/// uses the same default, so the lab works with no configuration.
pub const DEFAULT_ADMIN_TOKEN: &str = "tracelab-admin";

/// The bearer token the admin (fault) API requires: `TRACELAB_ADMIN_TOKEN`.
pub fn admin_token() -> String {
    std::env::var("TRACELAB_ADMIN_TOKEN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_TOKEN.to_string())
}
