use super::*;
use crate::model::{ResourceInfo, ScopeInfo, TraceData};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use std::sync::Arc;

fn kv(k: &str, v: Av) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn res(service: &str) -> Arc<ResourceInfo> {
    Arc::new(ResourceInfo::new(
        Resource {
            attributes: vec![kv("service.name", Av::StringValue(service.into()))],
            ..Default::default()
        },
        String::new(),
    ))
}

fn span(
    id: u8,
    parent: u8,
    name: &str,
    kind: SpanKind,
    dur_ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000 + u64::from(id),
        end_time_unix_nano: 1_000_000_000 + u64::from(id) + dur_ms * 1_000_000,
        attributes: attrs,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "card declined".into(),
        }),
        ..Default::default()
    }
}

fn trace(spans: Vec<(Arc<ResourceInfo>, Span)>) -> TraceData {
    let scope = Arc::new(ScopeInfo {
        scope: Default::default(),
        schema_url: String::new(),
        shared: false,
    });
    let mut data = TraceData::new();
    for (r, s) in spans {
        data.push(&r, &scope, s);
    }
    data
}

/// The spans (by name) of every spanset the query returns on the trace.
fn run(q: &str, data: &TraceData) -> Vec<Vec<String>> {
    let root = parse(q).unwrap_or_else(|e| panic!("{}: {e}", &q[..q.len().min(200)]));
    let id = [1u8; 16];
    let view = TraceView::new(&id, data);
    let ev = Eval { view: &view };
    ev.run(&root.pipeline)
        .into_iter()
        .map(|ss| {
            ss.spans
                .iter()
                .map(|&i| view.spans[i as usize].span.name().to_owned())
                .collect()
        })
        .collect()
}

fn one_span(attrs: Vec<KeyValue>) -> TraceData {
    trace(vec![(
        res("payment"),
        span(2, 0, "POST /payments", SpanKind::Server, 300, true, attrs),
    )])
}

#[test]
fn conditions_on_intrinsics_and_attributes() {
    let data = one_span(vec![
        kv("http.response.status_code", Av::IntValue(500)),
        kv("http.route", Av::StringValue("/payments".into())),
        kv("retry", Av::BoolValue(true)),
        kv("ratio", Av::DoubleValue(0.5)),
        kv("service.name", Av::StringValue("span-level".into())),
    ]);
    let yes = [
        "{}",
        "{ true }",
        "{ status = error }",
        "{ status != ok }",
        "{ kind = server }",
        "{ name = \"POST /payments\" }",
        "{ name =~ \"POST.*\" }",
        "{ name !~ \"GET.*\" }",
        "{ duration > 200ms }",
        "{ duration > 200000000 }", // a bare number counts nanoseconds
        "{ duration >= 300ms && duration <= 0.3s }",
        "{ span.http.response.status_code = 500 }",
        "{ span.http.response.status_code = 500.0 }",
        "{ span.http.response.status_code >= 499.5 }",
        "{ .http.response.status_code != 200 }",
        "{ resource.service.name = \"payment\" }",
        // Unscoped: the span's value comes first.
        "{ .service.name = \"span-level\" }",
        "{ span.retry = true }",
        "{ span.ratio < 1 }",
        "{ span.missing = nil }",
        "{ span.http.route != nil }",
        "{ rootServiceName = \"payment\" }",
        "{ trace:rootService = \"payment\" && trace:rootName = \"POST /payments\" }",
        "{ statusMessage =~ \"card.*\" }",
        "{ traceDuration < 1s }",
        "{ span:status = error && span:kind = server }",
        "{ status = ok || (kind = server && duration > 100ms) }",
        "{ span.http.response.status_code * 2 = 1000 }",
        "{ span.http.response.status_code - 400 > 50 + 40 }",
        "{ !(status = ok) }",
        "{ -span.http.response.status_code < 0 }",
        "{ span.http.response.status_code != minInt && span.http.response.status_code != maxInt }",
        "{ span:childCount = 0 }",
        "{ span:id = \"0202020202020202\" }",
        "{ trace:id = \"01010101010101010101010101010101\" }",
        "{ instrumentation:name = \"\" }",
        "{ status = error } && { kind = server }",
        "{ status = ok } || { kind = server }",
        "({ status = ok } || { kind = server }) && {}",
        "{ } | count() = 1",
        "{ } | avg(duration) = 300ms",
        "{ } | max(span.http.response.status_code) >= 500",
        "{ } | count() + 1 = 2",
        "({ } | count()) > 0",
        "{ } with (most_recent = true)",
        "{ } | select(span.http.route, resource.service.name)",
    ];
    for q in yes {
        assert!(!run(q, &data).is_empty(), "expected a match: {q}");
    }
    let no = [
        "{ status = ok }",
        "{ kind = client }",
        "{ name = \"POST\" }",
        "{ name =~ \"POST\" }", // anchored: a prefix is not a match
        "{ duration > 1s }",
        "{ span.http.response.status_code = \"500\" }", // typed, as in Tempo
        "{ span.missing != \"x\" }",
        "{ span.missing != nil }",
        "{ resource.http.route = \"/payments\" }",
        "{ span.service.name = \"payment\" }",
        "{ traceDuration > 1s }",
        "{ status = error } && { kind = client }",
        "{ false }",
        "{ } | count() > 1",
        "{ span.http.response.status_code / 0 = 1 }",
    ];
    for q in no {
        assert!(run(q, &data).is_empty(), "expected no match: {q}");
    }
}

#[test]
fn and_or_share_one_level_left_to_right() {
    let data = one_span(vec![]);
    // (true || true) && false: no match; with && binding tighter it would match.
    assert!(run("{ kind = server || status = error && false }", &data).is_empty());
    assert!(!run("{ false && false || true }", &data).is_empty());
}

/// gateway(1) ─┬─ auth(2)
///             └─ payment(3, error) ── db(4, error)
///                                  └─ provider(5)
fn tree() -> TraceData {
    let g = res("gateway");
    let p = res("payment");
    trace(vec![
        (
            g.clone(),
            span(1, 0, "checkout", SpanKind::Server, 100, false, vec![]),
        ),
        (
            res("auth"),
            span(2, 1, "verify", SpanKind::Server, 10, false, vec![]),
        ),
        (
            p.clone(),
            span(3, 1, "payments", SpanKind::Server, 80, true, vec![]),
        ),
        (
            p.clone(),
            span(4, 3, "insert", SpanKind::Client, 5, true, vec![]),
        ),
        (p, span(5, 3, "charge", SpanKind::Client, 50, false, vec![])),
    ])
}

#[test]
fn structural_operators() {
    let t = tree();
    let names = |q: &str| -> Vec<String> { run(q, &t).into_iter().flatten().collect() };
    assert_eq!(
        names("{ name = \"checkout\" } > { }"),
        ["verify", "payments"]
    );
    assert_eq!(names("{ name = \"insert\" } < { }"), ["payments"]);
    assert_eq!(
        names("{ name = \"checkout\" } >> { status = error }"),
        ["payments", "insert"]
    );
    assert_eq!(
        names("{ name = \"insert\" } << { }"),
        ["checkout", "payments"]
    );
    assert_eq!(names("{ name = \"insert\" } ~ { }"), ["charge"]);
    // The deepest error: an error span that is no error's ancestor.
    assert_eq!(
        names("{ status = error } !< { status = error }"),
        ["insert"]
    );
    assert_eq!(
        names("{ name = \"checkout\" } !> { }"),
        ["checkout", "insert", "charge"]
    );
    assert_eq!(names("{ kind = server } !>> { }"), ["checkout"]);
    assert_eq!(
        names("{ kind = client } !<< { }"),
        ["verify", "insert", "charge"]
    );
    assert_eq!(
        names("{ name = \"insert\" } !~ { }"),
        ["checkout", "verify", "payments", "insert"]
    );
    assert_eq!(
        names("{ name = \"payments\" } &> { }"),
        ["payments", "insert", "charge"]
    );
    assert_eq!(
        names("{ name = \"insert\" } &< { }"),
        ["payments", "insert"]
    );
    assert_eq!(
        names("{ name = \"checkout\" } &>> { status = error }"),
        ["checkout", "payments", "insert"]
    );
    assert_eq!(
        names("{ name = \"insert\" } &<< { kind = server }"),
        ["checkout", "payments", "insert"]
    );
    assert_eq!(names("{ name = \"insert\" } &~ { }"), ["insert", "charge"]);
    assert!(names("{ name = \"verify\" } > { }").is_empty());
    // Left to right: (checkout > payments) > { } → insert, charge.
    assert_eq!(
        names("{ name = \"checkout\" } > { name = \"payments\" } > { }"),
        ["insert", "charge"]
    );
    // Structural binds tighter than &&.
    assert_eq!(
        names("{ name = \"auth\" } || { name = \"payments\" } > { }"),
        ["insert", "charge"]
    );
}

#[test]
fn pipelines_group_and_aggregate() {
    let t = tree();
    let by = run("{ } | by(resource.service.name) | count() > 1", &t);
    assert_eq!(by, vec![vec!["payments", "insert", "charge"]]);
    let by = run("{ } | by(resource.service.name) | coalesce()", &t);
    assert_eq!(by.len(), 1);
    assert_eq!(by[0].len(), 5);
    assert_eq!(run("{ status = error } | count() > 1", &t).len(), 1);
    assert!(run("{ status = error } | count() > 2", &t).is_empty());
    assert_eq!(run("{ } | sum(duration) > 240ms", &t).len(), 1);
    assert_eq!(run("{ } | min(duration) = 5ms", &t).len(), 1);
    assert_eq!(run("{ } | avg(duration) = 49ms", &t).len(), 1);
    assert_eq!(
        run("{ } | { status = error }", &t),
        vec![vec!["payments", "insert"]]
    );
    assert_eq!(
        run("({ status = error } | count()) = 2", &t),
        vec![vec!["payments", "insert"]]
    );
    assert_eq!(
        run("({ kind = client } | count()) < ({ } | count())", &t).len(),
        1
    );
}

#[test]
fn event_and_link_conditions_hold_on_one_event() {
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    let mut s = span(1, 0, "a", SpanKind::Server, 10, true, vec![]);
    s.events = vec![
        Event {
            name: "exception".into(),
            time_unix_nano: s.start_time_unix_nano + 2_000_000,
            attributes: vec![kv("exception.type", Av::StringValue("Timeout".into()))],
            ..Default::default()
        },
        Event {
            name: "retry".into(),
            time_unix_nano: s.start_time_unix_nano + 5_000_000,
            attributes: vec![kv("exception.type", Av::StringValue("Other".into()))],
            ..Default::default()
        },
    ];
    s.links = vec![Link {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        ..Default::default()
    }];
    let data = trace(vec![(res("x"), s)]);
    for q in [
        "{ event:name = \"exception\" }",
        "{ event:name = \"exception\" && event.exception.type = \"Timeout\" }",
        "{ event:timeSinceStart > 4ms }",
        "{ link:traceID = \"07070707070707070707070707070707\" }",
        "{ link:spanID = \"0808080808080808\" }",
    ] {
        assert!(!run(q, &data).is_empty(), "{q}");
    }
    for q in [
        "{ event:name = \"exception\" && event.exception.type = \"Other\" }",
        "{ event:name = \"missing\" }",
        "{ link:spanID = \"01\" }",
    ] {
        assert!(run(q, &data).is_empty(), "{q}");
    }
}

#[test]
fn errors_name_the_position_and_the_problem() {
    let cases = [
        ("{ status = failed }", "failed"),
        ("{ status > error }", "status"),
        ("{ name = 1 }", "cannot compare"),
        ("{ name = foo }", "foo"),
        ("{ foo = \"x\" }", ".foo"),
        ("{ name =~ \"(\" }", "regular expression"),
        ("{ .x = \"a }", "unterminated"),
        ("{ span. = 1 }", "attribute name"),
        ("{ span:foo = 1 }", "unknown intrinsic"),
        ("{ } | count()", "comparison"),
        ("{ count() > 1 }", "after a `|`"),
        ("{ } | rate() | count() > 1", "after the end"),
        ("({ } | rate())", "metrics functions"),
        ("{ a.b = 1 }", "a.b"),
        ("{ status = error", "`}`"),
        ("", "empty"),
        ("{ } | quantile_over_time(duration)", "quantile"),
    ];
    for (q, word) in cases {
        let e = parse(q).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(word), "{q}: {e}");
        if !q.is_empty() {
            assert!(e.contains("character"), "{q}: {e}");
        }
    }
    let e = parse("{ name = \"x\" } | select(a, .b)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("at character 25"), "{e}");
}

/// `{ ` followed by `levels - 1` opening parentheses around `true`.
fn nested(levels: usize, closed: bool) -> String {
    let inner = levels - 1;
    let mut q = format!("{{ {}true", "(".repeat(inner));
    if closed {
        q.push_str(&")".repeat(inner));
        q.push_str(" }");
    }
    q
}

#[test]
fn nesting_is_bounded_with_a_message_naming_limit_and_position() {
    let data = one_span(vec![]);
    assert!(!run(&nested(MAX_DEPTH, true), &data).is_empty());
    let spansets = format!(
        "{}{{ true }}{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(!run(&spansets, &data).is_empty());

    let e = parse(&nested(MAX_DEPTH + 1, true)).unwrap_err().to_string();
    assert!(e.contains("nested too deeply") && e.contains("64"), "{e}");
    // `{` at 1, a space, then `(` number k opens level k + 1 at 2 + k.
    assert!(e.contains("character 66"), "{e}");
    let e = parse(&format!("{}{{}}", "(".repeat(MAX_DEPTH + 1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested too deeply"), "{e}");
    let e = parse(&nested(100_000, false)).unwrap_err().to_string();
    assert!(e.contains("nested too deeply"), "{e}");
    let e = parse(&"(".repeat(100_000)).unwrap_err().to_string();
    assert!(e.contains("nested too deeply"), "{e}");
}

#[test]
fn long_chains_stay_shallow_or_are_refused() {
    let data = one_span(vec![]);
    let conds = vec!["kind = server"; 100_000].join(" && ");
    assert!(!run(&format!("{{ {conds} || false }}"), &data).is_empty());
    let spansets = vec!["{ kind = server }"; 100_000].join(" && ");
    assert!(!run(&spansets, &data).is_empty());
    let spansets = vec!["{ kind = client }"; 100_000].join(" || ");
    assert!(run(&spansets, &data).is_empty());
    let structural = vec!["{ }"; 100_000].join(" >> ");
    assert!(run(&structural, &data).is_empty());
    // Operators that nest (arithmetic, alternating && / ||, `!`) are counted.
    for q in [
        format!("{{ 1{} = 1 }}", " + 1".repeat(100_000)),
        format!("{{ {}true }}", "!".repeat(100_000)),
        format!("{{ true{} }}", " && true || true".repeat(50_000)),
    ] {
        let e = parse(&q).unwrap_err().to_string();
        assert!(e.contains("too deep") && e.contains("256"), "{e}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
    assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
    assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
    assert_eq!(parse_go_duration("250us"), Some(250_000));
    assert_eq!(parse_go_duration("1d"), Some(86_400_000_000_000));
    assert_eq!(parse_go_duration("0"), Some(0));
    assert_eq!(parse_go_duration("5"), None);
    assert_eq!(parse_go_duration("5x"), None);
    assert_eq!(parse_go_duration("ms"), None);
}

#[test]
fn metrics_queries_parse_into_one_tree() {
    for q in [
        "{ } | rate()",
        "{ status = error } | rate() by (resource.service.name, span:name)",
        "{ } | count_over_time() by (name) != 0",
        "{ } | quantile_over_time(span:duration, .99, .9, .5) by (span.http.route)",
        "{ } | histogram_over_time(duration)",
        "{ } | avg_over_time(span:duration) > 1s",
        "{ } | rate() by (span.http.url) | topk(5) > 10",
        "{ } | count_over_time() by (name) | topk(10) >= 5 with(sample=0.1)",
        "{ } | compare({ status = error })",
        "{ } | compare({ status = error }, 5, 0, 0)",
        "{ } | max_over_time(span.size) | bottomk(2)",
    ] {
        let r = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(r.is_metrics(), "{q}");
    }
}
