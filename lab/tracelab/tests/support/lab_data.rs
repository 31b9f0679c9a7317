//! Tidying up after a test lab that was not stopped cleanly.

use tracelab::supervisor::LabOptions;

/// Drops a database and deletes a lab's exchange and queues: what `tracelab
/// up` would leave after being killed.
pub(crate) async fn remove_lab_data(opts: &LabOptions) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    use lapin::types::ShortString;
    use sqlx::Connection as _;
    let url = reqwest::Url::parse(&opts.database_url).unwrap();
    let db = url.path().trim_start_matches('/').to_string();
    let mut maintenance = url.clone();
    maintenance.set_path("/postgres");
    if let Ok(mut conn) = sqlx::PgConnection::connect(maintenance.as_str()).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
    if let Ok(conn) =
        lapin::Connection::connect(&opts.amqp_url, lapin::ConnectionProperties::default()).await
        && let Ok(channel) = conn.create_channel().await
    {
        let queue = opts.queue_name();
        for q in [queue.clone(), format!("{queue}.dlq")] {
            let _ = channel
                .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(
                ShortString::from(opts.exchange_name()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}
