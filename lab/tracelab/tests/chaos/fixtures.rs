//! The fixtures themselves: a private server stops, starts again on its
//! data, dies to `kill -9` with every process of it, coexists with another
//! of its kind, says what is missing when it is not installed, and leaves
//! nothing behind when the test holding it panics.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};

use super::postgres::{self, PrivatePostgres};
use super::procs::{OWNER_FILE, SCRATCH_ENV, Scratch, group_members, processes_of, reap_orphans};
use super::rabbitmq::{self, PrivateRabbit, queue_depth};

async fn pg_answers(url: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await,
        Ok(Ok(_))
    )
}

async fn count_rows(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.expect("connects");
    sqlx::query_scalar("SELECT count(*) FROM chaos_probe")
        .fetch_one(&mut conn)
        .await
        .expect("chaos_probe is there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_stops_restarts_and_dies_to_kill_9_keeping_its_data() {
    let mut pg = PrivatePostgres::start().await.expect("private Postgres");
    assert_ne!(pg.port(), 5432, "never the machine's server");
    assert!(
        processes_of(pg.dir()).contains(&pg.pid().unwrap()),
        "an orphaned postmaster would be found and reaped"
    );
    let url = pg.url("postgres");
    let mut conn = PgConnection::connect(&url).await.expect("connects");
    sqlx::raw_sql("CREATE TABLE chaos_probe (n int); INSERT INTO chaos_probe VALUES (1)")
        .execute(&mut conn)
        .await
        .expect("writes");
    conn.close().await.ok();

    let pid = pg.pid().expect("running");
    pg.stop().await;
    assert!(group_members(pid).is_empty(), "stop leaves no process");
    assert!(!pg_answers(&url).await, "stopped means unreachable");
    pg.start_again().await.expect("starts again");
    assert_eq!(count_rows(&url).await, 1, "the data survives a stop");

    let pid = pg.pid().expect("running");
    let mut held = PgConnection::connect(&url).await.expect("connects");
    pg.kill().await;
    assert!(
        group_members(pid).is_empty(),
        "kill -9 takes the postmaster and its backends"
    );
    assert!(
        sqlx::query("SELECT 1").execute(&mut held).await.is_err(),
        "a session of the killed server is dead"
    );
    pg.start_again().await.expect("starts again after kill -9");
    assert_eq!(count_rows(&url).await, 1, "crash recovery keeps the data");

    let (pid, dir) = (pg.pid().expect("running"), pg.dir().to_path_buf());
    drop(pg);
    assert!(group_members(pid).is_empty(), "drop kills the server");
    assert!(!dir.exists(), "drop removes {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_private_rabbitmq_nodes_coexist_and_restart_alone() {
    let (a, b) = tokio::join!(PrivateRabbit::start(), PrivateRabbit::start());
    let (mut a, b) = (a.expect("node a"), b.expect("node b"));
    assert_ne!(a.node(), b.node());
    assert_ne!(a.amqp_url(), b.amqp_url());
    assert!(!a.amqp_url().contains(":5672/"), "never the machine's node");
    let found = processes_of(a.dir());
    let members = group_members(a.pid().unwrap());
    assert!(
        members.len() > 1 && members.iter().all(|p| found.contains(p)),
        "every process of an orphaned node would be found and reaped: {members:?} vs {found:?}"
    );

    // A durable queue with a persistent message on a; b knows nothing of it.
    let conn = lapin::Connection::connect(&a.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("a accepts AMQP");
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "chaos.probe".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            "chaos.probe".into(),
            lapin::options::BasicPublishOptions::default(),
            b"kept",
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    assert!(
        queue_depth(&b.amqp_url(), "chaos.probe").await.is_err(),
        "the queue is a's alone"
    );

    // a restarts and is killed; b keeps serving throughout.
    a.stop().await;
    assert!(queue_depth(&b.amqp_url(), "chaos.probe").await.is_err());
    a.start_again().await.expect("a boots again");
    assert_eq!(
        queue_depth(&a.amqp_url(), "chaos.probe").await.unwrap(),
        1,
        "a durable queue and its persistent message survive a restart"
    );
    let pid = a.pid().expect("running");
    a.kill().await;
    assert!(
        group_members(pid).is_empty(),
        "kill -9 takes the whole node"
    );
    let refused =
        lapin::Connection::connect(&a.amqp_url(), lapin::ConnectionProperties::default()).await;
    assert!(refused.is_err(), "a killed node accepts nothing");
    assert!(
        queue_depth(&b.amqp_url(), "chaos.probe").await.is_err(),
        "b still answers (the queue is not there)"
    );
    a.start_again().await.expect("a boots again after kill -9");

    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    drop((a, b));
    for (dir, pid) in dirs.iter().zip(pids) {
        assert!(group_members(pid).is_empty(), "drop kills node {pid}");
        assert!(!dir.exists(), "drop removes {}", dir.display());
    }
}

#[test]
fn missing_binaries_are_explained() {
    let nowhere = [PathBuf::from("/nonexistent/tracelab-chaos")];
    let err = postgres::find_bindir(&nowhere).unwrap_err().to_string();
    assert!(err.contains("initdb"), "{err}");
    assert!(err.contains("/nonexistent/tracelab-chaos"), "{err}");
    assert!(err.contains("apt-get install postgresql"), "{err}");
    let err = rabbitmq::find_server(&nowhere).unwrap_err().to_string();
    assert!(err.contains("rabbitmq-server"), "{err}");
    assert!(err.contains("/nonexistent/tracelab-chaos"), "{err}");
    assert!(err.contains("apt-get install rabbitmq-server"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_server_and_no_directory() {
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let (pg, rabbit) = tokio::join!(PrivatePostgres::start(), PrivateRabbit::start());
        let (pg, rabbit) = (pg.expect("postgres"), rabbit.expect("rabbitmq"));
        tx.send([
            (pg.pid().unwrap(), pg.dir().to_path_buf()),
            (rabbit.pid().unwrap(), rabbit.dir().to_path_buf()),
        ])
        .unwrap();
        panic!("a test failing with its servers running");
    });
    let err = task.await.expect_err("the task panicked");
    assert!(err.is_panic());
    for (pid, dir) in rx.recv().expect("the servers had started") {
        assert!(group_members(pid).is_empty(), "process group {pid} is gone");
        assert!(!dir.exists(), "{} is gone", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_test_process_left_is_reaped_by_the_next_one() {
    // A scratch directory whose owner is gone, as after a test process was
    // SIGKILLed with its servers running: one found by its environment,
    // one by its command line.
    let scratch = Scratch::new("reap").expect("scratch dir");
    let dir = scratch.path().to_path_buf();
    std::fs::write(dir.join(OWNER_FILE), "4194305 1").unwrap();
    let by_env = std::process::Command::new("sleep")
        .arg("300")
        .env(SCRATCH_ENV, &dir)
        .spawn()
        .expect("sleep");
    let by_cmdline = std::process::Command::new("tail")
        .arg("-f")
        .arg(dir.join(OWNER_FILE))
        .spawn()
        .expect("tail");
    let mut children = [by_env, by_cmdline];
    // Until a child has exec'd, /proc shows the test binary's environment
    // and command line: wait until each shows what the reaper looks for.
    let shows = |pid: u32, file: &str, needle: &str| {
        std::fs::read(format!("/proc/{pid}/{file}"))
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
    };
    let env_entry = format!("{SCRATCH_ENV}={}", dir.display());
    let dir_text = dir.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(shows(children[0].id(), "environ", &env_entry)
        && shows(children[1].id(), "cmdline", &dir_text))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the children never exec'd"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reap_orphans();
    for child in &mut children {
        let status = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the orphaned process was killed");
        assert!(!status.success(), "{status}");
    }
    assert!(!dir.exists(), "{} removed", dir.display());
    // A live owner's directory is left alone.
    let live = Scratch::new("reap").expect("scratch dir");
    reap_orphans();
    assert!(live.path().exists());
}
