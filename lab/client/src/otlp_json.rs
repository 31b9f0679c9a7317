//! Readers for OTLP/JSON values (attributes, `AnyValue`, 64-bit integers
//! sent as strings), shared by the trace and the search parsers.

use std::collections::BTreeMap;

use serde_json::Value;

pub(crate) fn as_array(v: &Value) -> Vec<&Value> {
    v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

pub(crate) fn parse_u64(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}
/// Converts an OTLP/JSON `[{key, value: AnyValue}]` list into a map.
pub fn convert_attributes(list: &Value) -> BTreeMap<String, Value> {
    as_array(list)
        .into_iter()
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_string();
            let value = kv
                .get("value")
                .map(convert_any_value)
                .unwrap_or(Value::Null);
            Some((key, value))
        })
        .collect()
}

/// Converts one OTLP/JSON `AnyValue` (`{"stringValue":..}`, `{"intValue":"42"}`, ...)
/// into plain JSON. Integers sent as strings become numbers; bytes stay base64 text.
pub fn convert_any_value(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return v.clone(); // already plain
    };
    if let Some(s) = obj.get("stringValue") {
        return s.clone();
    }
    if let Some(b) = obj.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = obj.get("intValue") {
        return match i {
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| i.clone()),
            other => other.clone(),
        };
    }
    if let Some(d) = obj.get("doubleValue") {
        return match d {
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .unwrap_or_else(|| d.clone()),
            other => other.clone(),
        };
    }
    if let Some(a) = obj.get("arrayValue") {
        let values = a.get("values").map(as_array).unwrap_or_default();
        return Value::Array(values.into_iter().map(convert_any_value).collect());
    }
    if let Some(kv) = obj.get("kvlistValue") {
        let map = kv.get("values").map(convert_attributes).unwrap_or_default();
        return Value::Object(map.into_iter().collect());
    }
    if let Some(b) = obj.get("bytesValue") {
        return b.clone();
    }
    Value::Null
}
