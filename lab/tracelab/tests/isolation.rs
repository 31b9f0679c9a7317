//! What a lab keeps to itself, with real service processes: its admin API
//! (on loopback listeners of its own, behind a token drawn for the lab,
//! never on a public port) and its events (an exchange and a queue named
//! after its database, so two labs on one broker never take each other's).
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); `Lab::start` says which is missing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection as _;
use tracelab::scenario::traffic::Driver;
use tracelab::supervisor::{Lab, LabOptions, SERVICES};

async fn get(url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_on_loopback_listeners_of_its_own_behind_the_lab_s_token() {
    let lab = Lab::start(LabOptions::for_tests())
        .await
        .expect("the lab starts (Postgres and RabbitMQ must be running)");
    let token = lab.admin_token().to_string();
    assert_eq!(token.len(), 64, "a token drawn for this lab");

    // The public ports answer /admin/... like any unknown route, even with
    // the right token: the gateway's public port included.
    for (name, url) in lab.services() {
        let (status, body) = get(&format!("{url}/admin/faults"), Some(&token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{name}");
        let (status, _) = get(&format!("{url}/health"), None).await;
        assert_eq!(status, StatusCode::OK, "{name}: /health stays public");
    }

    let admin = lab.admin_urls();
    let public = lab.services();
    assert_eq!(admin.len(), SERVICES.len(), "{admin:?}");
    for (name, url) in &admin {
        assert!(url.starts_with("http://127.0.0.1:"), "{name}: {url}");
        let (_, public_url) = public.iter().find(|(n, _)| n == name).unwrap();
        assert_ne!(url, public_url, "{name}: a listener of its own");
        let (status, body) = get(&format!("{url}/admin/faults"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["service"], *name);
        for wrong in [None, Some("tracelab-admin"), Some(&token[1..])] {
            let (status, _) = get(&format!("{url}/admin/faults"), wrong).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} with {wrong:?}");
        }
        let (status, _) = get(&format!("{url}/health"), None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{name}: health is public only"
        );
    }
    lab.stop().await.expect("the lab stops");
}

/// A service that crashes comes back with its admin listener where the lab
/// recorded it (the supervisor pins `TRACELAB_ADMIN_LISTEN` to the address
/// bound first), so `tracelab fault` keeps working after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_keeps_its_admin_listener() {
    use tracelab::supervisor::LabEvent;

    let lab = Lab::start(LabOptions::for_tests())
        .await
        .expect("the lab starts (Postgres and RabbitMQ must be running)");
    let token = lab.admin_token().to_string();
    let before = lab.admin_urls();
    let (_, admin) = before.iter().find(|(n, _)| *n == "auth").unwrap().clone();
    let mut events = lab.subscribe();
    let pid = lab.pid("auth").expect("auth runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(LabEvent::Recovered { child, .. }) = events.recv().await
                && child == "auth"
            {
                return;
            }
        }
    })
    .await
    .expect("auth is restarted");
    assert_ne!(lab.pid("auth"), Some(pid), "a new process");
    assert_eq!(lab.admin_urls(), before);
    let (status, body) = get(&format!("{admin}/admin/faults"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], "auth");
    lab.stop().await.expect("the lab stops");
}

/// Two labs on one broker, each with its exchange and queue named the way
/// a lab's are by default: every lab's checkouts are notified in that lab,
/// none in the other, and nothing is dead-lettered. Sharing one queue, the
/// two consumers would take turns at every event: with four checkouts a
/// lab, all eight landing in their own lab by chance is 1 in 256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labs_on_one_broker_never_take_each_other_s_events() {
    let defaults = LabOptions::default();
    let options = || LabOptions {
        exchange: defaults.exchange.clone(),
        queue: defaults.queue.clone(),
        ..LabOptions::for_tests()
    };
    let (opts_a, opts_b) = (options(), options());
    let amqp_url = opts_a.amqp_url.clone();
    let (a, b) = tokio::join!(Lab::start(opts_a), Lab::start(opts_b));
    let (a, b) = (a.expect("lab a starts"), b.expect("lab b starts"));
    assert_ne!(a.exchange(), b.exchange());
    assert_ne!(a.queue(), b.queue());

    let mut orders: Vec<(&Lab, &Lab, String)> = Vec::new();
    for (own, other) in [(&a, &b), (&b, &a)] {
        let driver = Driver::new(&own.gateway_url()).unwrap();
        for _ in 0..4 {
            let record = driver.checkout("4242424242424242").await;
            assert!(record.ok(), "{record:?}");
            orders.push((own, other, record.order_id.expect("an order id")));
        }
    }
    for (own, other, order) in &orders {
        wait_for_notifications(own, order, 1).await;
        assert_eq!(
            notifications(other, order).await,
            0,
            "order {order} crossed over"
        );
    }
    for lab in [&a, &b] {
        let dlq = tracelab::scenario::signature::DlqProbe::depth(
            &amqp_url,
            &format!("{}.dlq", lab.queue()),
        )
        .await
        .unwrap();
        assert_eq!(dlq, 0, "nothing dead-lettered in {}", lab.queue());
    }
    let (stop_a, stop_b) = tokio::join!(a.stop(), b.stop());
    stop_a.expect("lab a stops");
    stop_b.expect("lab b stops");
}

async fn notifications(lab: &Lab, order_id: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(lab.database_url())
        .await
        .expect("database");
    sqlx::query_scalar("SELECT count(*) FROM notifications WHERE order_id = $1")
        .bind(uuid::Uuid::parse_str(order_id).expect("order id"))
        .fetch_one(&mut conn)
        .await
        .expect("count query")
}

async fn wait_for_notifications(lab: &Lab, order_id: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = notifications(lab, order_id).await;
        if n == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} holds {n} notifications for order {order_id} after 30 s, expected {expected}",
            lab.database_url()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
