//! Faults as the CLI, scenarios and exercises handle them: the injection
//! points of the six services and the kinds acting at each ([`points`]),
//! specs parsed from arguments or JSON/YAML ([`spec`]), and a client for
//! the services' admin API ([`client`]).
//!
//! A spec is parsed and validated by `tracelab-contract` (`FaultSpec`) before
//! anything is sent, so a typo names its field; the point must exist and the
//! kind must act there (generic kinds act at every request point, the
//! others only where the table lists them), unless the caller forces it.

pub mod client;
pub mod points;
pub mod spec;

pub use client::FaultClient;
pub use points::{
    GENERIC_KINDS, canonical_service, check_point_and_kind, point, service_names, service_of_point,
};
pub use spec::{param_value, params_text, parse_specs, spec_from_args, spec_from_value};
