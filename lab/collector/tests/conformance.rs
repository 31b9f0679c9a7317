//! Runs the conformance table in `tests/conformance/`: the fixed traces of
//! `traces.yaml` go in through OTLP, every case of `search.yaml` is asked of
//! `/api/search` and every case of `metrics.yaml` of `/api/metrics/query`,
//! and each answer must be the one the table gives. All failures are listed
//! together.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tracelab_collector::Collector;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

#[derive(Deserialize)]
struct Fixture {
    #[serde(default)]
    services: HashMap<String, BTreeMap<String, Yaml>>,
    #[serde(default)]
    scopes: HashMap<String, ScopeDef>,
    traces: Vec<TraceDef>,
}

#[derive(Deserialize)]
struct ScopeDef {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    attrs: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct TraceDef {
    name: String,
    spans: Vec<SpanDef>,
}

#[derive(Deserialize)]
struct SpanDef {
    id: u8,
    #[serde(default)]
    parent: u8,
    service: String,
    #[serde(default)]
    scope: Option<String>,
    name: String,
    kind: String,
    start: u64,
    duration: u64,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    attrs: BTreeMap<String, Yaml>,
    #[serde(default)]
    events: Vec<EventDef>,
    #[serde(default)]
    links: Vec<LinkDef>,
}

#[derive(Deserialize)]
struct EventDef {
    name: String,
    at: u64,
    #[serde(default)]
    attrs: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct LinkDef {
    trace: String,
    span: u8,
    #[serde(default)]
    attrs: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct Table {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    q: String,
    /// Whether Tempo answers the same; documentation, checked for shape.
    tempo: String,
    #[serde(default)]
    #[allow(dead_code)]
    doc: Option<String>,
    #[serde(default)]
    expect: Option<BTreeMap<String, Yaml>>,
    #[serde(default)]
    error: Option<String>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let text = std::fs::read_to_string(dir().join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn value(y: &Yaml) -> AnyValue {
    let v = match y {
        Yaml::Bool(b) => Value::BoolValue(*b),
        Yaml::Number(n) if n.is_i64() => Value::IntValue(n.as_i64().unwrap()),
        Yaml::Number(n) => Value::DoubleValue(n.as_f64().unwrap()),
        Yaml::String(s) => Value::StringValue(s.clone()),
        Yaml::Sequence(items) => Value::ArrayValue(ArrayValue {
            values: items.iter().map(value).collect(),
        }),
        other => panic!("unsupported attribute value {other:?}"),
    };
    AnyValue { value: Some(v) }
}

fn attrs(m: &BTreeMap<String, Yaml>) -> Vec<KeyValue> {
    m.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(value(v)),
            ..Default::default()
        })
        .collect()
}

fn trace_id(k: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = 0x7e;
    id[1] = k as u8;
    id
}

fn span_id(k: usize, n: u8) -> Vec<u8> {
    vec![0xab, k as u8, 0, 0, 0, 0, 0, n]
}

fn kind(s: &str) -> SpanKind {
    match s {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        other => panic!("unknown kind {other}"),
    }
}

/// The fixture as export requests (one per trace), and trace names by id.
fn requests(
    f: &Fixture,
    base_ns: u64,
) -> (Vec<ExportTraceServiceRequest>, HashMap<String, String>) {
    let index: HashMap<&str, usize> = f
        .traces
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i + 1))
        .collect();
    let mut names = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in f.traces.iter().enumerate() {
        let k = i + 1;
        names.insert(hex::encode(trace_id(k)), t.name.clone());
        let start = base_ns + 10 * SEC * k as u64;
        // service -> scope key -> spans
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<Span>>> = BTreeMap::new();
        for s in &t.spans {
            let span = Span {
                trace_id: trace_id(k).to_vec(),
                span_id: span_id(k, s.id),
                parent_span_id: if s.parent == 0 {
                    vec![]
                } else {
                    span_id(k, s.parent)
                },
                name: s.name.clone(),
                kind: kind(&s.kind) as i32,
                start_time_unix_nano: start + s.start * MS,
                end_time_unix_nano: start + (s.start + s.duration) * MS,
                attributes: attrs(&s.attrs),
                status: s.status.as_deref().map(|st| Status {
                    code: match st {
                        "error" => StatusCode::Error,
                        "ok" => StatusCode::Ok,
                        other => panic!("unknown status {other}"),
                    } as i32,
                    message: s.message.clone(),
                }),
                events: s
                    .events
                    .iter()
                    .map(|e| Event {
                        name: e.name.clone(),
                        time_unix_nano: start + (s.start + e.at) * MS,
                        attributes: attrs(&e.attrs),
                        ..Default::default()
                    })
                    .collect(),
                links: s
                    .links
                    .iter()
                    .map(|l| Link {
                        trace_id: trace_id(index[l.trace.as_str()]).to_vec(),
                        span_id: span_id(index[l.trace.as_str()], l.span),
                        attributes: attrs(&l.attrs),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            groups
                .entry(s.service.clone())
                .or_default()
                .entry(s.scope.clone().unwrap_or_default())
                .or_default()
                .push(span);
        }
        let resource_spans = groups
            .into_iter()
            .map(|(service, scopes)| {
                let mut res = vec![kv_str("service.name", &service)];
                res.extend(attrs(f.services.get(&service).unwrap_or(&BTreeMap::new())));
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: res,
                        ..Default::default()
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|(scope, spans)| {
                            let scope = match f.scopes.get(&scope) {
                                Some(d) => InstrumentationScope {
                                    name: d.name.clone(),
                                    version: d.version.clone(),
                                    attributes: attrs(&d.attrs),
                                    ..Default::default()
                                },
                                None => InstrumentationScope {
                                    name: "tracelab".into(),
                                    version: "1.0".into(),
                                    ..Default::default()
                                },
                            };
                            ScopeSpans {
                                scope: Some(scope),
                                spans,
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        out.push(ExportTraceServiceRequest { resource_spans });
    }
    (out, names)
}

async fn loaded() -> (Collector, HashMap<String, String>, u64) {
    let fixture: Fixture = load("traces.yaml");
    let c = start().await;
    let base_s = now_ns() / SEC - 600;
    let (reqs, names) = requests(&fixture, base_s * SEC);
    for r in &reqs {
        post_proto(&c, r).await;
    }
    (c, names, base_s)
}

fn check_tempo_note(case: &Case) -> Option<String> {
    (case.tempo != "same" && !case.tempo.starts_with("differs: "))
        .then(|| format!("{}: `tempo` must be `same` or `differs: why`", case.q))
}

async fn get_url(c: &Collector, path: &str, params: &[(&str, &str)]) -> (u16, Json) {
    let url =
        reqwest::Url::parse_with_params(&format!("http://{}{path}", c.api_addr()), params).unwrap();
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn search_table() {
    let table: Table = load("search.yaml");
    let (c, names, _) = loaded().await;
    let mut failures = Vec::new();
    for case in &table.cases {
        failures.extend(check_tempo_note(case));
        let (status, body) = get_url(
            &c,
            "/api/search",
            &[("q", &case.q), ("limit", "100"), ("spss", "1000")],
        )
        .await;
        if let Some(want) = &case.error {
            let msg = body["error"]["message"].as_str().unwrap_or_default();
            if status != 400 || !msg.contains(want.as_str()) {
                failures.push(format!(
                    "{}: expected a 400 with {want:?}, got {status} {body}",
                    case.q
                ));
            }
            continue;
        }
        if status != 200 {
            failures.push(format!("{}: {status} {body}", case.q));
            continue;
        }
        let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in body["traces"].as_array().unwrap() {
            let id = t["traceID"].as_str().unwrap();
            let name = names.get(id).cloned().unwrap_or_else(|| id.to_string());
            let mut seen = std::collections::HashSet::new();
            let mut spans = Vec::new();
            for set in t["spanSets"].as_array().unwrap() {
                for s in set["spans"].as_array().unwrap() {
                    if seen.insert(s["spanID"].as_str().unwrap().to_string()) {
                        spans.push(s["name"].as_str().unwrap().to_string());
                    }
                }
            }
            spans.sort();
            got.insert(name, spans);
        }
        let want: BTreeMap<String, Vec<String>> = case
            .expect
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no expect and no error", case.q))
            .iter()
            .map(|(k, v)| {
                let mut spans: Vec<String> = serde_yaml::from_value(v.clone()).unwrap();
                spans.sort();
                (k.clone(), spans)
            })
            .collect();
        if got != want {
            failures.push(format!("{}\n   want {want:?}\n   got  {got:?}", case.q));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.cases.len(),
        failures.join("\n")
    );
}

/// A label value as the table writes it.
fn label_value(v: &Json) -> String {
    if let Some(s) = v.get("stringValue").and_then(Json::as_str) {
        return s.to_string();
    }
    if let Some(s) = v.get("intValue").and_then(Json::as_str) {
        return s.to_string();
    }
    if let Some(f) = v.get("doubleValue").and_then(Json::as_f64) {
        return f.to_string();
    }
    if let Some(b) = v.get("boolValue").and_then(Json::as_bool) {
        return b.to_string();
    }
    "nil".into()
}

#[tokio::test]
async fn metrics_table() {
    let table: Table = load("metrics.yaml");
    let (c, _, base_s) = loaded().await;
    let (start, end) = (base_s.to_string(), (base_s + 100).to_string());
    let mut failures = Vec::new();
    for case in &table.cases {
        failures.extend(check_tempo_note(case));
        let (status, body) = get_url(
            &c,
            "/api/metrics/query",
            &[("q", &case.q), ("start", &start), ("end", &end)],
        )
        .await;
        if let Some(want) = &case.error {
            let msg = body["error"]["message"].as_str().unwrap_or_default();
            if status != 400 || !msg.contains(want.as_str()) {
                failures.push(format!(
                    "{}: expected a 400 with {want:?}, got {status} {body}",
                    case.q
                ));
            }
            continue;
        }
        if status != 200 {
            failures.push(format!("{}: {status} {body}", case.q));
            continue;
        }
        let got: BTreeMap<String, f64> = body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let key = s["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        format!(
                            "{}={}",
                            l["key"].as_str().unwrap(),
                            label_value(&l["value"])
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                (key, s["value"].as_f64().unwrap())
            })
            .collect();
        let want: BTreeMap<String, f64> = case
            .expect
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        let same = got.len() == want.len()
            && want
                .iter()
                .all(|(k, v)| got.get(k).is_some_and(|g| (g - v).abs() < 1e-9));
        if !same {
            failures.push(format!("{}\n   want {want:?}\n   got  {got:?}", case.q));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.cases.len(),
        failures.join("\n")
    );
}
