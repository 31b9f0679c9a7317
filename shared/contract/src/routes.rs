//! The gateway's public routes. Each [`Route`] has the method and path the
//! gateway's router mounts, and the name its SERVER span carries (the
//! semantic-convention span name `{method} {route}`), which is also how
//! traffic tools, TraceQL queries and sampling overrides refer to it.

/// One HTTP route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// `GET`, `POST`...
    pub method: &'static str,
    /// The path template as axum mounts it, e.g. `/api/orders/{id}`.
    pub path: &'static str,
    /// `{method} {path}`, e.g. `GET /api/orders/{id}`: the span name.
    pub name: &'static str,
}

/// Builds a [`Route`] whose name cannot drift from its method and path.
macro_rules! route {
    ($method:literal, $path:literal) => {
        Route {
            method: $method,
            path: $path,
            name: concat!($method, " ", $path),
        }
    };
}

/// Log in as a demo user: `{"username","password"}` → `{"token",..}`.
pub const LOGIN: Route = route!("POST", "/api/login");
/// Product search, `?q=` (the lab's high-volume, cheap route).
pub const PRODUCTS: Route = route!("GET", "/api/products");
/// A checkout: bearer token, `Idempotency-Key`, then payment.
pub const CHECKOUT: Route = route!("POST", "/api/checkout");
/// An order and its payment, for the signed-in user.
pub const ORDER: Route = route!("GET", "/api/orders/{id}");

/// Every public route of the gateway.
pub const GATEWAY: [Route; 4] = [LOGIN, PRODUCTS, CHECKOUT, ORDER];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_method_then_path() {
        assert_eq!(CHECKOUT.name, "POST /api/checkout");
        for route in GATEWAY {
            assert_eq!(route.name, format!("{} {}", route.method, route.path));
            assert!(route.path.starts_with("/api/"), "{route:?}");
        }
    }
}
