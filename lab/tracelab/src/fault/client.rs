//! [`FaultClient`]: the admin API (`/admin/faults`) of the six services.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tracelab_contract::fault::{ActiveFault, FaultSpec, FaultsReport};

/// A client for the admin API of the six services.
#[derive(Debug, Clone)]
pub struct FaultClient {
    http: reqwest::Client,
    token: String,
    /// Service (binary name) → base URL.
    services: BTreeMap<String, String>,
}

impl FaultClient {
    /// A client for services at these base URLs: `(name, base URL)` pairs,
    /// e.g. `Lab::services()` of a running lab.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new<N: Into<String>, U: AsRef<str>>(
        services: impl IntoIterator<Item = (N, U)>,
        token: &str,
    ) -> anyhow::Result<FaultClient> {
        Ok(FaultClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building HTTP client")?,
            token: token.to_string(),
            services: services
                .into_iter()
                .map(|(k, v)| (k.into(), v.as_ref().trim_end_matches('/').to_string()))
                .collect(),
        })
    }

    /// The services this client knows, by name.
    pub fn services(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// The base URL of a service.
    pub fn service_url(&self, service: &str) -> Option<&str> {
        self.services.get(service).map(String::as_str)
    }

    fn url(&self, service: &str, path: &str) -> anyhow::Result<String> {
        let base = self
            .services
            .get(service)
            .with_context(|| format!("no URL for service {service}"))?;
        Ok(format!("{base}{path}"))
    }

    async fn send(
        &self,
        service: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let resp = request.bearer_auth(&self.token).send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach {service}'s admin API: {}; is the lab running? (`tracelab up`)",
                tracelab_client::http_error_summary(&e)
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "{service} refused the admin token (401): pass the lab's token with --admin-token or TRACELAB_ADMIN_TOKEN"
            );
        }
        Ok((status, body))
    }

    fn error_text(body: &Value) -> String {
        body.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string())
    }

    /// `GET /admin/faults` of one service.
    ///
    /// # Errors
    /// Unreachable service, refused token, or an unexpected answer.
    pub async fn list(&self, service: &str) -> anyhow::Result<FaultsReport> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.get(&url)).await?;
        if !status.is_success() {
            bail!(
                "{service}: GET /admin/faults: {status}: {}",
                Self::error_text(&body)
            );
        }
        serde_json::from_value(body).with_context(|| format!("{service}: unexpected fault list"))
    }

    /// `PUT /admin/faults` on the service that owns the point.
    ///
    /// # Errors
    /// Unreachable service, refused token or spec (with the service's reason).
    pub async fn set(&self, service: &str, spec: &FaultSpec) -> anyhow::Result<ActiveFault> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.put(&url).json(spec)).await?;
        if !status.is_success() {
            bail!(
                "{service} refused the fault at {}: {status}: {}",
                spec.point,
                Self::error_text(&body)
            );
        }
        serde_json::from_value(body).with_context(|| format!("{service}: unexpected answer"))
    }

    /// `DELETE /admin/faults/{point}`; `false` when nothing was set there.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn clear_point(&self, service: &str, point: &str) -> anyhow::Result<bool> {
        let url = self.url(service, &format!("/admin/faults/{point}"))?;
        let (status, body) = self.send(service, self.http.delete(&url)).await?;
        match status {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            s => bail!(
                "{service}: DELETE {point}: {s}: {}",
                Self::error_text(&body)
            ),
        }
    }

    /// `DELETE /admin/faults`: clears every fault of a service; returns how many.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn clear_service(&self, service: &str) -> anyhow::Result<u64> {
        let url = self.url(service, "/admin/faults")?;
        let (status, body) = self.send(service, self.http.delete(&url)).await?;
        if !status.is_success() {
            bail!(
                "{service}: DELETE /admin/faults: {status}: {}",
                Self::error_text(&body)
            );
        }
        Ok(body.get("cleared").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Turns the `fault.injected` span events of a service on or off.
    ///
    /// # Errors
    /// Unreachable service or refused token.
    pub async fn set_visible(&self, service: &str, visible: bool) -> anyhow::Result<()> {
        let url = self.url(service, "/admin/faults/_visible")?;
        let (status, body) = self
            .send(
                service,
                self.http.put(&url).json(&json!({ "visible": visible })),
            )
            .await?;
        if !status.is_success() {
            bail!(
                "{service}: PUT _visible: {status}: {}",
                Self::error_text(&body)
            );
        }
        Ok(())
    }

    /// Every fault of every service: `(service, report)`.
    ///
    /// # Errors
    /// When any service cannot be listed.
    pub async fn list_all(&self) -> anyhow::Result<Vec<(String, FaultsReport)>> {
        let mut out = Vec::new();
        for service in self.services.keys() {
            out.push((service.clone(), self.list(service).await?));
        }
        Ok(out)
    }

    /// Clears every fault on every service; returns how many were cleared.
    ///
    /// # Errors
    /// When any service cannot be cleared.
    pub async fn clear_all(&self) -> anyhow::Result<u64> {
        let mut n = 0;
        for service in self.services.keys() {
            n += self.clear_service(service).await?;
        }
        Ok(n)
    }
}
