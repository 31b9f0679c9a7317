//! [`ConsoleClient`]: the CLI's client of the console API. Answers are
//! read into the API's own types; an error answer becomes a
//! [`ConsoleError`] with the console's code and message.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An error answer of the console.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConsoleError {
    /// HTTP status.
    pub status: u16,
    /// The error's code (`no_exercise`, `unknown_scenario`, ...).
    pub code: String,
    /// Its message.
    pub message: String,
}

/// A client of one console.
#[derive(Debug, Clone)]
pub struct ConsoleClient {
    http: reqwest::Client,
    base: String,
}

impl ConsoleClient {
    /// A client of the console at `base` (e.g. `http://127.0.0.1:7070`).
    /// Requests may take `timeout` (a scenario's verification takes long).
    ///
    /// # Errors
    /// When `base` is not an http(s) URL or the client cannot be built.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<ConsoleClient> {
        let url = reqwest::Url::parse(base).with_context(|| format!("bad lab URL {base:?}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("bad lab URL {base:?}: not http(s)");
        }
        Ok(ConsoleClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .context("building HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The console's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    ///
    /// # Errors
    /// An unreachable console, an error answer ([`ConsoleError`]), or an
    /// answer of another shape.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON body (`None`: no body).
    ///
    /// # Errors
    /// As [`ConsoleClient::get`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `PUT path` with a JSON body.
    ///
    /// # Errors
    /// As [`ConsoleClient::get`].
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// `DELETE path`.
    ///
    /// # Errors
    /// As [`ConsoleClient::get`].
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the lab console at {}: {}; is the lab running? (`tracelab up`, or pass --lab URL)",
                self.base,
                tracelab_client::http_error_summary(&e)
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let field = |k: &str| {
                body.pointer(&format!("/error/{k}"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let code = field("code").unwrap_or_else(|| "unknown".into());
            let mut message = field("message").unwrap_or_else(|| {
                format!(
                    "the lab console answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            });
            if status.is_server_error() {
                // A 5xx message is generic by design; the code says what failed.
                let part = field("service")
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                message = format!(
                    "{message} [{code}{part}]: the console at {} could not reach the lab; is it running?",
                    self.base
                );
            }
            return Err(ConsoleError {
                status: status.as_u16(),
                code,
                message,
            }
            .into());
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "unexpected answer from the lab console at {}: {}",
                self.base,
                text.chars().take(200).collect::<String>()
            )
        })
    }
}
