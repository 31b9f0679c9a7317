//! Running a statement inside its db span, with the `slow_query` fault's
//! pause.
//!
//! The fault must make the database itself slow, so the time lands inside
//! the statement's db CLIENT span, as a genuinely slow query's would. Rather
//! than a hand-written `pg_sleep` twin of every statement a fault can slow
//! down, [`query_with_pause`] (or [`query_with_pause_on`] in a transaction)
//! sends `SELECT pg_sleep($1)` first, on the same connection and inside the
//! same span, and the span's `db.query.text` shows both statements.

use std::borrow::Cow;
use std::time::Duration;

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tracelab_telemetry::db::{DbTarget, query_span};

/// What the `slow_query` fault sends before the statement it slows down.
pub const PAUSE_SQL: &str = "SELECT pg_sleep($1)";

/// The `db.query.text` of `sql` sent after a `pause`: both statements
/// separated by `; ` (how the semantic conventions write several statements
/// in one operation), or `sql` alone when there is no pause.
pub fn query_text(sql: &'static str, pause: Duration) -> Cow<'static, str> {
    if pause.is_zero() {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(format!("{PAUSE_SQL}; {sql}"))
    }
}

/// Runs `run(connection, sql)` inside a db span named `"{operation} {table}"`
/// (see [`query_span`]), on a connection taken from `pool` inside the span
/// (so a wait for a free connection shows there too). With a non-zero
/// `pause` (the `slow_query` fault) the database first sleeps that long on
/// the same connection.
///
/// `run` receives `sql` so that the statement it sends is the one the span
/// shows. Fails when no connection can be had, the pause fails, or `run`
/// fails.
pub async fn query_with_pause<T, F, Fut>(
    target: &DbTarget,
    operation: &'static str,
    table: &'static str,
    sql: &'static str,
    pause: Duration,
    pool: &PgPool,
    run: F,
) -> Result<T, sqlx::Error>
where
    // The connection is handed over rather than lent: a closure over a
    // borrowed connection needs a higher-ranked bound, and rustc cannot
    // prove the future of such a closure `Send` for axum's handlers.
    F: FnOnce(PoolConnection<Postgres>, &'static str) -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let text = query_text(sql, pause);
    query_span(target, operation, table, &text, || async move {
        let mut conn = pool.acquire().await?;
        sleep_in_database(&mut conn, pause).await?;
        run(conn, sql).await
    })
    .await
}

/// [`query_with_pause`] on a connection the caller holds, typically a
/// transaction's (`&mut tx`): the pause then happens inside the
/// transaction, holding its locks, as a slow statement in it would.
///
/// Fails when the pause or `run` fails.
pub async fn query_with_pause_on<'a, T, F, Fut>(
    target: &DbTarget,
    operation: &'static str,
    table: &'static str,
    sql: &'static str,
    pause: Duration,
    conn: &'a mut PgConnection,
    run: F,
) -> Result<T, sqlx::Error>
where
    F: FnOnce(&'a mut PgConnection, &'static str) -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let text = query_text(sql, pause);
    query_span(target, operation, table, &text, || async move {
        sleep_in_database(conn, pause).await?;
        run(conn, sql).await
    })
    .await
}

/// Sends [`PAUSE_SQL`] for a non-zero `pause`.
async fn sleep_in_database(conn: &mut PgConnection, pause: Duration) -> Result<(), sqlx::Error> {
    if !pause.is_zero() {
        sqlx::query(PAUSE_SQL)
            .bind(pause.as_secs_f64())
            .execute(conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use opentelemetry::Value;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    use super::*;
    use crate::testing::TestDatabase;

    /// Keeps every span ended in this test process.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Captured {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    impl Captured {
        fn install() -> Self {
            let captured = Captured::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(captured.clone())
                .build();
            opentelemetry::global::set_tracer_provider(provider);
            captured
        }

        /// `db.query.text` of the only span named `name`.
        fn query_text(&self, name: &str) -> String {
            let spans = self.0.lock().unwrap();
            let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "one {name} span expected: {spans:#?}");
            let text = found[0]
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "db.query.text")
                .map(|kv| kv.value.clone());
            match text {
                Some(Value::String(s)) => s.to_string(),
                other => panic!("no db.query.text string on {name}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_text_names_the_pause_only_when_there_is_one() {
        assert_eq!(query_text("SELECT 1", Duration::ZERO), "SELECT 1");
        assert_eq!(
            query_text("SELECT 1", Duration::from_millis(5)),
            "SELECT pg_sleep($1); SELECT 1"
        );
    }

    /// One test, not several: the tracer provider is process-global.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_pause_runs_in_the_database_inside_the_span_and_the_text_says_so() {
        let captured = Captured::install();
        let db = TestDatabase::create().await;
        let target = DbTarget::from_url(db.url());

        let started = Instant::now();
        let n = query_with_pause(
            &target,
            "SELECT",
            "products",
            "SELECT count(*) FROM products",
            Duration::from_millis(400),
            db.pool(),
            |mut conn, sql| async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&mut *conn)
                    .await
            },
        )
        .await
        .unwrap();
        assert!(n > 0, "the seeded catalogue is empty");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "no pause: {:?}",
            started.elapsed()
        );
        assert_eq!(
            captured.query_text("SELECT products"),
            "SELECT pg_sleep($1); SELECT count(*) FROM products"
        );

        // In a transaction: the pause happens on the transaction's connection.
        let mut tx = db.pool().begin().await.unwrap();
        let started = Instant::now();
        let orders = query_with_pause_on(
            &target,
            "SELECT",
            "orders",
            "SELECT count(*) FROM orders",
            Duration::from_millis(300),
            &mut tx,
            |conn, sql| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(orders, 0);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            captured.query_text("SELECT orders"),
            "SELECT pg_sleep($1); SELECT count(*) FROM orders"
        );

        // Without a pause: the statement alone, and no sleep.
        let started = Instant::now();
        query_with_pause(
            &target,
            "SELECT",
            "payments",
            "SELECT count(*) FROM payments",
            Duration::ZERO,
            db.pool(),
            |mut conn, sql| async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&mut *conn)
                    .await
            },
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(
            captured.query_text("SELECT payments"),
            "SELECT count(*) FROM payments"
        );
    }
}
