//! One scenario file: its shape, its rules, and starting or stopping its
//! faults on a running lab.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracelab_contract::fault::{ActiveFault, FaultSpec};

use super::answer::Answer;
use super::signature::{Check, parse_checks};
use super::text::Text;
use super::traffic::Traffic;
use crate::fault::{FaultClient, canonical_service, check_point_and_kind, spec_from_value};

/// What kind of exercise a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// One fault in one service.
    Single,
    /// One of the lesson's four tracing pitfalls.
    Pitfall,
    /// Several faults: a red herring, a cascade, a retry storm...
    Compound,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Single => "single",
            Category::Pitfall => "pitfall",
            Category::Compound => "compound",
        })
    }
}

/// The lesson's pitfalls ("トレーシングの落とし穴と対策").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pitfall {
    /// 高カーディナリティ属性
    HighCardinality,
    /// サンプリング漏れ
    SamplingMiss,
    /// Context伝搬の断絶
    PropagationBreak,
    /// パフォーマンスオーバーヘッド
    Overhead,
}

/// A fault of a scenario: the service it is sent to and the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioFault {
    /// Service (binary name).
    pub service: &'static str,
    /// The spec sent to its admin API.
    pub spec: FaultSpec,
    /// Whether the file gave the fault a `for` of its own. Without one,
    /// the fault lasts as long as whoever starts the scenario says
    /// ([`Scenario::start`]): 15 minutes when started openly, an
    /// exercise's lifetime in an exercise; it always expires.
    pub own_lifetime: bool,
}

impl ScenarioFault {
    /// The spec as set when the scenario's faults last `lifetime` unless
    /// the file says otherwise.
    pub fn spec_for(&self, lifetime: Duration) -> FaultSpec {
        let mut spec = self.spec.clone();
        if !self.own_lifetime {
            spec.duration = Some(lifetime);
        }
        spec
    }
}

/// The file's shape, before the faults are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    id: String,
    category: Category,
    #[serde(default)]
    pitfall: Option<Pitfall>,
    #[serde(default = "default_difficulty")]
    difficulty: u8,
    title: Text,
    story: Text,
    faults: Vec<Value>,
    symptom: Text,
    hints: Vec<Text>,
    query: String,
    answer: Answer,
    explanation: Text,
    #[serde(default)]
    traffic: Traffic,
    signature: Vec<Value>,
    #[serde(default)]
    invariants: Vec<Value>,
}

fn default_difficulty() -> u8 {
    1
}

/// One scenario, validated.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Identifier, also the file name (`scenarios/<id>.yaml`).
    pub id: String,
    /// Single fault, pitfall or compound incident.
    pub category: Category,
    /// For pitfall scenarios, which one.
    pub pitfall: Option<Pitfall>,
    /// 1 (easy) to 3 (hard).
    pub difficulty: u8,
    /// Short title.
    pub title: Text,
    /// What happened, as the on-call engineer hears it.
    pub story: Text,
    /// The faults, in the order they are set.
    pub faults: Vec<ScenarioFault>,
    /// What the learner sees at the gateway.
    pub symptom: Text,
    /// Three hints, vaguest first.
    pub hints: Vec<Text>,
    /// The TraceQL query that reveals the cause in Tempo.
    pub query: String,
    /// The expected answer.
    pub answer: Answer,
    /// Why, once solved.
    pub explanation: Text,
    /// Traffic that makes it visible.
    pub traffic: Traffic,
    /// Trace signature: every check finds something while the scenario
    /// runs, none finds anything while it does not.
    pub signature: Vec<Check>,
    /// Checks that must hold whether the scenario runs or not (e.g. one
    /// charge per Idempotency-Key).
    pub invariants: Vec<Check>,
    /// The file it was read from.
    pub path: PathBuf,
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    ///
    /// # Errors
    /// When the YAML does not have the scenario shape (serde names the field
    /// and line), a fault is invalid (named by position and field), or a
    /// rule below is broken.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Scenario> {
        let raw: RawScenario = serde_yaml::from_str(text)?;
        let mut faults = Vec::new();
        for (i, value) in raw.faults.into_iter().enumerate() {
            let own_lifetime = value.get("for").is_some();
            let (service, spec) = spec_from_value(value).with_context(|| format!("faults[{i}]"))?;
            check_point_and_kind(&spec).with_context(|| format!("faults[{i}]"))?;
            faults.push(ScenarioFault {
                service,
                spec,
                own_lifetime,
            });
        }
        let signature = parse_checks(raw.signature).context("signature")?;
        let invariants = parse_checks(raw.invariants).context("invariants")?;
        let scenario = Scenario {
            id: raw.id,
            category: raw.category,
            pitfall: raw.pitfall,
            difficulty: raw.difficulty,
            title: raw.title.unfold(),
            story: raw.story.unfold(),
            faults,
            symptom: raw.symptom.unfold(),
            hints: raw.hints.into_iter().map(Text::unfold).collect(),
            query: raw.query.trim().to_string(),
            answer: raw.answer,
            explanation: raw.explanation.unfold(),
            traffic: raw.traffic,
            signature,
            invariants,
            path: path.to_path_buf(),
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads and validates one file.
    ///
    /// # Errors
    /// As [`Scenario::parse`], plus an unreadable file or an id that is
    /// not the file name.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let scenario =
            Scenario::parse(&text, path).with_context(|| format!("{}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem != scenario.id {
            bail!(
                "{}: id {:?} differs from the file name (expected {stem:?})",
                path.display(),
                scenario.id
            );
        }
        Ok(scenario)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            bail!("id {:?}: use lowercase letters, digits and '-'", self.id);
        }
        for (field, text) in [
            ("title", &self.title),
            ("story", &self.story),
            ("symptom", &self.symptom),
            ("explanation", &self.explanation),
        ] {
            check_text(field, text)?;
        }
        if self.hints.len() != 3 {
            bail!(
                "hints: expected 3 hints of rising detail, found {}",
                self.hints.len()
            );
        }
        for (i, h) in self.hints.iter().enumerate() {
            check_text(&format!("hints[{i}]"), h)?;
        }
        if self.faults.is_empty() {
            bail!("faults: at least one fault is needed");
        }
        let mut points = BTreeSet::new();
        for f in &self.faults {
            if !points.insert(f.spec.point.as_str()) {
                bail!(
                    "faults: point {} appears twice (a point holds one fault)",
                    f.spec.point
                );
            }
        }
        if !(1..=3).contains(&self.difficulty) {
            bail!("difficulty: 1 to 3");
        }
        match (self.category, self.pitfall) {
            (Category::Pitfall, None) => bail!("pitfall: a pitfall scenario names its pitfall"),
            (Category::Single | Category::Compound, Some(_)) => {
                bail!("pitfall: only for category pitfall")
            }
            _ => {}
        }
        if self.category == Category::Single && self.faults.len() != 1 {
            bail!("category single: exactly one fault");
        }
        if self.category == Category::Compound && self.faults.len() < 2 {
            bail!("category compound: at least two faults");
        }
        if !self.query.starts_with('{') {
            bail!("query: a TraceQL query like '{{ status = error }}'");
        }
        for key in self.answer.keys() {
            if canonical_service(&key.service).is_none() {
                bail!("answer: unknown service {:?}", key.service);
            }
        }
        if self.signature.is_empty() {
            bail!("signature: at least one check");
        }
        for (i, c) in self.signature.iter().chain(&self.invariants).enumerate() {
            c.validate()
                .with_context(|| format!("signature/invariants[{i}]"))?;
        }
        for (i, c) in self.invariants.iter().enumerate() {
            if !c.is_invariant() {
                bail!(
                    "invariants[{i}]: {} is a signature check, not an invariant",
                    c.kind()
                );
            }
        }
        for (i, c) in self.signature.iter().enumerate() {
            if c.is_invariant() {
                bail!("signature[{i}]: {} belongs under invariants", c.kind());
            }
        }
        let t = &self.traffic;
        if t.checkouts + t.searches + t.orders == 0 || t.concurrency == 0 {
            bail!("traffic: send at least one request, at least one at a time");
        }
        if t.orders > 0 && t.checkouts == 0 {
            bail!("traffic: orders looks up orders of the checkouts; add checkouts");
        }
        Ok(())
    }

    /// The services this scenario sets faults on.
    pub fn services(&self) -> BTreeSet<&'static str> {
        self.faults.iter().map(|f| f.service).collect()
    }

    /// Sets the faults (and the `fault.injected` span events' visibility on
    /// the services involved). On failure, clears what was set.
    ///
    /// A fault without its own `for` in the file expires after `lifetime`
    /// ([`tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME`] for a
    /// scenario started openly, as for a fault set by hand; an exercise
    /// passes its own bound), so a scenario someone forgot does not leave
    /// the lab broken: only a file's explicit `for: never` keeps a fault
    /// until it is cleared.
    ///
    /// # Errors
    /// When a service refuses a fault or is unreachable.
    pub async fn start(
        &self,
        client: &FaultClient,
        visible: bool,
        lifetime: Duration,
    ) -> anyhow::Result<Vec<ActiveFault>> {
        for service in self.services() {
            client.set_visible(service, visible).await?;
        }
        let mut set = Vec::new();
        for f in &self.faults {
            match client.set(f.service, &f.spec_for(lifetime)).await {
                Ok(active) => set.push(active),
                Err(e) => {
                    let _ = self.stop(client).await;
                    return Err(e.context(format!("starting scenario {}", self.id)));
                }
            }
        }
        Ok(set)
    }

    /// Clears the scenario's faults (each point it set).
    ///
    /// # Errors
    /// When a service is unreachable.
    pub async fn stop(&self, client: &FaultClient) -> anyhow::Result<()> {
        for f in &self.faults {
            client.clear_point(f.service, &f.spec.point).await?;
        }
        for service in self.services() {
            client.set_visible(service, false).await?;
        }
        Ok(())
    }
}

fn check_text(field: &str, text: &Text) -> anyhow::Result<()> {
    if text.en.trim().is_empty() || text.ja.trim().is_empty() {
        bail!("{field}: needs both en and ja");
    }
    if text.ja.is_ascii() {
        bail!("{field}.ja: no Japanese in it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME;

    const MINIMAL: &str = r#"
id: demo
category: single
title: {en: Demo, ja: デモ}
story: {en: A story., ja: 物語。}
faults:
  - {point: payment.save, kind: latency, ms: 800}
symptom: {en: Slow., ja: 遅い。}
hints:
  - {en: One., ja: 一つ目。}
  - {en: Two., ja: 二つ目。}
  - {en: Three., ja: 三つ目。}
query: '{ name = "savePaymentResult" }'
answer: {service: payment, operation: savePaymentResult}
explanation: {en: Because., ja: なぜなら。}
signature:
  - slow_span: {service: payment, name: savePaymentResult, min_ms: 700}
"#;

    fn parse(text: &str) -> anyhow::Result<Scenario> {
        Scenario::parse(text, Path::new("demo.yaml"))
    }

    #[test]
    fn parses_a_scenario_and_derives_services() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.faults[0].service, "payment");
        assert_eq!(s.traffic, Traffic::default());
        assert_eq!(s.services().into_iter().collect::<Vec<_>>(), ["payment"]);
    }

    #[test]
    fn scenario_faults_expire_unless_the_file_says_never() {
        let hour = Duration::from_secs(3600);
        let s = parse(MINIMAL).unwrap();
        assert!(!s.faults[0].own_lifetime);
        assert_eq!(
            s.faults[0].spec.duration,
            Some(DEFAULT_FAULT_LIFETIME),
            "without `for`: the default lifetime"
        );
        assert_eq!(s.faults[0].spec_for(hour).duration, Some(hour));
        let timed = parse(&MINIMAL.replace("ms: 800}", "ms: 800, for: 10m}")).unwrap();
        assert_eq!(
            timed.faults[0].spec_for(hour).duration,
            Some(Duration::from_secs(600)),
            "the file's own `for` wins"
        );
        let never = parse(&MINIMAL.replace("ms: 800}", "ms: 800, for: never}")).unwrap();
        assert!(never.faults[0].own_lifetime);
        assert_eq!(
            never.faults[0].spec_for(hour).duration,
            None,
            "for: never, on purpose"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = |from: &str, to: &str| {
            assert!(MINIMAL.contains(from), "{from}");
            format!("{:#}", parse(&MINIMAL.replace(from, to)).unwrap_err())
        };
        let e = err("ms: 800", "ms: 800000");
        assert!(e.contains("faults[0]") && e.contains("latency.ms"), "{e}");
        let e = err("ms: 800}", "ms: 800, colour: red}");
        assert!(e.contains("faults[0]") && e.contains("colour"), "{e}");
        let e = err("kind: latency, ms: 800", "kind: dead_letter");
        assert!(e.contains("no effect at payment.save"), "{e}");
        let e = err("point: payment.save", "service: auth, point: payment.save");
        assert!(e.contains("belongs to payment"), "{e}");
        let e = err("min_ms: 700", "min: 700");
        assert!(e.contains("signature") && e.contains("min"), "{e}");
        let e = err("  - {en: Three., ja: 三つ目。}\n", "");
        assert!(e.contains("3 hints"), "{e}");
        let e = err("ja: デモ", "ja: Demo");
        assert!(e.contains("title.ja"), "{e}");
        let e = err("service: payment, operation", "service: paymnt, operation");
        assert!(e.contains("paymnt"), "{e}");
        let e = err("category: single", "category: single\npitfall: overhead");
        assert!(e.contains("pitfall"), "{e}");
        let e = err("story:", "stroy:");
        assert!(e.contains("stroy"), "{e}");
    }
}
