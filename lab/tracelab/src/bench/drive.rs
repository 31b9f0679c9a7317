//! The bench's traffic: closed-loop requests through the gateway, each
//! connection sending its next request as soon as the previous one is
//! answered, so throughput is what the lab can do.

use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::header::CONTENT_TYPE;
use tracelab_client::gateway::{self, CHECKOUT_PATH, LOGIN_PATH, join};
use tracelab_contract::users::DEMO_USERS;

use super::mode::Route;
use crate::load::histogram::Histogram;

/// The gateway, a logged-in user and the prepared request bodies.
#[derive(Debug, Clone)]
pub(super) struct Target {
    http: reqwest::Client,
    login_url: String,
    login_body: String,
    checkout_url: String,
    token: String,
}

/// What one burst of requests did.
#[derive(Debug, Clone)]
pub(super) struct Burst {
    /// Answered 2xx.
    pub(super) ok: u64,
    /// Answered otherwise, or not at all.
    pub(super) failed: u64,
    /// From the first request to the last answer.
    pub(super) elapsed: Duration,
    /// Latency of the 2xx answers, µs.
    pub(super) latency: Histogram,
}

impl Burst {
    /// 2xx answers per second.
    pub(super) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The checkout body: a plain amount on the demo card that is accepted.
const CHECKOUT_BODY: &str = r#"{"amount": 4980, "currency": "JPY", "card": "4242424242424242"}"#;

impl Target {
    /// Logs in at `gateway` as the first demo user.
    ///
    /// # Errors
    /// When the login is refused or the gateway does not answer.
    pub(super) async fn new(gateway: &str, connections: usize) -> anyhow::Result<Target> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the bench's HTTP client")?;
        let user = DEMO_USERS[0].username;
        let password = gateway::demo_password(user);
        let token = gateway::login(&http, gateway, user, &password).await?;
        Ok(Target {
            login_url: join(gateway, LOGIN_PATH),
            login_body: serde_json::json!({"username": user, "password": password}).to_string(),
            checkout_url: join(gateway, CHECKOUT_PATH),
            token,
            http,
        })
    }

    async fn send(&self, route: Route) -> bool {
        let request = match route {
            Route::Login => self
                .http
                .post(&self.login_url)
                .header(CONTENT_TYPE, "application/json")
                .body(self.login_body.clone()),
            Route::Checkout => self
                .http
                .post(&self.checkout_url)
                .bearer_auth(&self.token)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .header(CONTENT_TYPE, "application/json")
                .body(CHECKOUT_BODY),
        };
        match request.send().await {
            // Read the body: the answer is complete only then.
            Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
            Err(_) => false,
        }
    }

    /// Sends one checkout; its trace id (from the W3C `traceresponse`
    /// header) once the answer is read in full, `None` when it failed.
    pub(super) async fn checkout_trace(&self) -> Option<String> {
        let resp = self
            .http
            .post(&self.checkout_url)
            .bearer_auth(&self.token)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(CHECKOUT_BODY)
            .send()
            .await
            .ok()?;
        let trace_id = resp
            .headers()
            .get("traceresponse")?
            .to_str()
            .ok()?
            .split('-')
            .nth(1)?
            .to_owned();
        (resp.status().is_success() && resp.bytes().await.is_ok()).then_some(trace_id)
    }

    /// Sends `route` on `connections` connections for `duration`.
    pub(super) async fn closed_loop(
        &self,
        route: Route,
        connections: usize,
        duration: Duration,
    ) -> Burst {
        let start = Instant::now();
        let deadline = start + duration;
        let workers = (0..connections.max(1)).map(|_| {
            let target = self.clone();
            tokio::spawn(async move {
                let mut burst = Burst {
                    ok: 0,
                    failed: 0,
                    elapsed: Duration::ZERO,
                    latency: Histogram::new(),
                };
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if target.send(route).await {
                        burst.ok += 1;
                        burst.latency.record(t.elapsed().as_micros() as u64);
                    } else {
                        burst.failed += 1;
                    }
                }
                burst
            })
        });
        let mut total = Burst {
            ok: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
        };
        for done in futures::future::join_all(workers).await {
            // A worker cannot panic short of a bug in reqwest; count it lost.
            let Ok(b) = done else {
                total.failed += 1;
                continue;
            };
            total.ok += b.ok;
            total.failed += b.failed;
            total.latency.merge(&b.latency);
        }
        total.elapsed = start.elapsed();
        total
    }
}
