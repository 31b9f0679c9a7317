//! Property tests of what a real collector (started on port 0) does with
//! hostile input: arbitrary and mutated OTLP bodies (protobuf, JSON, gzip),
//! deeply nested OTLP values, and arbitrary, token-soup and deeply nested
//! TraceQL. Every answer must be a success or a 4xx with a readable error;
//! a panic (a dropped connection), a 5xx or a stack overflow (the process
//! dies) fails the test. Case counts are bounded so each test runs in
//! seconds; `PROPTEST_CASES` raises them.

mod common;

use std::io::Write;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use tracelab_collector::{Collector, CollectorConfig};

use common::{S, kv_str, request, trace_id};

const NESTING_LIMIT: usize = 64;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A collector and a runtime to drive it from proptest's synchronous cases.
struct Harness {
    rt: tokio::runtime::Runtime,
    collector: Collector,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Harness {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let collector = rt
            .block_on(Collector::start(CollectorConfig::ephemeral()))
            .expect("collector starts");
        Self {
            rt,
            collector,
            http: common::client(),
        }
    }

    fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Answer, TestCaseError> {
        self.rt.block_on(async {
            let response = request.send().await.map_err(|e| {
                TestCaseError::fail(format!(
                    "{what}: no answer (a panic drops the connection): {e}"
                ))
            })?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = response
                .bytes()
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: body cut short: {e}")))?;
            Ok(Answer {
                status,
                content_type,
                body: body.to_vec(),
            })
        })
    }

    /// POSTs an OTLP body; the answer must be 2xx or a 4xx with an error
    /// message in the request's encoding.
    fn export(&self, content_type: &str, gzip: bool, body: Vec<u8>) -> Result<u16, TestCaseError> {
        let mut request = self
            .http
            .post(format!(
                "http://{}/v1/traces",
                self.collector.otlp_http_addr()
            ))
            .header("content-type", content_type);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let answer = self.send(request.body(body), "POST /v1/traces")?;
        prop_assert!(
            answer.status < 300 || (400..500).contains(&answer.status),
            "POST /v1/traces answered {}",
            answer.status
        );
        if answer.status >= 400 {
            let message = if answer.content_type.contains("json") {
                serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
            } else {
                RpcStatus::decode(&answer.body[..]).ok().map(|s| s.message)
            };
            prop_assert!(
                message.as_deref().is_some_and(|m| !m.is_empty()),
                "a 4xx says why: {:?}",
                answer.body
            );
        }
        Ok(answer.status)
    }

    /// Searches with `q`; the answer must be 200 or a 400 with a JSON error.
    fn search(&self, q: &str) -> Result<(u16, String), TestCaseError> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/search", self.collector.api_addr()),
            &[("q", q), ("limit", "5")],
        )
        .unwrap();
        let answer = self.send(self.http.get(url), "GET /api/search")?;
        let json: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
            TestCaseError::fail(format!(
                "search answered {} without JSON: {e}",
                answer.status
            ))
        })?;
        match answer.status {
            200 => {
                prop_assert!(json["traces"].is_array(), "{json}");
                Ok((200, String::new()))
            }
            400 => {
                let message = json["error"]["message"].as_str().unwrap_or_default();
                prop_assert!(!message.is_empty(), "a 400 says why: {json}");
                Ok((400, message.to_owned()))
            }
            other => Err(TestCaseError::fail(format!(
                "search answered {other}: {json}"
            ))),
        }
    }

    /// After the run the collector still works: ready, and a real export
    /// becomes a trace one can read.
    fn assert_still_serves(&self) {
        let id = trace_id();
        let body = request("svc", vec![S::new(id, 1, "after the fuzzing")]).encode_to_vec();
        let status = self
            .export("application/x-protobuf", false, body)
            .expect("a valid export is answered");
        assert_eq!(status, 200);
        let url = format!(
            "http://{}/api/traces/{}",
            self.collector.api_addr(),
            hex::encode(id)
        );
        let answer = self.send(self.http.get(url), "GET trace").unwrap();
        assert_eq!(answer.status, 200, "the trace is readable");
    }
}

/// `google.rpc.Status`, what OTLP/HTTP answers a refused protobuf body with.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A real export request's protobuf bytes, to mutate.
fn seed_protobuf() -> Vec<u8> {
    let id = [7u8; 16];
    request(
        "fuzz",
        vec![
            S::new(id, 1, "root").attr(kv_str("http.route", "/x")),
            S::new(id, 2, "child").parent(1).error("boom"),
        ],
    )
    .encode_to_vec()
}

/// The same request as OTLP/JSON.
fn seed_json() -> Vec<u8> {
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "07070707070707070707070707070707",
            "spanId": "0707070707070701",
            "name": "root",
            "kind": 2,
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000100000000",
            "attributes": [{"key": "n", "value": {"intValue": "3"}}],
            "status": {"code": 2, "message": "boom"}
        }]}]
    }]})
    .to_string()
    .into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `seed` with a few bytes overwritten, inserted or removed, or cut short.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..3, any::<prop::sample::Index>(), any::<u8>());
    (
        proptest::collection::vec(edit, 0..8),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(edits, cut, do_cut)| {
            let mut bytes = seed.clone();
            for (kind, at, b) in edits {
                let i = at.index(bytes.len().max(1));
                match kind {
                    0 if !bytes.is_empty() => bytes[i] = b,
                    1 => bytes.insert(i.min(bytes.len()), b),
                    _ if !bytes.is_empty() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            if do_cut {
                let keep = cut.index(bytes.len() + 1);
                bytes.truncate(keep);
            }
            bytes
        })
}

/// Appends `field` (length-delimited) holding `payload` to `out`.
fn field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// An export whose one resource attribute is an `AnyValue` nested `depth`
/// arrays deep, encoded by hand (prost's own encoder would recurse).
fn nested_value_request(depth: usize) -> Vec<u8> {
    // Built back to front so each level only prepends a tag and a length.
    let mut reversed: Vec<u8> = b"x".iter().rev().copied().collect();
    let wrap = |number: u32, reversed: &mut Vec<u8>| {
        let mut head = Vec::new();
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut head,
        );
        prost::encoding::encode_varint(reversed.len() as u64, &mut head);
        reversed.extend(head.iter().rev());
    };
    wrap(1, &mut reversed); // AnyValue.string_value
    for _ in 0..depth {
        wrap(1, &mut reversed); // ArrayValue.values
        wrap(5, &mut reversed); // AnyValue.array_value
    }
    reversed.reverse();
    let mut key_value = Vec::new();
    field(&mut key_value, 1, b"deep");
    field(&mut key_value, 2, &reversed);
    let mut resource = Vec::new();
    field(&mut resource, 1, &key_value);
    let mut resource_spans = Vec::new();
    field(&mut resource_spans, 1, &resource);
    let mut body = Vec::new();
    field(&mut body, 1, &resource_spans);
    body
}

/// The same nesting as OTLP/JSON.
fn nested_value_json(depth: usize) -> Vec<u8> {
    let open = r#"{"arrayValue":{"values":["#.repeat(depth);
    let close = "]}}".repeat(depth);
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"deep","value":{open}{{"stringValue":"x"}}{close}}}]}}}}]}}"#
    )
    .into_bytes()
}

#[test]
fn otlp_http_answers_any_body_without_panicking() {
    let harness = Harness::start();
    let outcomes = Mutex::new(std::collections::BTreeSet::new());
    let bodies = prop_oneof![
        2 => (Just("application/x-protobuf"), proptest::collection::vec(any::<u8>(), 0..512)),
        4 => (Just("application/x-protobuf"), mutated(seed_protobuf())),
        2 => (Just("application/json"), proptest::collection::vec(any::<u8>(), 0..256)),
        4 => (Just("application/json"), mutated(seed_json())),
        1 => (Just("application/json"), any::<String>().prop_map(String::into_bytes)),
    ];
    let cases = (bodies, any::<bool>(), any::<bool>());
    TestRunner::new(config(400))
        .run(&cases, |((content_type, body), zip, garble_zip)| {
            let body = match (zip, garble_zip) {
                (false, _) => body,
                (true, false) => gzip(&body),
                // Not gzip at all, or gzip cut short.
                (true, true) => {
                    let mut z = gzip(&body);
                    z.truncate(z.len() / 2);
                    z
                }
            };
            let status = harness.export(content_type, zip, body)?;
            outcomes.lock().unwrap().insert(status);
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    assert!(
        outcomes.contains(&200) && outcomes.contains(&400),
        "the bodies reach both acceptance and refusal: {outcomes:?}"
    );
    harness.assert_still_serves();
}

#[test]
fn deeply_nested_otlp_values_are_answered_not_overflowed() {
    let harness = Harness::start();
    let mut runner = TestRunner::new(config(48));
    let depths = prop_oneof![1usize..100, 100usize..20_000];
    runner
        .run(&(depths, any::<bool>()), |(depth, json)| {
            let status = if json {
                harness.export("application/json", false, nested_value_json(depth))?
            } else {
                harness.export("application/x-protobuf", false, nested_value_request(depth))?
            };
            if depth <= 10 {
                prop_assert_eq!(status, 200, "a shallow value is fine (depth {})", depth);
            }
            Ok(())
        })
        .unwrap();
    harness.assert_still_serves();
}

/// TraceQL-ish tokens, for inputs that get past the first character.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{"),
        Just("}"),
        Just("("),
        Just(")"),
        Just("&&"),
        Just("||"),
        Just("!"),
        Just("="),
        Just("!="),
        Just("=~"),
        Just("!~"),
        Just(">"),
        Just(">="),
        Just("<"),
        Just("<="),
        Just("|"),
        Just("."),
        Just("span.http.route"),
        Just("resource.service.name"),
        Just(".x"),
        Just("name"),
        Just("status"),
        Just("duration"),
        Just("kind"),
        Just("traceDuration"),
        Just("rootServiceName"),
        Just("error"),
        Just("server"),
        Just("nil"),
        Just("true"),
        Just("\"s\""),
        Just("\""),
        Just("\"a\\\"b\""),
        Just("500ms"),
        Just("1m30s"),
        Just("-1"),
        Just("1e400"),
        Just("9999999999999999999999"),
        Just("0.5"),
        Just("count()"),
        Just(">>"),
        Just("~"),
        Just("\\"),
        Just("\t"),
        Just("\n"),
    ]
    .prop_map(str::to_owned)
}

#[test]
fn traceql_answers_any_query_without_panicking() {
    let harness = Harness::start();
    let outcomes = Mutex::new(std::collections::BTreeSet::new());
    let queries = prop_oneof![
        1 => any::<String>(),
        3 => proptest::collection::vec((token(), prop_oneof![Just(""), Just(" ")]), 0..40)
            .prop_map(|t| t.into_iter().map(|(a, b)| a + b).collect::<String>()),
        1 => (1usize..2000).prop_map(|n| format!("{{ {} }}", vec![".a = 1"; n].join(" && "))),
    ];
    TestRunner::new(config(400))
        .run(&queries, |q| {
            let (status, _) = harness.search(&q)?;
            outcomes.lock().unwrap().insert(status);
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(
        outcomes.len(),
        2,
        "the queries reach both 200 and 400: {outcomes:?}"
    );
    harness.assert_still_serves();
}

/// `outer` parentheses around a spanset filter holding `inner` parentheses
/// around a condition: legal TraceQL `outer + 1 + inner` levels deep, closed
/// or cut off before the closing.
fn nested_query(outer: usize, inner: usize, closed: bool) -> String {
    let mut q = format!("{}{{ {}.a = 1", "(".repeat(outer), "(".repeat(inner));
    if closed {
        q.push_str(&format!("{} }}{}", ")".repeat(inner), ")".repeat(outer)));
    }
    q
}

#[test]
fn traceql_nesting_past_the_limit_is_a_400_that_names_it() {
    let harness = Harness::start();
    let levels = prop_oneof![0usize..NESTING_LIMIT, NESTING_LIMIT..10_000];
    let cases = (levels, any::<prop::sample::Index>(), any::<bool>());
    TestRunner::new(config(64))
        .run(&cases, |(levels, split, closed)| {
            let outer = split.index(levels + 1);
            let depth = levels + 1;
            let (status, message) = harness.search(&nested_query(outer, levels - outer, closed))?;
            if depth > NESTING_LIMIT {
                prop_assert_eq!(status, 400, "depth {}", depth);
                prop_assert!(
                    message.contains(&format!("the limit is {NESTING_LIMIT}")),
                    "the error names the limit: {}",
                    message
                );
            } else {
                prop_assert_eq!(
                    status,
                    if closed { 200 } else { 400 },
                    "depth {}: {}",
                    depth,
                    message
                );
            }
            Ok(())
        })
        .unwrap();
    // Issue 12's request: 1,500 parentheses inside a spanset filter.
    let q = format!("{{ {}.a = 1{} }}", "(".repeat(1500), ")".repeat(1500));
    let (status, message) = harness.search(&q).unwrap();
    assert_eq!(status, 400, "{message}");
    harness.assert_still_serves();
}
