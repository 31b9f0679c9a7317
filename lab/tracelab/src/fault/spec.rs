//! Fault specs as people write them: `POINT KIND KEY=VALUE...` arguments,
//! or JSON/YAML text holding one spec or a list.

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use tracelab_contract::fault::FaultSpec;

use super::points::{canonical_service, service_names, service_of_point};

/// Reads fault specs from JSON or YAML text: one spec or a list. An entry
/// may carry `service:` (as in scenario files); it must agree with the point.
///
/// # Errors
/// When the text is neither JSON nor YAML, or a spec is invalid (the message
/// names the entry and the field).
pub fn parse_specs(text: &str) -> anyhow::Result<Vec<FaultSpec>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(text).context("fault spec is neither JSON nor YAML")?,
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut specs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let (_, spec) = spec_from_value(item).with_context(|| format!("fault #{}", i + 1))?;
        specs.push(spec);
    }
    if specs.is_empty() {
        bail!("no fault spec given");
    }
    Ok(specs)
}

/// Reads one spec, with an optional `service` key beside the FaultSpec
/// fields; returns the service (given or derived from the point) and the spec.
///
/// # Errors
/// When the spec does not parse or validate, or `service` disagrees with
/// the point's prefix.
pub fn spec_from_value(value: Value) -> anyhow::Result<(&'static str, FaultSpec)> {
    let Value::Object(mut map) = value else {
        bail!(
            "a fault spec must be a mapping like {{point: payment.save, kind: latency, ms: 800}}"
        );
    };
    let given = match map.remove("service") {
        None => None,
        Some(Value::String(s)) => Some(canonical_service(&s).with_context(|| {
            format!(
                "unknown service {s:?} (one of {})",
                service_names().join(", ")
            )
        })?),
        Some(other) => bail!("service must be a string, got {other}"),
    };
    let spec = FaultSpec::from_value(Value::Object(map)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let derived = service_of_point(&spec.point);
    let service = match (given, derived) {
        (Some(g), Some(d)) if g != d => {
            bail!("point {} belongs to {d}, not to service {g}", spec.point)
        }
        (Some(g), _) => g,
        (None, Some(d)) => d,
        (None, None) => bail!(
            "cannot tell the service of point {:?}: name it with `service:` or use a known point",
            spec.point
        ),
    };
    Ok((service, spec))
}

/// Turns a `KEY=VALUE` parameter into JSON: integers and decimals become
/// numbers, `true`/`false` booleans, anything else a string.
pub fn param_value(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = raw.parse::<u64>() {
        return Value::from(u);
    }
    if raw.contains('.')
        && let Ok(f) = raw.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

/// Builds the spec of `fault set POINT KIND KEY=VALUE...`.
///
/// # Errors
/// A parameter that is not `KEY=VALUE`, a duplicate key, or a spec that does
/// not validate (the message names the field).
pub fn spec_from_args(
    point: &str,
    kind: &str,
    params: &[String],
    duration: Option<&str>,
    probability: Option<f64>,
    schedule: Option<&str>,
) -> anyhow::Result<FaultSpec> {
    let mut map = Map::new();
    map.insert("point".into(), Value::from(point));
    map.insert("kind".into(), Value::from(kind));
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("parameter {p:?} is not KEY=VALUE (e.g. ms=800)");
        };
        let k = k.trim();
        if k.is_empty() || map.contains_key(k) {
            bail!("parameter {p:?}: empty or repeated key");
        }
        map.insert(k.to_string(), param_value(v.trim()));
    }
    if let Some(d) = duration {
        map.insert("for".into(), Value::from(d));
    }
    if let Some(p) = probability {
        map.insert("probability".into(), json!(p));
    }
    if let Some(s) = schedule {
        let Some((on, off)) = s.split_once('/') else {
            bail!("--schedule takes ON/OFF, e.g. 30s/1m");
        };
        map.insert(
            "schedule".into(),
            json!({"on": on.trim(), "off": off.trim()}),
        );
    }
    FaultSpec::from_value(Value::Object(map)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Renders a spec's parameters as `key=value ...` (no point, kind or
/// probability), for listings.
pub fn params_text(spec: &FaultSpec) -> String {
    let Ok(Value::Object(map)) = serde_json::to_value(&spec.kind) else {
        return String::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tracelab_contract::fault::FaultKind;

    #[test]
    fn builds_specs_from_arguments() {
        let spec = spec_from_args(
            "payment.save",
            "latency",
            &["ms=800".into(), "jitter_ms=100".into()],
            Some("5m"),
            Some(0.5),
            Some("30s/1m"),
        )
        .unwrap();
        assert_eq!(
            spec.kind,
            FaultKind::Latency {
                ms: 800,
                jitter_ms: 100
            }
        );
        assert_eq!(spec.duration, Some(Duration::from_secs(300)));
        assert_eq!(spec.probability, 0.5);
        assert!(spec.schedule.is_some());
        let err = spec_from_args(
            "payment.save",
            "latency",
            &["msx=1".into()],
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("msx") || err.contains("ms"), "{err}");
        let err = spec_from_args(
            "payment.save",
            "latency",
            &["ms=999999".into()],
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("latency.ms"), "{err}");
        assert!(
            spec_from_args("payment.save", "latency", &["ms".into()], None, None, None).is_err()
        );
        assert!(
            spec_from_args(
                "x.y",
                "error",
                &["message=bad upstream".into()],
                None,
                None,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn lifetimes_from_arguments() {
        let spec = |d: Option<&str>| {
            spec_from_args("payment.save", "dead_letter", &[], d, None, None).map(|s| s.duration)
        };
        assert_eq!(spec(Some("never")).unwrap(), None);
        assert_eq!(spec(Some("1h")).unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(spec(None).unwrap(), Some(Duration::from_secs(15 * 60)));
        assert!(spec(Some("0s")).is_err());
    }

    #[test]
    fn parses_spec_files() {
        let yaml = "- {point: payment.save, kind: latency, ms: 800}\n- {service: provider, point: provider.charge, kind: outage}\n";
        let specs = parse_specs(yaml).unwrap();
        assert_eq!(specs.len(), 2);
        let json = r#"{"point":"auth.verify","kind":"error","status":503}"#;
        assert_eq!(parse_specs(json).unwrap().len(), 1);
        let err = format!(
            "{:#}",
            parse_specs("{point: payment.save, kind: latency}").unwrap_err()
        );
        assert!(err.contains("ms"), "{err}");
        let err = format!(
            "{:#}",
            parse_specs("{service: auth, point: payment.save, kind: dead_letter}").unwrap_err()
        );
        assert!(err.contains("belongs to payment"), "{err}");
    }

    #[test]
    fn param_values_are_typed() {
        assert_eq!(param_value("800"), json!(800));
        assert_eq!(param_value("-5"), json!(-5));
        assert_eq!(param_value("0.25"), json!(0.25));
        assert_eq!(param_value("true"), json!(true));
        assert_eq!(param_value("user.id"), json!("user.id"));
    }
}
