//! Answer keys: the expected service and operation, accepted alternatives,
//! and how an answer is graded.

use serde::{Deserialize, Serialize};

use crate::fault::canonical_service;

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

    #[test]
    fn normalizes_operations() {
        assert_eq!(normalize_operation("POST /v1/charges"), "post/v1/charges");
        assert_eq!(
            normalize_operation("`savePaymentResult`"),
            "savepaymentresult"
        );
    }
}
