//! A scenario as text for a person: everything, answer included.

use super::model::Scenario;
use super::text::Lang;

/// Everything about a scenario, answer included.
pub fn render_full(s: &Scenario, lang: Lang) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} — {}", s.id, s.title.get(lang));
    let _ = writeln!(
        out,
        "category: {}{}   difficulty: {}",
        s.category,
        s.pitfall
            .map(|p| format!(
                " ({})",
                serde_json::to_string(&p)
                    .unwrap_or_default()
                    .trim_matches('"')
            ))
            .unwrap_or_default(),
        s.difficulty
    );
    let _ = writeln!(out, "\nstory:\n  {}", s.story.get(lang).trim());
    let _ = writeln!(out, "\nsymptom:\n  {}", s.symptom.get(lang).trim());
    let _ = writeln!(out, "\nfaults:");
    for f in &s.faults {
        let _ = writeln!(
            out,
            "  {:<17} {} {} {}{}",
            f.service,
            f.spec.point,
            f.spec.kind.name(),
            crate::fault::params_text(&f.spec),
            if f.spec.probability < 1.0 {
                format!(" probability={}", f.spec.probability)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out, "\nhints:");
    for (i, h) in s.hints.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, h.get(lang).trim());
    }
    let _ = writeln!(out, "\nquery:\n  {}", s.query);
    let _ = writeln!(out, "\nanswer: {}", s.answer.display());
    for a in &s.answer.accept {
        let _ = writeln!(
            out,
            "  also accepted: {}{}",
            a.service,
            a.operation
                .as_deref()
                .map(|o| format!(" / {o}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nexplanation:\n  {}", s.explanation.get(lang).trim());
    let _ = writeln!(out, "\nsignature:");
    for c in &s.signature {
        let _ = writeln!(out, "  - {}", c.describe());
    }
    for c in &s.invariants {
        let _ = writeln!(out, "  - always: {}", c.describe());
    }
    out
}
