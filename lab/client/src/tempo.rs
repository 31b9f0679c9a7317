//! [`TempoClient`]: the lab's one way to read traces, from the embedded
//! collector (`tracelab up`) or a real Tempo (`docker compose up`).

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::http::{http_error_summary, truncate};
use crate::ids::parse_trace_id;
use crate::search::{SearchQuery, TraceSummary, parse_search};
use crate::trace::Trace;

/// predicate did not hold in time; carries the last version seen so a caller
/// can still show it (`err.downcast_ref::<TraceWaitTimeout>()`).
#[derive(Debug, Clone)]
pub struct TraceWaitTimeout {
    /// The trace id waited for.
    pub trace_id: String,
    /// How long we waited.
    pub waited: Duration,
    /// The last trace fetched, `None` if the trace was never found.
    pub last: Option<Trace>,
}

impl fmt::Display for TraceWaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.last {
            None => write!(
                f,
                "trace {} not found after {:.1}s",
                self.trace_id,
                self.waited.as_secs_f64()
            ),
            Some(t) => write!(
                f,
                "trace {} incomplete after {:.1}s: {} spans from {}",
                self.trace_id,
                self.waited.as_secs_f64(),
                t.len(),
                t.services().into_iter().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl std::error::Error for TraceWaitTimeout {}

/// Client for a Tempo-compatible HTTP API (real Tempo or the embedded collector).
#[derive(Debug, Clone)]
pub struct TempoClient {
    base: String,
    http: reqwest::Client,
}

impl TempoClient {
    /// A client for the API at `base_url` (e.g. `http://127.0.0.1:3200`).
    ///
    /// # Errors
    /// When the URL is not an absolute http(s) URL.
    pub fn new(base_url: &str) -> anyhow::Result<TempoClient> {
        let url = reqwest::Url::parse(base_url)
            .with_context(|| format!("invalid Tempo URL {base_url:?}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            bail!("invalid Tempo URL {base_url:?}: expected http://host:port");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building HTTP client")?;
        Ok(TempoClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether `GET /ready` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(format!("{}/ready", self.base)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Fetches the raw JSON of `GET /api/traces/{id}`; `None` on 404.
    ///
    /// # Errors
    /// When the id is malformed, the server is unreachable or answers another
    /// non-2xx status, or the body is not JSON.
    pub async fn get_trace_json(&self, trace_id: &str) -> anyhow::Result<Option<Value>> {
        let id = parse_trace_id(trace_id)?;
        let url = format!("{}/api/traces/{id}", self.base);
        let resp = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", truncate(&text, 200));
        }
        let body = serde_json::from_str(&text)
            .with_context(|| format!("GET {url}: body is not JSON: {}", truncate(&text, 200)))?;
        Ok(Some(body))
    }

    /// Fetches and flattens a trace; `None` when the server does not know it.
    ///
    /// # Errors
    /// As [`TempoClient::get_trace_json`], plus a body that is not a trace.
    pub async fn get_trace(&self, trace_id: &str) -> anyhow::Result<Option<Trace>> {
        match self.get_trace_json(trace_id).await? {
            None => Ok(None),
            Some(body) => Trace::from_tempo_json(&body).map(Some),
        }
    }

    /// Runs `GET /api/search`.
    ///
    /// # Errors
    /// When the server is unreachable, answers non-2xx (e.g. a TraceQL syntax
    /// error, whose message is included) or the body is not a search result.
    pub async fn search(&self, query: &SearchQuery) -> anyhow::Result<Vec<TraceSummary>> {
        let url = format!("{}/api/search", self.base);
        let mut full = reqwest::Url::parse(&url).with_context(|| format!("bad URL {url}"))?;
        {
            let mut pairs = full.query_pairs_mut();
            for (k, v) in query.params() {
                pairs.append_pair(k, &v);
            }
        }
        let resp = self
            .http
            .get(full)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("search failed: {status}: {}", truncate(text.trim(), 300));
        }
        let body: Value = serde_json::from_str(&text)
            .with_context(|| format!("GET {url}: body is not JSON: {}", truncate(&text, 200)))?;
        parse_search(&body)
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach Tempo at {}: {}; is the collector (or Tempo) running?",
            self.base,
            http_error_summary(e)
        )
    }

    /// Polls `GET /api/traces/{id}` (every 100 ms) until the trace exists and
    /// `predicate` holds, and returns it.
    ///
    /// Spans reach the collector in batches, from several processes, so a trace
    /// fetched too early is incomplete: pass a predicate that says what
    /// "complete" means for the caller (e.g. "has a notification CONSUMER span").
    ///
    /// # Errors
    /// [`TraceWaitTimeout`] (with the last version seen) when `timeout` passes;
    /// a malformed id or unparsable body at once. Connection errors are retried
    /// until the timeout, since the collector may still be starting.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        predicate: impl Fn(&Trace) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Trace> {
        let id = parse_trace_id(trace_id)?;
        let started = tokio::time::Instant::now();
        let mut last = None;
        let mut last_err = None;
        loop {
            match self.get_trace_json(&id).await {
                Ok(Some(body)) => {
                    let trace = Trace::from_tempo_json(&body)?;
                    if predicate(&trace) {
                        return Ok(trace);
                    }
                    last = Some(trace);
                }
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if started.elapsed() >= timeout {
                if last.is_none()
                    && let Some(e) = last_err
                {
                    return Err(e.context(format!("waiting for trace {id}")));
                }
                return Err(TraceWaitTimeout {
                    trace_id: id,
                    waited: started.elapsed(),
                    last,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_rejects_bad_urls() {
        assert!(TempoClient::new("not a url").is_err());
        assert!(TempoClient::new("ftp://x").is_err());
        assert_eq!(
            TempoClient::new("http://127.0.0.1:3200/")
                .unwrap()
                .base_url(),
            "http://127.0.0.1:3200"
        );
    }
}
