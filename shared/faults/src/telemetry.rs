//! Applies the telemetry-kind faults of a service's `<service>.telemetry`
//! point to the process-wide settings in `tracelab_telemetry::chaos`.

use std::time::Duration;

use tracelab_contract::fault::{FaultKind, FaultPoint};
use tracelab_telemetry::chaos::{self, TelemetryFaults};

use crate::FaultRegistry;

/// The settings a fault at the telemetry point stands for.
pub fn settings_for(kind: Option<FaultKind>) -> TelemetryFaults {
    let mut faults = TelemetryFaults::default();
    match kind {
        Some(FaultKind::SamplingMiss { rate }) => faults.sampling_rate = Some(rate),
        Some(FaultKind::SlowExport { ms }) => faults.slow_export = Some(Duration::from_millis(ms)),
        Some(FaultKind::DropSpans) => faults.drop_spans = true,
        Some(FaultKind::ClockSkew { ms }) => faults.clock_skew_ms = ms,
        Some(FaultKind::HighCardinality { attribute }) => faults.high_cardinality = Some(attribute),
        _ => {}
    }
    faults
}

/// Keeps `chaos` in step with the fault at `point` (on set, clear, expiry
/// and schedule switches) until the registry is dropped. Call inside a
/// Tokio runtime.
pub fn follow(registry: &FaultRegistry, point: FaultPoint) {
    let mut changes = registry.subscribe();
    let registry = registry.clone();
    chaos::set(settings_for(registry.is_active(point)));
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            chaos::set(settings_for(registry.is_active(point)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_settings() {
        assert!(settings_for(Some(FaultKind::DropSpans)).drop_spans);
        assert_eq!(
            settings_for(Some(FaultKind::ClockSkew { ms: -900 })).clock_skew_ms,
            -900
        );
        assert_eq!(
            settings_for(Some(FaultKind::SamplingMiss { rate: 0.01 })).sampling_rate,
            Some(0.01)
        );
        assert_eq!(
            settings_for(Some(FaultKind::CpuBurn { ms: 5 })),
            TelemetryFaults::default()
        );
        assert_eq!(settings_for(None), TelemetryFaults::default());
    }
}
