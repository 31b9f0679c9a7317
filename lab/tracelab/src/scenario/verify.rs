//! Checks a scenario's answer key on a running lab: send its traffic with
//! the scenario stopped (its signature must find nothing), then start it,
//! send the traffic again (every check must find its signature, and the
//! revealing query shown with the answer must find traces), and stop it.
//! Invariants must hold in both phases. Used by the answer-key tests and by
//! `tracelab scenario verify`.

use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::model::Scenario;
use super::signature::{Check, DlqProbe, EvalContext, Outcome, TraceqlCheck, report, unix_ns};
use super::traffic::{Driver, RequestRecord, summarize};
use crate::fault::FaultClient;
use crate::supervisor::{Lab, LabOptions};
use tracelab_client::TempoClient;
use tracelab_contract::fault::limits::DEFAULT_FAULT_LIFETIME;
use tracelab_contract::messaging::dlq_name;

/// Where a lab is and how to reach its state.
#[derive(Debug, Clone)]
pub struct Target {
    /// Gateway base URL.
    pub gateway: String,
    /// Tempo API.
    pub tempo: TempoClient,
    /// Admin API of the services.
    pub faults: FaultClient,
    /// Postgres, for `charges_per_key`.
    pub database_url: Option<String>,
    /// RabbitMQ URL and the notification DLQ, for `dlq_depth`.
    pub dlq: Option<(String, String)>,
}

impl Target {
    /// The target of a [`Lab`] started with `opts`.
    ///
    /// # Errors
    /// When a client cannot be built.
    pub fn for_lab(lab: &Lab, opts: &LabOptions) -> anyhow::Result<Target> {
        Ok(Target {
            gateway: lab.gateway_url(),
            tempo: TempoClient::new(&lab.tempo_url())?,
            faults: FaultClient::new(lab.admin_urls(), lab.admin_token())?,
            database_url: Some(lab.database_url().to_string()),
            dlq: Some((opts.amqp_url.clone(), dlq_name(lab.queue()))),
        })
    }
}

/// One phase: the requests sent and what the checks found.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Whether the scenario was running.
    pub active: bool,
    /// The requests.
    pub traffic: Vec<RequestRecord>,
    /// The signature checks.
    pub signature: Vec<Outcome>,
    /// The invariants.
    pub invariants: Vec<Outcome>,
    /// Running only: what the scenario's revealing query (`query:`, the
    /// one the answer shows the learner) found. Some revealing queries
    /// also match healthy traffic (the sampling pitfall's is every
    /// checkout), so it is not asked of the stopped phase; nor of a
    /// scenario whose evidence is that traces go missing (a
    /// `trace_coverage` check: at 5% head sampling, 12 checkouts keep no
    /// trace at all more than half of the time).
    pub revealing: Option<Outcome>,
}

impl Phase {
    /// Active: every signature check present and the revealing query finds
    /// traces; stopped: no signature check present. Invariants hold.
    pub fn passed(&self) -> bool {
        let sig = if self.active {
            self.signature.iter().all(|o| o.present)
        } else {
            self.signature.iter().all(|o| !o.present)
        };
        let revealing = self.revealing.as_ref().is_none_or(|o| o.present);
        sig && revealing && self.invariants.iter().all(|o| o.present)
    }

    /// A readable account of the phase.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} ({}):\n",
            if self.active {
                "scenario running: every check must find its signature"
            } else {
                "scenario stopped: no check may find anything"
            },
            if self.passed() { "ok" } else { "FAILED" }
        );
        for line in summarize(&self.traffic) {
            out.push_str(&format!("  traffic {line}\n"));
        }
        out.push_str(&report(&self.signature));
        out.push('\n');
        if let Some(revealing) = &self.revealing {
            out.push_str("  revealing query:\n");
            out.push_str(&report(std::slice::from_ref(revealing)));
            out.push('\n');
        }
        if !self.invariants.is_empty() {
            out.push_str("  invariants:\n");
            out.push_str(&report(&self.invariants));
            out.push('\n');
        }
        out
    }
}

/// Both phases.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Scenario id.
    pub id: String,
    /// Stopped.
    pub baseline: Phase,
    /// Running.
    pub active: Phase,
}

impl Verification {
    /// Both phases passed.
    pub fn passed(&self) -> bool {
        self.baseline.passed() && self.active.passed()
    }

    /// A readable account.
    pub fn render(&self) -> String {
        format!(
            "scenario {}: {}\n{}{}",
            self.id,
            if self.passed() { "ok" } else { "FAILED" },
            self.baseline.render(),
            self.active.render()
        )
    }
}

fn needs_dlq(checks: &[Check]) -> bool {
    checks.iter().any(|c| matches!(c, Check::DlqDepth(_)))
}

/// Runs one phase of `scenario` on `target`.
///
/// # Errors
/// When the faults cannot be set or cleared, or the DLQ cannot be read.
pub async fn run_phase(
    target: &Target,
    scenario: &Scenario,
    active: bool,
    timeout: Duration,
) -> anyhow::Result<Phase> {
    let dlq = match (&target.dlq, needs_dlq(&scenario.signature)) {
        (Some((url, queue)), true) => Some(DlqProbe {
            amqp_url: url.clone(),
            queue: queue.clone(),
            baseline: DlqProbe::depth(url, queue).await.unwrap_or(0),
        }),
        _ => None,
    };
    let start_ns = unix_ns(SystemTime::now());
    if active {
        scenario
            .start(&target.faults, false, DEFAULT_FAULT_LIFETIME)
            .await?;
    }
    let result = async {
        let driver = Driver::new(&target.gateway)?;
        let traffic = driver.run(&scenario.traffic).await;
        tokio::time::sleep(Duration::from_millis(scenario.traffic.settle_ms)).await;
        let ctx = EvalContext {
            tempo: &target.tempo,
            start_ns,
            end_ns: (!active).then(|| unix_ns(SystemTime::now())),
            traffic: &traffic,
            database_url: target.database_url.as_deref(),
            dlq: dlq.as_ref(),
        };
        let drops_traces = scenario
            .signature
            .iter()
            .any(|c| matches!(c, Check::TraceCoverage(_)));
        let (signature, revealing) = if active && !drops_traces {
            let revealing = Check::Traceql(TraceqlCheck::Query(scenario.query.clone()));
            let mut found = ctx
                .wait_present(
                    &[scenario.signature.as_slice(), &[revealing]].concat(),
                    timeout,
                )
                .await;
            let revealing = found.pop();
            (found, revealing)
        } else if active {
            (ctx.wait_present(&scenario.signature, timeout).await, None)
        } else {
            (ctx.eval_all(&scenario.signature).await, None)
        };
        let invariants = ctx.eval_all(&scenario.invariants).await;
        anyhow::Ok(Phase {
            active,
            traffic,
            signature,
            invariants,
            revealing,
        })
    }
    .await;
    if active {
        scenario
            .stop(&target.faults)
            .await
            .with_context(|| format!("stopping scenario {}", scenario.id))?;
    }
    result
}

/// Verifies a scenario's answer key: stopped first, then running.
///
/// # Errors
/// As [`run_phase`].
pub async fn verify(
    target: &Target,
    scenario: &Scenario,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let baseline = run_phase(target, scenario, false, timeout).await?;
    let active = run_phase(target, scenario, true, timeout).await?;
    Ok(Verification {
        id: scenario.id.clone(),
        baseline,
        active,
    })
}
