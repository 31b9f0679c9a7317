//! What the bench compares: the tracing modes (each a lab started with its
//! own environment) and the routes driven through the gateway.

use serde::Serialize;

/// How the services of one bench lab trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `OTEL_SDK_DISABLED=true`: no tracer provider, the baseline.
    Off,
    /// The SDK on, `OTEL_TRACES_SAMPLER=always_off`: every span is created
    /// and nothing is sampled.
    AlwaysOff,
    /// `parentbased_traceidratio` at 0.1: the gateway keeps one trace in ten.
    Ratio10,
    /// `parentbased_always_on`: every span is recorded and exported.
    Full,
    /// 100 %, exporting to an address nobody listens on (connection refused).
    CollectorDown,
    /// 100 %, exporting to a listener that accepts and never answers.
    Blackholed,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 6] = [
        Mode::Off,
        Mode::AlwaysOff,
        Mode::Ratio10,
        Mode::Full,
        Mode::CollectorDown,
        Mode::Blackholed,
    ];

    /// The name `--modes` takes and the table shows.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::AlwaysOff => "always_off",
            Mode::Ratio10 => "10%",
            Mode::Full => "100%",
            Mode::CollectorDown => "collector-down",
            Mode::Blackholed => "blackholed",
        }
    }

    /// The environment every service of the lab gets for this mode (the
    /// export endpoint of the last two is set apart, see [`super::sink`]).
    pub fn env(self) -> Vec<(String, String)> {
        let pairs: &[(&str, &str)] = match self {
            Mode::Off => &[("OTEL_SDK_DISABLED", "true")],
            Mode::AlwaysOff => &[("OTEL_TRACES_SAMPLER", "always_off")],
            Mode::Ratio10 => &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
            Mode::Full | Mode::CollectorDown | Mode::Blackholed => {
                &[("OTEL_TRACES_SAMPLER", "parentbased_always_on")]
            }
        };
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        let s = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .or(match s {
                "10" | "ratio" => Some(Mode::Ratio10),
                "100" | "full" | "always_on" => Some(Mode::Full),
                "down" => Some(Mode::CollectorDown),
                "blackhole" => Some(Mode::Blackholed),
                _ => None,
            })
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// A request the bench sends through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /api/login`: gateway → auth, the two-hop route.
    Login,
    /// `POST /api/checkout`: every service but search, Postgres and RabbitMQ.
    Checkout,
}

impl Route {
    /// Both routes, in table order.
    pub const ALL: [Route; 2] = [Route::Login, Route::Checkout];

    /// The name the table shows.
    pub fn name(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Checkout => "checkout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
        }
        assert_eq!("10".parse::<Mode>().unwrap(), Mode::Ratio10);
        assert!("sometimes".parse::<Mode>().is_err());
    }

    #[test]
    fn only_off_disables_the_sdk() {
        for m in Mode::ALL {
            let disabled = m
                .env()
                .iter()
                .any(|(k, v)| k == "OTEL_SDK_DISABLED" && v == "true");
            assert_eq!(disabled, m == Mode::Off, "{m:?}");
        }
    }
}
