//! The scenario catalog: one YAML file per scenario in `scenarios/`, each a
//! bundle of faults with the learner's story, the symptom seen at the
//! gateway, three hints of rising detail, the TraceQL query that reveals the
//! cause, the expected answer (service + operation, plus accepted
//! alternatives), an explanation, the traffic that makes it visible and a
//! machine-checkable trace `signature` (see [`crate::signature`]).
//!
//! ```yaml
//! id: payment-save-slow
//! category: single            # single | pitfall | compound
//! title: {en: ..., ja: ...}
//! story: {en: ..., ja: ...}
//! faults:
//!   - {point: payment.save, kind: latency, ms: 800}   # service derived from the point
//! symptom: {en: ..., ja: ...}
//! hints: [{en: ..., ja: ...}, {en: ..., ja: ...}, {en: ..., ja: ...}]
//! query: '{ resource.service.name = "payment" && name = "savePaymentResult" && duration > 500ms }'
//! answer:
//!   service: payment
//!   operation: savePaymentResult
//!   accept: [{service: payment, operation: INSERT payments}]
//! explanation: {en: ..., ja: ...}
//! traffic: {checkouts: 6, searches: 2}
//! signature:
//!   - slow_span: {service: payment, name: savePaymentResult, min_ms: 600}
//! ```
//!
//! Faults are read with `tracelab-faults` ([`FaultSpec`]), so a wrong field
//! is named with the file and the fault's position; each fault's point must
//! exist and its kind must act there ([`crate::fault::check_point_and_kind`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracelab_contract::fault::{ActiveFault, FaultSpec};

use crate::fault::{
    FaultClient, LabArgs, canonical_service, check_point_and_kind, spec_from_value,
};
use crate::signature::{Check, parse_checks};

/// A text in both of the lab's languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// English.
    pub en: String,
    /// Japanese.
    pub ja: String,
}

/// Removes the spaces YAML's folded scalars (`>`) put where a Japanese line
/// was broken: a space between two non-ASCII characters. Spaces next to
/// Latin words (`payment の`) stay.
pub fn unfold_japanese(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' '
            && i > 0
            && !chars[i - 1].is_ascii()
            && chars.get(i + 1).is_some_and(|n| !n.is_ascii())
        {
            continue;
        }
        out.push(c);
    }
    out
}

impl Text {
    fn unfold(mut self) -> Text {
        self.ja = unfold_japanese(&self.ja);
        self
    }

    /// The text in `lang` (`ja`, else English).
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Ja => &self.ja,
            Lang::En => &self.en,
        }
    }
}

/// Output language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Japanese.
    Ja,
}

impl Lang {
    /// `ja` when `$LANG`/`$LC_ALL` starts with `ja`, else English.
    pub fn from_env() -> Lang {
        let lang = std::env::var("TRACELAB_LANG")
            .or_else(|_| std::env::var("LC_ALL"))
            .or_else(|_| std::env::var("LANG"))
            .unwrap_or_default();
        if lang.to_ascii_lowercase().starts_with("ja") {
            Lang::Ja
        } else {
            Lang::En
        }
    }
}

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

/// One accepted answer: a service, and an operation unless any will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerKey {
    /// Service (binary name; `provider` is accepted for payment-provider).
    pub service: String,
    /// Operation (span name); absent: the service alone is the answer.
    #[serde(default)]
    pub operation: Option<String>,
}

/// The expected answer of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Service where the cause is.
    pub service: String,
    /// Operation (span name) where the cause is; absent: the service alone.
    #[serde(default)]
    pub operation: Option<String>,
    /// Other answers graded as correct (another name of the same place).
    #[serde(default)]
    pub accept: Vec<AnswerKey>,
}

/// How an answer was graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// The expected answer or an accepted alternative.
    Correct,
    /// The right service; the operation is needed too.
    NeedsOperation,
    /// The right service, another operation.
    WrongOperation,
    /// Another service.
    Wrong,
}

/// Normalizes an operation for comparison: case, spaces, `_` and `-` do
/// not matter (`savePaymentResult` = `save_payment_result`), nor quotes.
pub fn normalize_operation(op: &str) -> String {
    op.trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Answer {
    /// Every accepted `(service, operation)`, the expected one first.
    pub fn keys(&self) -> Vec<AnswerKey> {
        let mut keys = vec![AnswerKey {
            service: self.service.clone(),
            operation: self.operation.clone(),
        }];
        keys.extend(self.accept.iter().cloned());
        keys
    }

    /// Grades `service [operation]`.
    pub fn grade(&self, service: &str, operation: Option<&str>) -> Grade {
        let Some(service) = canonical_service(service) else {
            return Grade::Wrong;
        };
        let operation = operation.map(normalize_operation).filter(|o| !o.is_empty());
        let mut service_matched = false;
        for key in self.keys() {
            if canonical_service(&key.service) != Some(service) {
                continue;
            }
            service_matched = true;
            match (&key.operation, &operation) {
                (None, _) => return Grade::Correct,
                (Some(want), Some(got)) if normalize_operation(want) == *got => {
                    return Grade::Correct;
                }
                _ => {}
            }
        }
        match (service_matched, operation) {
            (false, _) => Grade::Wrong,
            (true, None) => Grade::NeedsOperation,
            (true, Some(_)) => Grade::WrongOperation,
        }
    }

    /// `payment / savePaymentResult`.
    pub fn display(&self) -> String {
        match &self.operation {
            Some(op) => format!("{} / {op}", self.service),
            None => self.service.clone(),
        }
    }
}

/// The traffic that makes a scenario visible: how many of each request,
/// sent `concurrency` at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traffic {
    /// `POST /api/checkout` requests (each with its own Idempotency-Key).
    pub checkouts: u32,
    /// `GET /api/products?q=...` requests.
    pub searches: u32,
    /// `GET /api/orders/{id}` requests (for orders of earlier checkouts).
    pub orders: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Card number of the checkouts.
    pub card: String,
    /// How long to wait after the traffic before judging the traces (ms):
    /// spans are exported in batches and the queue hop is asynchronous.
    pub settle_ms: u64,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            checkouts: 6,
            searches: 4,
            orders: 0,
            concurrency: 3,
            card: "4242424242424242".into(),
            settle_ms: 1500,
        }
    }
}

/// A fault of a scenario: the service it is sent to and the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioFault {
    /// Service (binary name).
    pub service: &'static str,
    /// The spec sent to its admin API.
    pub spec: FaultSpec,
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
            let (service, spec) = spec_from_value(value).with_context(|| format!("faults[{i}]"))?;
            check_point_and_kind(&spec).with_context(|| format!("faults[{i}]"))?;
            faults.push(ScenarioFault { service, spec });
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
    /// # Errors
    /// When a service refuses a fault or is unreachable.
    pub async fn start(
        &self,
        client: &FaultClient,
        visible: bool,
    ) -> anyhow::Result<Vec<ActiveFault>> {
        for service in self.services() {
            client.set_visible(service, visible).await?;
        }
        let mut set = Vec::new();
        for f in &self.faults {
            match client.set(f.service, &f.spec).await {
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

/// Every scenario of a directory, sorted by id.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The scenarios, by id.
    pub scenarios: Vec<Scenario>,
    /// Where they were read from.
    pub dir: PathBuf,
}

impl Catalog {
    /// Where the catalog is: `$TRACELAB_SCENARIOS`, `./scenarios`, the
    /// `scenarios/` of the workspace this binary was built in (next to
    /// `target/`), or the source tree's.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TRACELAB_SCENARIOS").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cwd = PathBuf::from("scenarios");
        if cwd.is_dir() {
            return cwd;
        }
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                let candidate = dir.join("scenarios");
                if dir.join("Cargo.toml").is_file() && candidate.is_dir() {
                    return candidate;
                }
            }
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
    }

    /// Loads every `*.yaml` of `dir`.
    ///
    /// # Errors
    /// When the directory cannot be read, or any file is invalid (every
    /// problem is reported, one per line), or two files share an id.
    pub fn load(dir: &Path) -> anyhow::Result<Catalog> {
        let entries = std::fs::read_dir(dir).with_context(|| {
            format!(
                "reading the scenario catalog {} (set TRACELAB_SCENARIOS or --scenarios)",
                dir.display()
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        let mut scenarios = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            match Scenario::load(&path) {
                Ok(s) => scenarios.push(s),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        if !problems.is_empty() {
            bail!("invalid scenario files:\n{}", problems.join("\n"));
        }
        let mut seen = BTreeMap::new();
        for s in &scenarios {
            if let Some(other) = seen.insert(s.id.clone(), s.path.clone()) {
                bail!(
                    "scenario id {} used by {} and {}",
                    s.id,
                    other.display(),
                    s.path.display()
                );
            }
        }
        scenarios.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Catalog {
            scenarios,
            dir: dir.to_path_buf(),
        })
    }

    /// The scenario with this id.
    ///
    /// # Errors
    /// When there is none (the message lists close ids).
    pub fn get(&self, id: &str) -> anyhow::Result<&Scenario> {
        if let Some(s) = self.scenarios.iter().find(|s| s.id == id) {
            return Ok(s);
        }
        let close: Vec<&str> = self
            .scenarios
            .iter()
            .filter(|s| s.id.contains(id) || id.contains(&s.id))
            .map(|s| s.id.as_str())
            .collect();
        if close.is_empty() {
            bail!("no scenario {id:?} (see `tracelab scenario list`)");
        }
        bail!("no scenario {id:?}; did you mean {}?", close.join(", "));
    }

    /// The ids.
    pub fn ids(&self) -> Vec<&str> {
        self.scenarios.iter().map(|s| s.id.as_str()).collect()
    }
}

/// `tracelab scenario`
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: ScenarioCommand,
    /// Scenario directory [default: $TRACELAB_SCENARIOS, ./scenarios, or the workspace's].
    #[arg(long, value_name = "DIR", global = true)]
    pub scenarios: Option<PathBuf>,
    /// Language of the texts [default: from $LANG].
    #[arg(long, value_enum, global = true)]
    pub lang: Option<Lang>,
}

/// The `scenario` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// List the scenarios.
    List,
    /// Show a scenario in full: faults, hints, query, answer (spoilers).
    Show {
        /// Scenario id.
        id: String,
    },
    /// Set a scenario's faults on the running lab (openly: not an exercise).
    Start {
        /// Scenario id.
        id: String,
        /// Add a `fault.injected` event to the spans where a fault fires.
        #[arg(long)]
        show_in_traces: bool,
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Clear a scenario's faults (or, without an id, every fault).
    Stop {
        /// Scenario id.
        id: Option<String>,
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Check a scenario's answer key on the running lab: its signature must be
    /// absent while it is stopped and present while it runs (sends traffic).
    Verify(VerifyArgs),
}

/// `tracelab scenario verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Scenario id, or `all`.
    pub id: String,
    /// How long to wait after the traffic before judging [default: the
    /// scenario's]. With the tail sampling of `sampling.yaml` traces appear
    /// only after its decision_wait_ms: pass e.g. 11s.
    #[arg(long, value_name = "DURATION", value_parser = tracelab_contract::fault::duration::parse)]
    pub settle: Option<std::time::Duration>,
    /// How long a running scenario may take to show its signature.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = tracelab_contract::fault::duration::parse)]
    pub timeout: std::time::Duration,
    /// Postgres of the lab (for the one-charge-per-key invariant).
    #[arg(long, env = "DATABASE_URL", default_value = crate::lab::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ of the lab (for the dead-letter queue depth).
    #[arg(long, env = "AMQP_URL", default_value = crate::lab::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// The notification queue (its DLQ is `<queue>.dlq`).
    #[arg(long, env = "TRACELAB_QUEUE", default_value = crate::lab::DEFAULT_QUEUE)]
    pub queue: String,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// Loads the catalog named by `--scenarios` or the default one.
///
/// # Errors
/// As [`Catalog::load`].
pub fn load_catalog(dir: Option<&Path>) -> anyhow::Result<Catalog> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(Catalog::default_dir);
    Catalog::load(&dir)
}

/// Runs `tracelab scenario ...`.
///
/// # Errors
/// An invalid catalog, an unknown id, an unreachable lab.
pub async fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(args.scenarios.as_deref())?;
    let lang = args.lang.unwrap_or_else(Lang::from_env);
    match args.command {
        ScenarioCommand::List => {
            println!("{:<34} {:<9} {:>4}  TITLE", "ID", "KIND", "DIFF");
            for s in &catalog.scenarios {
                let kind = match s.pitfall {
                    Some(_) => "pitfall".to_string(),
                    None => s.category.to_string(),
                };
                println!(
                    "{:<34} {:<9} {:>4}  {}",
                    s.id,
                    kind,
                    "*".repeat(s.difficulty as usize),
                    s.title.get(lang)
                );
            }
            println!(
                "\n{} scenarios in {}. Play one blind: tracelab exercise start --random",
                catalog.scenarios.len(),
                catalog.dir.display()
            );
        }
        ScenarioCommand::Show { id } => {
            let s = catalog.get(&id)?;
            print!("{}", render_full(s, lang));
        }
        ScenarioCommand::Start {
            id,
            show_in_traces,
            lab,
        } => {
            let s = catalog.get(&id)?;
            let client = lab.fault_client()?;
            let set = s.start(&client, show_in_traces).await?;
            println!("{}: {}", s.id, s.title.get(lang));
            for a in set {
                let params = crate::fault::params_text(&a.spec);
                println!(
                    "  set {} {}{}{params}",
                    a.spec.point,
                    a.spec.kind.name(),
                    if params.is_empty() { "" } else { " " },
                );
            }
            println!(
                "\nsymptom: {}\nsend traffic (tracelab checkout, or tracelab load), then look in Tempo.\n\
                 stop it with: tracelab scenario stop {}",
                s.symptom.get(lang),
                s.id
            );
        }
        ScenarioCommand::Verify(v) => return verify_cli(&catalog, v).await,
        ScenarioCommand::Stop { id, lab } => {
            let client = lab.fault_client()?;
            match id {
                Some(id) => {
                    let s = catalog.get(&id)?;
                    s.stop(&client).await?;
                    println!("stopped {}", s.id);
                }
                None => {
                    let n = client.clear_all().await?;
                    println!("cleared {n} fault(s) on every service");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_cli(catalog: &Catalog, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let target = crate::verify::Target {
        gateway: args.lab.url("gateway"),
        tempo: crate::tempo::TempoClient::new(&args.lab.url("tempo"))?,
        faults: args.lab.fault_client()?,
        database_url: Some(args.database_url.clone()),
        dlq: Some((args.amqp_url.clone(), format!("{}.dlq", args.queue))),
    };
    let scenarios: Vec<&Scenario> = if args.id == "all" {
        catalog.scenarios.iter().collect()
    } else {
        vec![catalog.get(&args.id)?]
    };
    let mut failed = Vec::new();
    for s in scenarios {
        let mut s = s.clone();
        if let Some(settle) = args.settle {
            s.traffic.settle_ms = settle.as_millis() as u64;
        }
        let v = crate::verify::verify(&target, &s, args.timeout).await?;
        println!("{}", v.render());
        if !v.passed() {
            failed.push(s.id.clone());
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            service: "payment".into(),
            operation: Some("savePaymentResult".into()),
            accept: vec![
                AnswerKey {
                    service: "payment".into(),
                    operation: Some("INSERT payments".into()),
                },
                AnswerKey {
                    service: "provider".into(),
                    operation: None,
                },
            ],
        }
    }

    #[test]
    fn grades_answers() {
        let a = answer();
        assert_eq!(
            a.grade("payment", Some("savePaymentResult")),
            Grade::Correct
        );
        assert_eq!(
            a.grade("Payment", Some("save_payment_result")),
            Grade::Correct
        );
        assert_eq!(
            a.grade("payment", Some(" insert  PAYMENTS ")),
            Grade::Correct
        );
        assert_eq!(a.grade("payment", None), Grade::NeedsOperation);
        assert_eq!(a.grade("payment", Some("")), Grade::NeedsOperation);
        assert_eq!(
            a.grade("payment", Some("validateOrder")),
            Grade::WrongOperation
        );
        assert_eq!(a.grade("payment-provider", None), Grade::Correct);
        assert_eq!(a.grade("auth", Some("savePaymentResult")), Grade::Wrong);
        assert_eq!(a.grade("nonsense", None), Grade::Wrong);
    }

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

    #[test]
    fn unfolds_japanese_lines() {
        assert_eq!(
            unfold_japanese("API Gateway・ 外部決済API。 今回は payment の Span"),
            "API Gateway・外部決済API。今回は payment の Span"
        );
    }

    #[test]
    fn normalizes_operations() {
        assert_eq!(normalize_operation("POST /v1/charges"), "post/v1/charges");
        assert_eq!(
            normalize_operation("`savePaymentResult`"),
            "savepaymentresult"
        );
    }
}
