//! Answer keys of the scenario catalog (`scenarios/*.yaml`), checked on
//! real labs.
//!
//! For every scenario one test starts its own lab (`LabOptions::for_tests`:
//! free ports, its own database, exchange and queue), sends the scenario's
//! traffic with the scenario stopped and asserts that no check of its
//! signature finds anything, then starts it, sends the traffic again and
//! asserts that every check finds its signature (the span with the error,
//! the latency, the gap, the orphan root...), through the Tempo-compatible
//! API of the embedded collector. Invariants (one charge per
//! Idempotency-Key) must hold in both phases.
//!
//! Also here: the catalog's own rules (coverage of services, pitfalls and
//! compound incidents, every query accepted by the collector's TraceQL),
//! exercise grading end to end (wrong answers, accepted alternatives,
//! history), and how fast a fault takes effect after `fault set`.
//!
//! Needs Postgres and RabbitMQ on localhost and the service binaries
//! (`cargo build --workspace --bins`); without them the tests FAIL and say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracelab::console::{ConsoleConfig, ConsoleState, RunningConsole};
use tracelab::scenario::verify::{Target, verify};
use tracelab::scenario::{Catalog, Category, Pitfall};
use tracelab::supervisor::{Lab, LabOptions};

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn catalog() -> Catalog {
    Catalog::load(&catalog_dir()).unwrap_or_else(|e| panic!("the catalog must load: {e:#}"))
}

async fn start_lab() -> (Lab, LabOptions) {
    let opts = LabOptions::for_tests();
    let lab = Lab::start(opts.clone()).await.unwrap_or_else(|e| {
        panic!(
            "the answer-key tests need a running lab and could not start one: {e:#}\n\
             (build the services with `cargo build --workspace --bins`; start Postgres and RabbitMQ)"
        )
    });
    (lab, opts)
}

/// Verifies one scenario's answer key on a lab of its own.
async fn answer_key(id: &str) {
    let catalog = catalog();
    let scenario = catalog.get(id).expect("scenario in the catalog");
    let (lab, opts) = start_lab().await;
    let target = Target::for_lab(&lab, &opts).expect("target");
    let started = Instant::now();
    let result = verify(&target, scenario, Duration::from_secs(20)).await;
    let logs = match &result {
        Ok(v) if v.passed() => String::new(),
        _ => lab.dump_logs(),
    };
    lab.stop().await.expect("the lab stops cleanly");
    let v = result.unwrap_or_else(|e| panic!("verifying {id}: {e:#}\n{logs}"));
    eprintln!("{}(verified in {:.1?})", v.render(), started.elapsed());
    assert!(v.passed(), "{}\n{logs}", v.render());
}

macro_rules! answer_keys {
    ($($name:ident => $id:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                answer_key($id).await;
            }
        )*
        /// The scenarios with an answer-key test above.
        const TESTED: &[&str] = &[$($id),*];
    };
}

answer_keys! {
    answer_key_auth_verify_errors => "auth-verify-errors",
    answer_key_auth_verify_slow => "auth-verify-slow",
    answer_key_gateway_auth_propagation_break => "gateway-auth-propagation-break",
    answer_key_gateway_search_latency => "gateway-search-latency",
    answer_key_incident_cascade_pool => "incident-cascade-pool",
    answer_key_incident_invisible_search => "incident-invisible-search",
    answer_key_incident_red_herring_clock_skew => "incident-red-herring-clock-skew",
    answer_key_incident_retry_storm => "incident-retry-storm",
    answer_key_notification_consumer_stall => "notification-consumer-stall",
    answer_key_notification_dead_letter => "notification-dead-letter",
    answer_key_payment_save_slow => "payment-save-slow",
    answer_key_payment_validate_slow_query => "payment-validate-slow-query",
    answer_key_pitfall_high_cardinality => "pitfall-high-cardinality",
    answer_key_pitfall_propagation_break_queue => "pitfall-propagation-break-queue",
    answer_key_pitfall_sampling_miss => "pitfall-sampling-miss",
    answer_key_pitfall_tracing_overhead => "pitfall-tracing-overhead",
    answer_key_provider_outage => "provider-outage",
    answer_key_provider_rate_limit => "provider-rate-limit",
    answer_key_provider_slow => "provider-slow",
    answer_key_search_slow_query => "search-slow-query",
}

#[test]
fn every_scenario_has_an_answer_key_test() {
    let catalog = catalog();
    let mut ids: Vec<&str> = catalog.ids();
    let mut tested: Vec<&str> = TESTED.to_vec();
    ids.sort_unstable();
    tested.sort_unstable();
    assert_eq!(ids, tested, "add an answer_keys! line for every scenario");
}

#[test]
fn catalog_covers_services_pitfalls_and_incidents() {
    let catalog = catalog();
    assert!(
        catalog.scenarios.len() >= 16,
        "at least 16 scenarios, found {}",
        catalog.scenarios.len()
    );
    for service in tracelab::supervisor::SERVICES {
        assert!(
            catalog
                .scenarios
                .iter()
                .any(|s| s.category == Category::Single && s.faults[0].service == service),
            "no single-fault scenario on {service}"
        );
    }
    for pitfall in [
        Pitfall::HighCardinality,
        Pitfall::SamplingMiss,
        Pitfall::PropagationBreak,
        Pitfall::Overhead,
    ] {
        assert!(
            catalog.scenarios.iter().any(|s| s.pitfall == Some(pitfall)),
            "no scenario for the pitfall {pitfall:?}"
        );
    }
    let compound: Vec<_> = catalog
        .scenarios
        .iter()
        .filter(|s| s.category == Category::Compound)
        .collect();
    assert!(compound.len() >= 3, "at least three compound incidents");
}

/// The texts a learner sees before any hint (story, symptom) and the first
/// hint do not name the operation to find. Gateway answers are exempt: the
/// symptom is observed on a gateway route, which may be the answer itself.
#[test]
fn stories_and_symptoms_keep_the_answer_hidden() {
    for s in &catalog().scenarios {
        let Some(op) = &s.answer.operation else {
            continue;
        };
        if s.answer.service == "gateway" {
            continue;
        }
        let op = op.to_lowercase();
        for (what, text) in [
            ("story", &s.story),
            ("symptom", &s.symptom),
            ("hints[0]", &s.hints[0]),
        ] {
            for t in [&text.en, &text.ja] {
                assert!(
                    !t.to_lowercase().contains(&op),
                    "{}: {what} gives the answer {op:?} away",
                    s.id
                );
            }
        }
    }
}

/// Every TraceQL a scenario shows the learner or runs in its signature is
/// accepted by the embedded collector's TraceQL subset.
#[tokio::test]
async fn every_query_is_accepted_by_the_collector() {
    use tracelab_client::{SearchQuery, TempoClient};
    use tracelab_collector::{Collector, CollectorConfig};
    let collector = Collector::start(CollectorConfig::ephemeral())
        .await
        .expect("collector starts");
    let tempo = TempoClient::new(&format!("http://{}", collector.api_addr())).unwrap();
    let mut n = 0;
    for s in &catalog().scenarios {
        let mut queries = vec![s.query.clone()];
        for c in s.signature.iter().chain(&s.invariants) {
            queries.extend(c.queries());
        }
        for q in queries {
            let query = SearchQuery {
                q: Some(q.clone()),
                ..Default::default()
            };
            if let Err(e) = tempo.search(&query).await {
                panic!("{}: query {q} refused: {e:#}", s.id);
            }
            n += 1;
        }
    }
    collector.shutdown().await;
    assert!(n >= 40, "only {n} queries checked");
}

/// A fresh state directory for exercise tests.
fn temp_home() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tracelab-exercise-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Grading through the library: hidden state, hints, wrong answers, the
/// right service without or with another operation, accepted alternatives,
/// `--force`, reveal, and the history with the elapsed time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercises_are_graded_and_recorded() {
    use tracelab::exercise::{Begin, Exercises, Outcome};
    use tracelab::fault::FaultClient;
    use tracelab::scenario::Grade;

    let catalog = catalog();
    let (lab, _opts) = start_lab().await;
    let client = FaultClient::new(lab.admin_urls(), lab.admin_token()).unwrap();
    let home = temp_home();
    let ex = Exercises::new(&home);
    let begin = |id: &'static str, force: bool| {
        let scenario = catalog.get(id).unwrap();
        let client = &client;
        let gateway = lab.gateway_url();
        let tempo = lab.tempo_url();
        let ex = &ex;
        let catalog = &catalog;
        async move {
            ex.begin(
                catalog,
                Begin {
                    scenario,
                    client,
                    gateway: &gateway,
                    tempo: &tempo,
                    seed: None,
                    force,
                },
            )
            .await
        }
    };

    // 1. payment-save-slow: wrong answers first.
    begin("payment-save-slow", false).await.expect("starts");
    let state_text = std::fs::read_to_string(home.join("exercise.json")).unwrap();
    assert!(
        !state_text.contains("payment-save-slow") && !state_text.contains("savePaymentResult"),
        "the state file gives the answer away: {state_text}"
    );
    let report = client.list("payment").await.unwrap();
    assert_eq!(report.faults.len(), 1, "the scenario's fault is set");
    assert!(
        !report.visible,
        "fault.injected events stay off in exercises"
    );
    let (_, hints, _) = ex.hint(&catalog).unwrap();
    assert_eq!(hints.len(), 1);
    let (state, hints, _) = ex.hint(&catalog).unwrap();
    assert_eq!((hints.len(), state.hints_unlocked), (2, 2));
    let grade = |service: &'static str, op: Option<&'static str>| {
        let ex = &ex;
        let catalog = &catalog;
        let token = lab.admin_token().to_string();
        async move { ex.answer(catalog, &token, service, op).await.unwrap().grade }
    };
    assert_eq!(grade("auth", Some("POST /verify")).await, Grade::Wrong);
    assert_eq!(grade("payment", None).await, Grade::NeedsOperation);
    assert_eq!(
        grade("payment", Some("validateOrder")).await,
        Grade::WrongOperation
    );
    assert!(
        ex.current().unwrap().is_some(),
        "still running after wrong answers"
    );
    assert_eq!(client.list("payment").await.unwrap().faults.len(), 1);
    assert_eq!(
        grade("Payment", Some("save_payment_result")).await,
        Grade::Correct
    );
    assert!(ex.current().unwrap().is_none(), "a correct answer ends it");
    assert!(
        client.list("payment").await.unwrap().faults.is_empty(),
        "a correct answer clears the faults"
    );

    // 2. provider-slow, solved with an accepted alternative.
    begin("provider-slow", false).await.expect("starts");
    assert_eq!(
        grade("payment", Some("callExternalPaymentAPI")).await,
        Grade::Correct
    );

    // 3. A running exercise is not replaced without --force.
    begin("search-slow-query", false).await.unwrap();
    let err = begin("auth-verify-slow", false).await.unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    begin("auth-verify-slow", true)
        .await
        .expect("--force replaces it");
    assert!(
        client.list("search").await.unwrap().faults.is_empty(),
        "the abandoned exercise's faults are cleared"
    );
    let revealed = ex
        .reveal(&catalog, lab.admin_token())
        .await
        .unwrap()
        .scenario;
    assert_eq!(revealed.id, "auth-verify-slow");
    assert!(client.list("auth").await.unwrap().faults.is_empty());

    let history = ex.history().unwrap();
    let summary: Vec<(u64, &str, Outcome, usize)> = history
        .iter()
        .map(|h| (h.number, h.scenario.as_str(), h.outcome, h.attempts.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "payment-save-slow", Outcome::Solved, 4),
            (2, "provider-slow", Outcome::Solved, 1),
            (3, "search-slow-query", Outcome::Abandoned, 0),
            (4, "auth-verify-slow", Outcome::Revealed, 0),
        ]
    );
    assert_eq!(history[0].hints_used, 2);
    assert!(history[0].elapsed_secs.is_some_and(|s| s > 0.0));
    assert!(history[2].elapsed_secs.is_none() && history[3].elapsed_secs.is_none());
    lab.stop().await.expect("clean stop");
    let _ = std::fs::remove_dir_all(&home);
}

fn cli(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelab"));
    cmd.env("TRACELAB_HOME", home)
        .env("TRACELAB_SCENARIOS", catalog_dir())
        .env("TRACELAB_LANG", "en")
        .env_remove("TRACELAB_ADMIN_TOKEN")
        .kill_on_drop(true);
    cmd
}

async fn run_cli(home: &Path, args: &[&str]) -> (bool, String) {
    let out = cli(home).args(args).output().await.expect("tracelab runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A lab console for `lab`, keeping its exercise state in `home`.
fn start_console(lab: &Lab, opts: &LabOptions, home: &Path) -> RunningConsole {
    let config = ConsoleConfig::for_lab(lab, opts, catalog(), home.to_path_buf());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    RunningConsole::start(listener, ConsoleState::new(config).unwrap()).unwrap()
}

/// The exercise from the command line, across processes: `start` returns
/// once the console holds the exercise and sends its background load;
/// `hint`, `status` and `answer` run in other processes against the same
/// console; a correct answer ends the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercise_cli_works_across_terminals() {
    let (lab, opts) = start_lab().await;
    let home = temp_home();
    let console = start_console(&lab, &opts, &home);
    let lab_url = console.url().to_string();
    // `--lab` before the positionals: `answer`'s operation takes the rest.
    let with_lab = |args: &[&str]| -> Vec<String> {
        let mut argv = vec![args[0].to_string(), "--lab".to_string(), lab_url.clone()];
        argv.extend(args[1..].iter().map(|a| a.to_string()));
        argv
    };
    let run = |args: Vec<String>| {
        let home = home.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&home, &refs).await
        }
    };

    let (ok, out) = run(with_lab(&[
        "exercise",
        "start",
        "--scenario",
        "provider-slow",
        "--rate",
        "2",
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("exercise #1 started"), "{out}");
    assert!(out.contains("symptom at the gateway"), "{out}");
    assert!(out.contains("background load (2 checkout/s"), "{out}");

    // Wait until the console's load reaches the slow provider.
    let tempo = tracelab_client::TempoClient::new(&lab.tempo_url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = tempo
            .search(&tracelab_client::SearchQuery {
                q: Some(
                    r#"{ resource.service.name = "payment-provider" && duration > 1s }"#.into(),
                ),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        if !found.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background load did not produce slow provider spans"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let (ok, out) = run(with_lab(&["exercise", "status"])).await;
    assert!(ok, "{out}");
    assert!(out.contains("exercise #1 running"), "{out}");
    assert!(
        !out.contains("POST /v1/charges") && !out.contains("provider-slow"),
        "status gives the answer away:\n{out}"
    );
    let (ok, out) = run(with_lab(&["exercise", "hint"])).await;
    assert!(ok && out.contains("hint 1/3"), "{out}");

    let (ok, out) = run(with_lab(&["fault", "list"])).await;
    assert!(ok && out.contains("details hidden"), "{out}");
    assert!(!out.contains("provider.charge"), "{out}");

    let (ok, out) = run(with_lab(&["exercise", "answer", "search"])).await;
    assert!(!ok, "a wrong answer exits non-zero:\n{out}");
    assert!(out.contains("not it"), "{out}");
    let (ok, out) = run(with_lab(&[
        "exercise",
        "answer",
        "payment-provider",
        "POST",
        "/v1/charges",
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("correct!"), "{out}");
    assert!(
        out.contains("resource.service.name = \"payment-provider\""),
        "{out}"
    );

    // The console's background load ended with the exercise.
    let load: serde_json::Value = reqwest::get(format!("{lab_url}/api/load"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(load["running"], false, "{load}");
    assert!(
        load["summary"]["total"]["ok"].as_u64().unwrap() > 0,
        "{load}"
    );

    let (ok, out) = run(with_lab(&["exercise", "history"])).await;
    assert!(
        ok && out.contains("provider-slow") && out.contains("solved"),
        "{out}"
    );
    console.stop().await.expect("the console stops");
    lab.stop().await.expect("clean stop");
    let _ = std::fs::remove_dir_all(&home);
}

/// A fault acts from the moment `fault set` returns: for a fault on each
/// service, the first request sent after the PUT returned shows the effect.
/// Prints how long that first request took (a figure, not a bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_fault_set_shows_the_fault() {
    use tracelab::fault::{FaultClient, spec_from_args};
    use tracelab::scenario::signature::DlqProbe;
    use tracelab::scenario::traffic::Driver;

    let (lab, opts) = start_lab().await;
    let client = FaultClient::new(lab.admin_urls(), lab.admin_token()).unwrap();
    let driver = Driver::new(&lab.gateway_url()).unwrap();
    // Warm up: logins cached, connections open.
    assert!(driver.checkout("4242424242424242").await.ok());
    assert!(driver.search().await.ok());

    let mut figures = Vec::new();
    // (service, point, kind, params, probe: checkout or search)
    let cases: [(&str, &str, &str, &[&str], bool); 5] = [
        ("gateway", "gateway.search", "error", &["status=591"], false),
        ("search", "search.query", "error", &["status=592"], false),
        ("auth", "auth.verify", "error", &["status=593"], true),
        (
            "payment",
            "payment.validate_order",
            "error",
            &["status=500"],
            true,
        ),
        ("payment-provider", "provider.charge", "outage", &[], true),
    ];
    for (service, point, kind, params, checkout) in cases {
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        let spec = spec_from_args(point, kind, &params, None, None, None).unwrap();
        client.set(service, &spec).await.unwrap();
        let put_returned = Instant::now();
        let record = if checkout {
            driver.checkout("4242424242424242").await
        } else {
            driver.search().await
        };
        let took = put_returned.elapsed();
        assert!(
            !record.ok(),
            "{service}: the first request after `fault set` did not show the fault: {record:?}"
        );
        figures.push((service, took));
        client.clear_point(service, point).await.unwrap();
        let cleared = if checkout {
            driver.checkout("4242424242424242").await
        } else {
            driver.search().await
        };
        assert!(
            cleared.ok(),
            "{service}: still failing after clear: {cleared:?}"
        );
    }

    // notification acts on the queue: the first checkout after the PUT
    // must end in the dead-letter queue.
    let dlq = format!("{}.dlq", lab.queue());
    let before = DlqProbe::depth(&opts.amqp_url, &dlq).await.unwrap();
    let spec =
        spec_from_args("notification.consume", "dead_letter", &[], None, None, None).unwrap();
    client.set("notification", &spec).await.unwrap();
    let put_returned = Instant::now();
    assert!(driver.checkout("4242424242424242").await.ok());
    loop {
        let depth = DlqProbe::depth(&opts.amqp_url, &dlq).await.unwrap();
        if depth > before {
            break;
        }
        assert!(
            put_returned.elapsed() < Duration::from_secs(30),
            "notification: the checkout after `fault set` was not dead-lettered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    figures.push(("notification", put_returned.elapsed()));
    client.clear_all().await.unwrap();

    // A telemetry fault (applied by a task following the registry): the
    // first search after the PUT must leave no search span.
    let tempo = tracelab_client::TempoClient::new(&lab.tempo_url()).unwrap();
    let spec = spec_from_args("search.telemetry", "drop_spans", &[], None, None, None).unwrap();
    client.set("search", &spec).await.unwrap();
    let put_returned = Instant::now();
    let record = driver.search().await;
    let took = put_returned.elapsed();
    let trace_id = record.trace_id.clone().expect("trace id");
    tempo
        .wait_for_trace(&trace_id, |t| !t.is_empty(), Duration::from_secs(30))
        .await
        .unwrap();
    client.clear_all().await.unwrap();
    // search exports its spans in order: once a later search's span is in,
    // a span of the first search would be in too, had it been kept.
    let later = driver.search().await.trace_id.expect("trace id");
    tempo
        .wait_for_trace(
            &later,
            |t| t.services().contains("search"),
            Duration::from_secs(30),
        )
        .await
        .expect("search spans export again once the fault is cleared");
    let trace = tempo.get_trace(&trace_id).await.unwrap().expect("trace");
    assert!(
        !trace.services().contains("search"),
        "search.telemetry drop_spans: the first search after `fault set` still exported search spans"
    );
    figures.push(("search (telemetry)", took));
    client.clear_all().await.unwrap();

    for (service, took) in &figures {
        eprintln!(
            "fault effect on {service:<20} first affected request answered {:>6.1} ms after the PUT returned",
            took.as_secs_f64() * 1000.0
        );
    }
    lab.stop().await.expect("clean stop");
}
