//! The lab's two sampling policies and the parts of the lab that apply
//! them: every service's head sampler (through its admin API,
//! `/admin/sampling`) and the embedded collector's tail sampler
//! (`/api/tracelab/sampling`, natively only).
//!
//! The two policies are the repository's `sampling.yaml` (`lab`) and
//! `sampling.lesson.yaml` (`lesson`), compiled in: the files stay the one
//! place their values are written. Which one is in force is not
//! remembered here but read from the services and the collector each time,
//! so a service restarted with its file's rules, or a lab started with
//! another file, shows as `custom` rather than as what was last set.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tracelab_collector::TailPolicy;
use tracelab_faults::sampling::HeadReport;
use tracelab_telemetry::sampling::{HeadBased, SamplingFile};

/// How long one service or the collector may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A named sampling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    /// `sampling.yaml`: keep every trace.
    Lab,
    /// `sampling.lesson.yaml`: 10% head, errors, slow traces and 5% tail.
    Lesson,
}

impl PolicyName {
    /// Both, in the order the page offers them.
    pub const ALL: [PolicyName; 2] = [PolicyName::Lab, PolicyName::Lesson];

    /// `lab` or `lesson`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Lab => "lab",
            PolicyName::Lesson => "lesson",
        }
    }

    /// The file's text, as compiled in.
    fn text(self) -> &'static str {
        match self {
            PolicyName::Lab => include_str!("../../../../sampling.yaml"),
            PolicyName::Lesson => include_str!("../../../../sampling.lesson.yaml"),
        }
    }

    /// The repository file it comes from.
    pub fn file(self) -> &'static str {
        match self {
            PolicyName::Lab => "sampling.yaml",
            PolicyName::Lesson => "sampling.lesson.yaml",
        }
    }

    /// `lab` or `lesson`; `None` for anything else.
    pub fn parse(name: &str) -> Option<PolicyName> {
        PolicyName::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A sampling file's two sections, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name.
    pub name: PolicyName,
    /// The head rules (every service gets the same; each applies its own
    /// `per_service` entry).
    pub head: HeadBased,
    /// The tail policy (the collector's).
    pub tail: TailPolicy,
}

impl Policy {
    /// The named policy, from its file.
    ///
    /// # Errors
    /// When the compiled-in file does not parse or has no `tail_based`
    /// section (a unit test keeps both files valid).
    pub fn named(name: PolicyName) -> anyhow::Result<Policy> {
        let text = name.text();
        let head = SamplingFile::parse(text)
            .with_context(|| format!("{}: head_based", name.file()))?
            .head_based;
        let tail = TailPolicy::from_yaml_str(text)
            .with_context(|| format!("{}: tail_based", name.file()))?
            .with_context(|| format!("{} has no tail_based section", name.file()))?;
        Ok(Policy { name, head, tail })
    }

    /// Both named policies.
    ///
    /// # Errors
    /// As [`Policy::named`].
    pub fn all() -> anyhow::Result<Vec<Policy>> {
        PolicyName::ALL.into_iter().map(Policy::named).collect()
    }
}

/// The name of the policy whose head rules are `head`, if any.
pub fn head_name(policies: &[Policy], head: &HeadBased) -> Option<PolicyName> {
    policies.iter().find(|p| p.head == *head).map(|p| p.name)
}

/// The name of the policy whose tail policy is `tail` (as the collector
/// reports it, in the file's shape), if any.
pub fn tail_name(policies: &[Policy], tail: &Value) -> Option<PolicyName> {
    policies
        .iter()
        .find(|p| p.tail.to_json() == *tail)
        .map(|p| p.name)
}

/// The head and tail samplers of a lab, reached with the admin token.
#[derive(Debug, Clone)]
pub struct SamplingTargets {
    http: reqwest::Client,
    token: String,
    /// `(service, admin base URL)`.
    admin: Vec<(String, String)>,
    /// The embedded collector's API, when the console's lab has one.
    collector: Option<String>,
}

impl SamplingTargets {
    /// The services' admin APIs, and the collector's API when `collector`
    /// is the embedded collector (native labs).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        admin: Vec<(String, String)>,
        collector: Option<String>,
        token: &str,
    ) -> anyhow::Result<SamplingTargets> {
        Ok(SamplingTargets {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .context("building HTTP client")?,
            token: token.to_string(),
            admin: admin
                .into_iter()
                .map(|(n, u)| (n, u.trim_end_matches('/').to_string()))
                .collect(),
            collector: collector.map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    /// The services, by name.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.admin.iter().map(|(n, _)| n.as_str())
    }

    /// Whether a collector's tail policy can be reached.
    pub fn has_collector(&self) -> bool {
        self.collector.is_some()
    }

    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach {what}: {}",
                tracelab_client::http_error_summary(&e)
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(|| body.to_string(), str::to_string);
            bail!("{what} answered {status}: {message}");
        }
        Ok(body)
    }

    fn admin_url(&self, service: &str) -> anyhow::Result<String> {
        self.admin
            .iter()
            .find(|(n, _)| n == service)
            .map(|(_, u)| format!("{u}/admin/sampling"))
            .with_context(|| format!("no admin URL for {service}"))
    }

    /// `GET /admin/sampling` of one service.
    ///
    /// # Errors
    /// Unreachable, refused, or an unexpected answer.
    pub async fn head(&self, service: &str) -> anyhow::Result<HeadReport> {
        let url = self.admin_url(service)?;
        let what = format!("{service}'s admin API");
        let body = self
            .send(&what, self.http.get(&url).bearer_auth(&self.token))
            .await?;
        serde_json::from_value(body).with_context(|| format!("{what}: unexpected answer"))
    }

    /// `PUT /admin/sampling` of one service.
    ///
    /// # Errors
    /// Unreachable, refused (with the service's reason), or unexpected.
    pub async fn set_head(&self, service: &str, head: &HeadBased) -> anyhow::Result<HeadReport> {
        let url = self.admin_url(service)?;
        let what = format!("{service}'s admin API");
        let body = self
            .send(
                &what,
                self.http.put(&url).bearer_auth(&self.token).json(head),
            )
            .await?;
        serde_json::from_value(body).with_context(|| format!("{what}: unexpected answer"))
    }

    fn collector_url(&self) -> anyhow::Result<String> {
        self.collector
            .as_ref()
            .map(|u| format!("{u}/api/tracelab/sampling"))
            .context("this lab has no embedded collector")
    }

    /// `GET /api/tracelab/sampling` of the collector: its report as sent
    /// (`tracelab_collector::TailReport`'s JSON).
    ///
    /// # Errors
    /// No collector, unreachable, or a refusal (no tail policy).
    pub async fn tail(&self) -> anyhow::Result<Value> {
        let url = self.collector_url()?;
        self.send("the collector", self.http.get(&url)).await
    }

    /// `PUT /api/tracelab/sampling` of the collector.
    ///
    /// # Errors
    /// No collector, unreachable, or a refusal (with the collector's reason).
    pub async fn set_tail(&self, tail: &TailPolicy) -> anyhow::Result<Value> {
        let url = self.collector_url()?;
        self.send(
            "the collector",
            self.http
                .put(&url)
                .bearer_auth(&self.token)
                .json(&json!({ "tail_based": tail.to_json() })),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_parse_and_differ_where_the_lesson_says() {
        let all = Policy::all().unwrap();
        let (lab, lesson) = (&all[0], &all[1]);
        assert_eq!(lab.head.rate, 1.0);
        assert_eq!(lesson.head.rate, 0.1);
        assert_eq!(lesson.head.per_service.get("search"), Some(&0.01));
        assert_eq!(head_name(&all, &lesson.head), Some(PolicyName::Lesson));
        assert_eq!(tail_name(&all, &lab.tail.to_json()), Some(PolicyName::Lab));
        assert_eq!(
            tail_name(&all, &lesson.tail.to_json()),
            Some(PolicyName::Lesson)
        );
        let mut other = lab.head.clone();
        other.rate = 0.5;
        assert_eq!(head_name(&all, &other), None);
        assert_eq!(PolicyName::parse("lesson"), Some(PolicyName::Lesson));
        assert_eq!(PolicyName::parse("Lesson"), None);
    }
}
