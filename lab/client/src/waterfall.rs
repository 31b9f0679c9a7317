//! Terminal waterfall view of a trace, like the lesson's diagram:
//!
//! ```text
//! gateway  POST /api/checkout      srv │████████████████████████████│ 412.3ms
//! ├─ auth  POST /verify            srv │ ███                        │  41.0ms
//! └─ payment  POST /payments      ✗srv │     ███████████████        │ 230.0ms
//!    ✗ card declined
//!                                      └┴──────┴──────┴──────┴──────┘
//!                                       0ms    100ms  200ms  300ms
//! ```
//!
//! [`render_waterfall`] is a pure function of the trace, the width and the
//! color switch, so it is unit-tested on synthetic traces.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::trace::{Span, SpanKind, Trace};

/// Narrowest output we lay out for; narrower requests are widened to this.
pub const MIN_WIDTH: usize = 50;

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD_RED: &str = "\x1b[1;31m";
const RED: &str = "\x1b[31m";
/// Service colors; red is kept for errors.
const PALETTE: [&str; 6] = [
    "\x1b[36m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[96m",
];

/// Width of the kind column (`srv`, `cli`, `prod`, `cons`, `int`).
const KIND_W: usize = 4;
/// Width of the duration column (`12345.6ms`).
const DUR_W: usize = 9;
/// Marks an orphan: its parent is not in the trace.
const ORPHAN: &str = "┄ ";

/// Compact span-kind label used in the waterfall.
pub fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "srv",
        SpanKind::Client => "cli",
        SpanKind::Producer => "prod",
        SpanKind::Consumer => "cons",
        SpanKind::Internal => "int",
        SpanKind::Unspecified => "",
    }
}

/// Formats a duration given in nanoseconds as milliseconds (`412.3ms`, `0.25ms`).
pub fn format_ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 0.1 || ns == 0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// A row of the waterfall: the tree prefix, whether it is an orphan root, and the span.
struct Row<'a> {
    prefix: String,
    /// Prefix for lines under this row (the error message line).
    cont: String,
    orphan: bool,
    span: &'a Span,
}

/// Orders spans into display rows: roots (and orphans, as extra roots) by
/// start time, each followed depth-first by its children by start time.
fn rows(trace: &Trace) -> Vec<Row<'_>> {
    let ids: HashSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    // `trace.spans` is sorted by start time already, so filtering keeps the order.
    let tops: Vec<(&Span, bool)> = trace
        .spans
        .iter()
        .filter_map(|s| match s.parent_span_id.as_deref() {
            None => Some((s, false)),
            Some(p) if !ids.contains(p) => Some((s, true)),
            Some(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (span, orphan) in tops {
        walk(
            trace,
            span,
            orphan,
            String::new(),
            String::new(),
            &mut seen,
            &mut out,
        );
    }
    // Spans caught in a parent cycle are reachable from no root: show them anyway.
    for span in &trace.spans {
        if !seen.contains(span.span_id.as_str()) {
            walk(
                trace,
                span,
                true,
                String::new(),
                String::new(),
                &mut seen,
                &mut out,
            );
        }
    }
    out
}

fn walk<'a>(
    trace: &'a Trace,
    span: &'a Span,
    orphan: bool,
    prefix: String,
    cont: String,
    seen: &mut HashSet<&'a str>,
    out: &mut Vec<Row<'a>>,
) {
    if !seen.insert(span.span_id.as_str()) {
        return;
    }
    out.push(Row {
        prefix,
        cont: cont.clone(),
        orphan,
        span,
    });
    let kids: Vec<&Span> = trace
        .children(&span.span_id)
        .into_iter()
        .filter(|k| !seen.contains(k.span_id.as_str()))
        .collect();
    let n = kids.len();
    for (i, kid) in kids.into_iter().enumerate() {
        let last = i + 1 == n;
        let p = format!("{cont}{}", if last { "└─ " } else { "├─ " });
        let c = format!("{cont}{}", if last { "   " } else { "│  " });
        walk(trace, kid, false, p, c, seen, out);
    }
}

fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// Cuts `s` to at most `max` columns, ending with `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if width_of(s) <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

fn paint(s: &str, code: &str, color: bool) -> String {
    if color && !s.is_empty() {
        format!("{code}{s}{RESET}")
    } else {
        s.to_string()
    }
}

fn service_color(service: &str) -> &'static str {
    // FNV-1a: stable across runs, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in service.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    PALETTE[h as usize % PALETTE.len()]
}

/// Picks a "nice" tick step (1, 2 or 5 × 10^k ns) giving at most `max_ticks` intervals.
fn tick_step(total_ns: u64, max_ticks: usize) -> u64 {
    let max_ticks = max_ticks.max(1) as u64;
    let mut magnitude: u64 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = m * magnitude;
            if total_ns / step <= max_ticks {
                return step;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn format_tick(ns: u64, step: u64) -> String {
    let ms = ns as f64 / 1e6;
    if step >= 1_000_000 {
        format!("{ms:.0}ms")
    } else if step >= 100_000 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// Maps an offset (ns from trace start) to a cell in a bar `cells` wide.
fn cell(offset_ns: u64, total_ns: u64, cells: usize) -> usize {
    ((offset_ns as u128 * cells as u128) / total_ns as u128) as usize
}

/// Renders a trace as a waterfall `width` columns wide (narrower than
/// [`MIN_WIDTH`] is widened), with ANSI colors when `color` is set.
///
/// Lines: a header (trace id, duration, start time), one row per span
/// (`tree glyphs + service + name`, an error mark `✗`, the compact kind, a bar
/// on a time axis shared by all spans, the duration), a `✗ message` line under
/// each error span that has a status message, the axis with ticks from `0ms`,
/// and a summary (spans, services, errors, orphans). Orphans (spans whose
/// parent is not in the trace) are shown as extra roots marked `┄`.
pub fn render_waterfall(trace: &Trace, width: usize, color: bool) -> String {
    let width = width.max(MIN_WIDTH);
    let mut out = String::new();
    let Some(trace_id) = trace.trace_id() else {
        out.push_str("(trace has no spans)\n");
        return out;
    };
    let t0 = trace.start_ns();
    let total = trace.duration_ns().max(1);
    let started = chrono::DateTime::from_timestamp_nanos(t0 as i64);
    let _ = writeln!(
        out,
        "{} {}  {}  {}",
        paint("Trace", DIM, color),
        trace_id,
        format_ms(trace.duration_ns()),
        paint(
            &started.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            DIM,
            color
        ),
    );

    let rows = rows(trace);
    // Label = orphan mark + tree prefix + "service  name".
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let mark = if r.orphan { ORPHAN } else { "" };
            format!("{mark}{}{}  {}", r.prefix, r.span.service, r.span.name)
        })
        .collect();
    // Fixed columns: " " + mark(1) + kind(4) + " " + "│" + bar + "│" + " " + duration.
    let fixed = 1 + 1 + KIND_W + 1 + 2 + 1 + DUR_W;
    let longest = labels.iter().map(|l| width_of(l)).max().unwrap_or(0);
    // Labels get up to 45% of the line, bars at least 35% (and 10 cells).
    let min_bar = (width * 35 / 100).max(10);
    let label_w = longest.min(width * 45 / 100).min(width - fixed - min_bar);
    let bar_w = width - fixed - label_w;

    for (row, label) in rows.iter().zip(&labels) {
        let span = row.span;
        let err = span.is_error();
        let svc_color = service_color(&span.service);

        // Label, colored piecewise: glyphs dim, service in its color, name plain.
        let label_fit = fit(label, label_w);
        let pad = label_w - width_of(&label_fit);
        let mark = if row.orphan { ORPHAN } else { "" };
        let head = format!("{mark}{}", row.prefix);
        let painted_label = if color && label_fit == *label {
            format!(
                "{}{}  {}",
                paint(&head, DIM, true),
                paint(&span.service, svc_color, true),
                if err {
                    paint(&span.name, RED, true)
                } else {
                    span.name.clone()
                }
            )
        } else {
            label_fit
        };

        let start = cell(span.start_ns.saturating_sub(t0), total, bar_w).min(bar_w - 1);
        let end_off = span.end_ns.saturating_sub(t0).min(total);
        // Round the end up so a short span still gets one cell.
        let end = ((end_off as u128 * bar_w as u128).div_ceil(total as u128)) as usize;
        let end = end.clamp(start + 1, bar_w);
        let bar = "█".repeat(end - start);
        let bar_painted = paint(&bar, if err { BOLD_RED } else { svc_color }, color);

        let _ = writeln!(
            out,
            "{painted_label}{} {}{:<KIND_W$} {}{}{bar_painted}{}{} {:>DUR_W$}",
            " ".repeat(pad),
            if err {
                paint("✗", BOLD_RED, color)
            } else {
                " ".to_string()
            },
            kind_label(span.kind),
            paint("│", DIM, color),
            " ".repeat(start),
            " ".repeat(bar_w - end),
            paint("│", DIM, color),
            format_ms(span.duration_ns()),
        );
        if err && !span.status_message.is_empty() {
            let indent = format!("{}{}", if row.orphan { "  " } else { "" }, row.cont);
            let cont = if trace.children(&span.span_id).is_empty() {
                indent
            } else {
                format!("{indent}│  ")
            };
            let msg = fit(
                &format!("✗ {}", span.status_message.replace('\n', " ")),
                width.saturating_sub(width_of(&cont) + 3),
            );
            let _ = writeln!(
                out,
                "{}   {}",
                paint(&cont, DIM, color),
                paint(&msg, RED, color)
            );
        }
    }

    // Axis: └┴──┴──┘ under the bars, tick labels below.
    let axis_col = label_w + 1 + 1 + KIND_W + 1; // column of the left "│"
    let step = tick_step(total, (bar_w / 8).max(2));
    let mut ticks = Vec::new();
    let mut t = 0;
    while t <= total {
        ticks.push((t, cell(t, total, bar_w)));
        t += step;
    }
    let mut line: Vec<char> = vec!['─'; bar_w];
    for &(_, c) in &ticks {
        if c < bar_w {
            line[c] = '┴';
        }
    }
    let axis: String = line.into_iter().collect();
    let _ = writeln!(
        out,
        "{}{}",
        " ".repeat(axis_col),
        paint(&format!("└{axis}┘"), DIM, color)
    );
    let mut labels_line = String::new();
    let mut used = 0; // columns written so far, relative to the first bar cell
    for &(t, c) in &ticks {
        let text = format_tick(t, step);
        let w = width_of(&text);
        // A label that would stick out past the right border ends at it instead.
        let pos = c.min((bar_w + 2).saturating_sub(w));
        if pos < used {
            continue;
        }
        labels_line.push_str(&" ".repeat(pos - used));
        labels_line.push_str(&text);
        used = pos + w + 1;
        labels_line.push(' ');
    }
    let _ = writeln!(
        out,
        "{}{}",
        " ".repeat(axis_col + 1),
        paint(labels_line.trim_end(), DIM, color)
    );

    // Summary.
    let services = trace.services();
    let errors = trace.errors().len();
    let orphans = rows.iter().filter(|r| r.orphan).count();
    let mut summary = format!(
        "{} span{} · {} service{} ({}) · ",
        trace.len(),
        if trace.len() == 1 { "" } else { "s" },
        services.len(),
        if services.len() == 1 { "" } else { "s" },
        services.into_iter().collect::<Vec<_>>().join(", "),
    );
    let err_text = format!("{errors} error{}", if errors == 1 { "" } else { "s" });
    summary.push_str(&if errors > 0 {
        paint(&format!("✗ {err_text}"), BOLD_RED, color)
    } else {
        err_text
    });
    if orphans > 0 {
        let _ = write!(
            summary,
            " · {ORPHAN}{orphans} orphan{} (parent not in trace)",
            if orphans == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "{summary}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::StatusCode;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    fn span(id: &str, parent: Option<&str>, svc: &str, name: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: format!("{id:0>16}"),
            parent_span_id: parent.map(|p| format!("{p:0>16}")),
            name: name.into(),
            service: svc.into(),
            kind: SpanKind::Server,
            start_ns: T0 + start * MS,
            end_ns: T0 + end * MS,
            ..Default::default()
        }
    }

    /// The lesson's diagram, spans given out of order on purpose.
    fn lesson_trace() -> Trace {
        let mut db = span("d", Some("c"), "payment", "SELECT orders", 120, 160);
        db.kind = SpanKind::Client;
        db.status_code = StatusCode::Error;
        db.status_message = "deadlock detected".into();
        let mut notif = span(
            "f",
            Some("a"),
            "notification",
            "process payment.completed",
            330,
            390,
        );
        notif.kind = SpanKind::Consumer;
        Trace::new(vec![
            notif,
            span(
                "e",
                Some("c"),
                "payment",
                "callExternalPaymentAPI",
                170,
                290,
            ),
            db,
            span("c", Some("a"), "payment", "POST /payments", 100, 300),
            span("b", Some("a"), "auth", "POST /verify", 10, 60),
            span("a", None, "gateway", "POST /api/checkout", 0, 400),
        ])
    }

    fn bar_cells(line: &str) -> (usize, usize) {
        // Inside the first "│ ... │" pair: offset of the first and last+1 block.
        let inner: Vec<char> = line
            .split('│')
            .nth(1)
            .expect("bar borders")
            .chars()
            .collect();
        let first = inner.iter().position(|&c| c == '█').expect("a bar");
        let last = inner.iter().rposition(|&c| c == '█').unwrap() + 1;
        (first, last)
    }

    #[test]
    fn orders_rows_as_a_tree_by_start_time() {
        let out = render_waterfall(&lesson_trace(), 100, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("Trace 4bf92f3577b34da6a3ce929d0e0e4736  400.0ms"));
        assert!(
            lines[1].starts_with("gateway  POST /api/checkout "),
            "{out}"
        );
        assert!(lines[2].starts_with("├─ auth  POST /verify "), "{out}");
        assert!(lines[3].starts_with("├─ payment  POST /payments "), "{out}");
        assert!(
            lines[4].starts_with("│  ├─ payment  SELECT orders "),
            "{out}"
        );
        assert!(
            lines[5].starts_with("│  │     ✗ deadlock detected"),
            "{out}"
        );
        assert!(
            lines[6].starts_with("│  └─ payment  callExternalPaymentAPI "),
            "{out}"
        );
        assert!(
            lines[7].starts_with("└─ notification  process payment.completed "),
            "{out}"
        );
        // Every span line is exactly the requested width.
        for l in &lines[1..8] {
            if !l.contains("deadlock") {
                assert_eq!(width_of(l), 100, "{l:?}");
            }
        }
    }

    #[test]
    fn bars_share_one_time_axis() {
        let out = render_waterfall(&lesson_trace(), 100, false);
        let lines: Vec<&str> = out.lines().collect();
        let bar_w = lines[1].split('│').nth(1).unwrap().chars().count();
        // The root covers the whole axis.
        assert_eq!(bar_cells(lines[1]), (0, bar_w));
        // auth: 10..60 of 400.
        let (s, e) = bar_cells(lines[2]);
        assert_eq!(s, bar_w * 10 / 400);
        assert_eq!(e, (bar_w * 60).div_ceil(400));
        // payment: 100..300 of 400, i.e. the middle half.
        let (s, e) = bar_cells(lines[3]);
        assert_eq!((s, e), (bar_w / 4, (bar_w * 3).div_ceil(4)));
        // notification starts after payment ends.
        assert!(bar_cells(lines[7]).0 >= e);
        // Durations right-aligned at the end.
        assert!(lines[2].ends_with("   50.0ms"), "{}", lines[2]);
        assert!(lines[1].ends_with("  400.0ms"), "{}", lines[1]);
    }

    #[test]
    fn marks_errors_kinds_and_summarizes() {
        let out = render_waterfall(&lesson_trace(), 100, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[4].contains("✗cli "), "{}", lines[4]);
        assert!(!lines[3].contains('✗'));
        assert!(lines[3].contains(" srv "));
        assert!(lines[7].contains(" cons "));
        let summary = lines.last().unwrap();
        assert_eq!(
            *summary,
            "6 spans · 4 services (auth, gateway, notification, payment) · ✗ 1 error"
        );
        assert!(!out.contains('\x1b'), "no color codes when color is off");
    }

    #[test]
    fn axis_has_ticks_from_zero() {
        let out = render_waterfall(&lesson_trace(), 100, false);
        let lines: Vec<&str> = out.lines().collect();
        let axis = lines[lines.len() - 3];
        let ticks = lines[lines.len() - 2];
        assert!(axis.trim_start().starts_with("└┴"), "{axis}");
        assert!(axis.ends_with('┘'));
        assert!(ticks.trim_start().starts_with("0ms"), "{ticks}");
        assert!(
            ticks.contains("100ms") && ticks.contains("300ms"),
            "{ticks}"
        );
        // The 0ms label sits under the first bar cell.
        let col = |s: &str, pat: &str| s[..s.find(pat).unwrap()].chars().count();
        assert_eq!(col(ticks, "0ms"), col(lines[1], "█"));
    }

    #[test]
    fn orphans_are_extra_marked_roots() {
        let mut t = lesson_trace();
        t.spans.retain(|s| s.name != "POST /payments");
        let out = render_waterfall(&t, 100, false);
        let orphan_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("┄ ")).collect();
        assert_eq!(orphan_lines.len(), 2, "{out}");
        assert!(orphan_lines[0].starts_with("┄ payment  SELECT orders"));
        assert!(out.lines().last().unwrap().contains("2 orphans"));
    }

    #[test]
    fn narrow_width_truncates_labels_and_color_adds_codes() {
        let out = render_waterfall(&lesson_trace(), 10, false);
        for l in out.lines().skip(1).take(3) {
            assert_eq!(width_of(l), MIN_WIDTH, "{l:?}");
        }
        assert!(out.contains('…'));
        let colored = render_waterfall(&lesson_trace(), 100, true);
        assert!(colored.contains(BOLD_RED));
        assert!(colored.contains(RESET));
    }

    #[test]
    fn degenerate_traces_render() {
        assert_eq!(
            render_waterfall(&Trace::default(), 80, false),
            "(trace has no spans)\n"
        );
        // Zero-duration span and a parent cycle must not panic or loop.
        let mut a = span("a", Some("b"), "x", "a", 0, 0);
        a.kind = SpanKind::Unspecified;
        let b = span("b", Some("a"), "x", "b", 0, 0);
        let out = render_waterfall(&Trace::new(vec![a, b]), 80, false);
        assert!(out.contains("x  a") && out.contains("x  b"), "{out}");
    }

    #[test]
    fn tick_steps_are_nice() {
        assert_eq!(tick_step(400 * MS, 5), 100 * MS);
        assert_eq!(tick_step(412 * MS, 6), 100 * MS);
        assert_eq!(tick_step(412 * MS, 10), 50 * MS);
        assert_eq!(tick_step(3 * MS, 5), MS);
        assert_eq!(format_ms(412_300_000), "412.3ms");
        assert_eq!(format_ms(25_000), "0.03ms");
    }
}
