//! What the generator sends: routes and their mix, the users it logs in
//! as, and the limits of a run ([`LoadConfig`]).

use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tracelab_contract::service::ServiceName;
use tracelab_contract::users::DEMO_USERS;

/// The card the payment provider declines (402).
pub const DECLINE_CARD: &str = "4000000000000002";
/// The default mix of `--mix`.
pub const DEFAULT_MIX: &str = "checkout=1,search=5,login=1,order=0";
/// Terms for `GET /api/products?q=`, all matching the seeded catalogue.
pub const SEARCH_TERMS: &[&str] = &[
    "tea", "matcha", "green", "sencha", "cup", "teapot", "crackers", "tracing",
];

/// Parses `NAME` or `NAME:PASSWORD` (password defaults to `NAME-password`).
///
/// # Errors
/// When the name is empty.
pub fn parse_user(s: &str) -> Result<User, String> {
    let (name, password) = match s.split_once(':') {
        Some((n, p)) => (n.trim(), p.to_string()),
        None => (s.trim(), tracelab_client::gateway::demo_password(s.trim())),
    };
    if name.is_empty() {
        return Err(format!("expected NAME or NAME:PASSWORD, got {s:?}"));
    }
    Ok(User {
        name: name.to_string(),
        password,
    })
}

/// A route of the gateway the generator can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /api/login`
    Login,
    /// `GET /api/products?q=`
    Search,
    /// `POST /api/checkout`
    Checkout,
    /// `GET /api/orders/{id}` of an order created by an earlier checkout.
    Order,
}

impl Route {
    /// Every route, in the order of the summary table.
    pub const ALL: [Route; 4] = [Route::Login, Route::Search, Route::Checkout, Route::Order];

    /// The name used in `--mix` and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Search => "search",
            Route::Checkout => "checkout",
            Route::Order => "order",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of the routes, e.g. `checkout=1,search=5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    pub(super) weights: [u32; 4],
}

impl Mix {
    /// The weight of `route` (0 = never sent).
    pub fn weight(&self, route: Route) -> u32 {
        self.weights[route.index()]
    }

    /// Routes with a weight above 0, in table order.
    pub fn routes(&self) -> Vec<Route> {
        Route::ALL
            .into_iter()
            .filter(|r| self.weight(*r) > 0)
            .collect()
    }

    /// A mix of only these routes, each with its weight.
    ///
    /// # Panics
    /// When every weight is 0 (use [`parse_mix`] for untrusted input).
    pub fn of(weights: &[(Route, u32)]) -> Mix {
        let mut mix = Mix { weights: [0; 4] };
        for (r, w) in weights {
            mix.weights[r.index()] = *w;
        }
        assert!(mix.weights.iter().any(|w| *w > 0), "a mix needs a route");
        mix
    }

    pub(super) fn needs_token(&self) -> bool {
        self.weight(Route::Checkout) > 0 || self.weight(Route::Order) > 0
    }
}

impl Default for Mix {
    fn default() -> Mix {
        parse_mix(DEFAULT_MIX).expect("the default mix parses")
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Route::ALL
            .iter()
            .filter(|r| self.weight(**r) > 0)
            .map(|r| format!("{}={}", r.name(), self.weight(*r)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `checkout=1,search=5,login=1,order=0`.
///
/// # Errors
/// On a part without `=`, an unknown route, a weight that is not a whole
/// number (0..=1000000), a route given twice, or when every weight is 0.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut weights = [0u32; 4];
    let mut seen = [false; 4];
    let names = "login, search, checkout, order";
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, weight)) = part.split_once('=') else {
            return Err(format!(
                "expected ROUTE=WEIGHT, got {part:?} (e.g. search=5)"
            ));
        };
        let name = name.trim();
        let route = Route::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown route {name:?} (routes: {names})"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= 1_000_000)
            .ok_or_else(|| {
                format!("bad weight {weight:?} for {name} (a whole number 0..=1000000)")
            })?;
        if std::mem::replace(&mut seen[route.index()], true) {
            return Err(format!("route {name} given twice"));
        }
        weights[route.index()] = weight;
    }
    if weights.iter().all(|w| *w == 0) {
        return Err(format!(
            "no route with a weight above 0 in {s:?} (routes: {names})"
        ));
    }
    Ok(Mix { weights })
}

/// A demo user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password.
    pub password: String,
}

impl User {
    /// A user with the demo password: the demo user's, or `NAME-password`
    /// for another name.
    pub fn demo(name: &str) -> User {
        User {
            name: name.to_string(),
            password: tracelab_client::gateway::demo_password(name),
        }
    }
}

/// Where the progress line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No progress output.
    Off,
    /// On stdout: refreshed in place on a terminal, a line every 5 s otherwise.
    Stdout,
    /// The same on stderr (keeps stdout clean for `--json`).
    Stderr,
}

/// What to send, how fast, for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Gateway base URL.
    pub gateway: String,
    /// Requests per second (> 0).
    pub rps: f64,
    /// How long to send; `None` until the stop future resolves.
    pub duration: Option<Duration>,
    /// Route weights.
    pub mix: Mix,
    /// Users for login, checkout and order, round robin.
    pub users: Vec<User>,
    /// Card of the checkouts.
    pub card: String,
    /// Share of checkouts sent with [`DECLINE_CARD`] (0..=1).
    pub decline_share: f64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most requests in flight before slots are dropped.
    pub max_in_flight: usize,
    /// Lateness from which a send counts as behind schedule.
    pub lag_threshold: Duration,
    /// Progress output.
    pub progress: Progress,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            gateway: ServiceName::Gateway.default_url(),
            rps: 10.0,
            duration: Some(Duration::from_secs(10)),
            mix: Mix::default(),
            users: DEMO_USERS.map(|u| User::demo(u.username)).to_vec(),
            card: "4242424242424242".to_string(),
            decline_share: 0.0,
            timeout: Duration::from_secs(10),
            max_in_flight: 2000,
            lag_threshold: Duration::from_millis(5),
            progress: Progress::Off,
        }
    }
}

impl LoadConfig {
    pub(super) fn validate(&self) -> anyhow::Result<Url> {
        if !(self.rps.is_finite() && self.rps > 0.0) {
            bail!("rps must be greater than 0 (got {})", self.rps);
        }
        if self.duration == Some(Duration::ZERO) {
            bail!("duration must be greater than 0");
        }
        if !(0.0..=1.0).contains(&self.decline_share) {
            bail!(
                "decline share must be between 0 and 1 (got {})",
                self.decline_share
            );
        }
        if self.max_in_flight == 0 {
            bail!("max in flight must be at least 1");
        }
        if self.timeout.is_zero() {
            bail!("timeout must be greater than 0");
        }
        if self.users.is_empty() && (self.mix.needs_token() || self.mix.weight(Route::Login) > 0) {
            bail!("no users given (checkout, order and login need one)");
        }
        let url = Url::parse(&self.gateway)
            .with_context(|| format!("bad gateway URL {:?}", self.gateway))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("bad gateway URL {:?}: not http(s)", self.gateway);
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parsing() {
        let mix = parse_mix("checkout=1, search=5,login=1,order=0").unwrap();
        assert_eq!(mix.weight(Route::Checkout), 1);
        assert_eq!(mix.weight(Route::Search), 5);
        assert_eq!(mix.weight(Route::Order), 0);
        assert_eq!(
            mix.routes(),
            vec![Route::Login, Route::Search, Route::Checkout]
        );
        assert_eq!(mix.to_string(), "login=1,search=5,checkout=1");
        assert_eq!(parse_mix(&mix.to_string()).unwrap(), mix);
        assert_eq!(parse_mix("Search=2").unwrap().routes(), vec![Route::Search]);
        assert_eq!(Mix::default(), mix);

        let err = |s: &str| parse_mix(s).unwrap_err();
        assert!(
            err("search").contains("expected ROUTE=WEIGHT"),
            "{}",
            err("search")
        );
        assert!(err("payments=1").contains("unknown route \"payments\""));
        assert!(err("payments=1").contains("login, search, checkout, order"));
        assert!(err("search=-1").contains("bad weight"));
        assert!(err("search=1.5").contains("bad weight"));
        assert!(err("search=1,search=2").contains("twice"));
        assert!(err("search=0,login=0").contains("no route"));
        assert!(err("").contains("no route"));
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("alice"), Ok(User::demo("alice")));
        let u = parse_user("dave:secret:x").unwrap();
        assert_eq!((u.name.as_str(), u.password.as_str()), ("dave", "secret:x"));
        assert!(parse_user(":pw").is_err());
    }

    #[test]
    fn config_validation() {
        let ok = LoadConfig::default();
        assert!(ok.validate().is_ok());
        let bad = |c: LoadConfig| c.validate().unwrap_err().to_string();
        assert!(
            bad(LoadConfig {
                rps: 0.0,
                ..LoadConfig::default()
            })
            .contains("rps")
        );
        assert!(
            bad(LoadConfig {
                rps: f64::NAN,
                ..LoadConfig::default()
            })
            .contains("rps")
        );
        assert!(
            bad(LoadConfig {
                gateway: "ftp://x".into(),
                ..LoadConfig::default()
            })
            .contains("not http")
        );
        assert!(
            bad(LoadConfig {
                gateway: "nope".into(),
                ..LoadConfig::default()
            })
            .contains("bad gateway URL")
        );
        assert!(
            bad(LoadConfig {
                users: vec![],
                ..LoadConfig::default()
            })
            .contains("no users")
        );
        assert!(
            bad(LoadConfig {
                decline_share: 1.5,
                ..LoadConfig::default()
            })
            .contains("decline")
        );
        assert!(
            bad(LoadConfig {
                duration: Some(Duration::ZERO),
                ..LoadConfig::default()
            })
            .contains("duration")
        );
        assert!(
            bad(LoadConfig {
                max_in_flight: 0,
                ..LoadConfig::default()
            })
            .contains("in flight")
        );
    }
}
