//! Telemetry configuration, read once from the standard OpenTelemetry
//! environment variables plus `TRACELAB_SAMPLING_FILE` and `TRACELAB_LOG`.

use std::path::PathBuf;

use tracelab_contract::defaults;

/// Which OTLP transport the exporter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (the default).
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

/// A sampler chosen through `OTEL_TRACES_SAMPLER`, overriding `sampling.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerOverride {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

/// Everything `init` needs to build the tracer provider and the log layer.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub service_name: String,
    pub endpoint: String,
    pub protocol: Protocol,
    pub sdk_disabled: bool,
    pub sampler: Option<SamplerOverride>,
    pub sampling_file: Option<PathBuf>,
    pub log_filter: String,
    /// The export queue's size in spans (`OTEL_BSP_MAX_QUEUE_SIZE`); a
    /// full queue drops spans and counts them.
    pub max_queue: usize,
    /// How long a span may wait for its export batch to fill
    /// (`OTEL_BSP_SCHEDULE_DELAY`, ms).
    pub scheduled_delay: std::time::Duration,
    /// Spans per export call, at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`;
    /// never more than the queue).
    pub max_batch: usize,
    /// The shortest time between two export calls of batches that are not
    /// full (`TRACELAB_EXPORT_MIN_INTERVAL`, ms).
    pub min_interval: std::time::Duration,
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Parses `raw` (the value of `name`, if set) or falls back to `default`.
///
/// Fails with a message naming the variable when the value does not parse.
pub fn parse_or<T>(name: &'static str, raw: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match raw.filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::new(name, v.clone(), e.to_string())),
    }
}

impl TelemetryConfig {
    /// Reads the telemetry settings; `default_service` names the service when
    /// `OTEL_SERVICE_NAME` is unset.
    pub fn from_env(default_service: &str) -> Result<Self, ConfigError> {
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default_service.to_string());
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref() {
            None | Some("") | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    other,
                    "expected http/protobuf or grpc",
                ));
            }
        };
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| match protocol {
                Protocol::HttpProtobuf => defaults::otlp_http_url(),
                Protocol::Grpc => defaults::otlp_grpc_url(),
            });
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                endpoint,
                "expected an http:// or https:// URL",
            ));
        }
        let sdk_disabled = parse_or(
            "OTEL_SDK_DISABLED",
            std::env::var("OTEL_SDK_DISABLED").ok(),
            false,
        )?;
        let sampler = parse_sampler(
            std::env::var("OTEL_TRACES_SAMPLER").ok(),
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok(),
        )?;
        let sampling_file = match std::env::var("TRACELAB_SAMPLING_FILE")
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(path) => Some(PathBuf::from(path)),
            None => Some(PathBuf::from("sampling.yaml")).filter(|p| p.exists()),
        };
        let log_filter = std::env::var("TRACELAB_LOG")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "info".into());
        let max_queue = parse_or(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            std::env::var("OTEL_BSP_MAX_QUEUE_SIZE").ok(),
            crate::stats::QueueSettings::default().max_queue,
        )?;
        if max_queue == 0 {
            return Err(ConfigError::new(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "0",
                "the export queue must hold at least one span",
            ));
        }
        let defaults = crate::stats::QueueSettings::default();
        let scheduled_delay = std::time::Duration::from_millis(parse_or(
            "OTEL_BSP_SCHEDULE_DELAY",
            std::env::var("OTEL_BSP_SCHEDULE_DELAY").ok(),
            defaults.scheduled_delay.as_millis() as u64,
        )?);
        let min_interval = std::time::Duration::from_millis(parse_or(
            "TRACELAB_EXPORT_MIN_INTERVAL",
            std::env::var("TRACELAB_EXPORT_MIN_INTERVAL").ok(),
            defaults.min_interval.as_millis() as u64,
        )?);
        let max_batch = positive(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            std::env::var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").ok(),
            defaults.max_batch,
        )?;
        Ok(Self {
            service_name,
            scheduled_delay,
            min_interval,
            max_batch,
            endpoint,
            protocol,
            sdk_disabled,
            sampler,
            sampling_file,
            log_filter,
            max_queue,
        })
    }
}

/// [`parse_or`] for a count that must be at least 1.
fn positive(name: &'static str, raw: Option<String>, default: usize) -> Result<usize, ConfigError> {
    let n = parse_or(name, raw.clone(), default)?;
    if n == 0 {
        return Err(ConfigError::new(
            name,
            raw.unwrap_or_default(),
            "must be at least 1",
        ));
    }
    Ok(n)
}

fn parse_sampler(
    name: Option<String>,
    arg: Option<String>,
) -> Result<Option<SamplerOverride>, ConfigError> {
    let ratio = || parse_or("OTEL_TRACES_SAMPLER_ARG", arg.clone(), 1.0_f64);
    Ok(match name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("always_on") => Some(SamplerOverride::AlwaysOn),
        Some("always_off") => Some(SamplerOverride::AlwaysOff),
        Some("traceidratio") => Some(SamplerOverride::Ratio(ratio()?)),
        Some("parentbased_always_on") => Some(SamplerOverride::ParentBasedAlwaysOn),
        Some("parentbased_always_off") => Some(SamplerOverride::ParentBasedAlwaysOff),
        Some("parentbased_traceidratio") => Some(SamplerOverride::ParentBasedRatio(ratio()?)),
        Some(other) => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                other,
                "expected always_on, always_off, traceidratio or their parentbased_ forms",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_follow_the_otel_spec() {
        assert_eq!(parse_sampler(None, None).unwrap(), None);
        assert_eq!(
            parse_sampler(Some("parentbased_traceidratio".into()), Some("0.25".into())).unwrap(),
            Some(SamplerOverride::ParentBasedRatio(0.25))
        );
        let err = parse_sampler(Some("sometimes".into()), None).unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER"), "{err}");
        assert!(parse_sampler(Some("traceidratio".into()), Some("lots".into())).is_err());
    }

    #[test]
    fn parse_or_names_the_variable() {
        assert_eq!(parse_or("X", None, 7u16).unwrap(), 7);
        assert_eq!(parse_or("X", Some(" 9 ".into()), 7u16).unwrap(), 9);
        let err = parse_or("TRACELAB_X", Some("nine".into()), 7u16).unwrap_err();
        assert!(err.to_string().starts_with("TRACELAB_X=\"nine\""), "{err}");
    }
}
