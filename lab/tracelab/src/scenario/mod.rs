//! The scenario catalog: one YAML file per scenario in `scenarios/`, each a
//! bundle of faults with the learner's story, the symptom seen at the
//! gateway, three hints of rising detail, the TraceQL query that reveals the
//! cause, the expected answer (service + operation, plus accepted
//! alternatives), an explanation, the traffic that makes it visible and a
//! machine-checkable trace `signature` (see [`signature`]).
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
//! Faults are read with `tracelab-contract` (`FaultSpec`), so a wrong field
//! is named with the file and the fault's position; each fault's point must
//! exist and its kind must act there. A scenario's faults expire, like a
//! fault set by hand: one without `for` lasts 15 minutes when the scenario
//! is started openly and an exercise's bound in an exercise
//! ([`crate::exercise::FAULT_LIFETIME`]), so a forgotten scenario heals
//! itself; `for: never` in a file keeps a fault until `scenario stop` or
//! the end of the exercise clears it, and is for a fault meant to outlive
//! any timer.
//!
//! The parts: [`text`] (bilingual texts), [`model`] (a scenario file and its
//! rules), [`answer`] (answer keys and grading), [`catalog`] (a directory of
//! scenarios), [`traffic`] (the requests
//! that make a scenario visible), [`signature`] (machine-checkable trace
//! checks) and [`verify`] (a scenario's answer key run end to end).

pub mod answer;
pub mod catalog;
pub mod model;
pub mod signature;
pub mod text;
pub mod traffic;
pub mod verify;

pub use answer::{Answer, AnswerKey, Grade, normalize_operation};
pub use catalog::Catalog;
pub use model::{Category, Pitfall, Scenario, ScenarioFault};
pub use text::{Lang, Text, unfold_japanese};
pub use traffic::Traffic;
