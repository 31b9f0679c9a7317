//! The lab's dependencies: Postgres (reachable, the database created, and
//! dropped again for tests) and RabbitMQ (reachable; a test lab's exchange
//! and queues deleted again).

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

fn pg_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).with_context(|| format!("invalid database URL {url:?}"))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn connect_maintenance(opts: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let maint = opts.clone().database("postgres");
    let where_ = format!("{}:{}", opts.get_host(), opts.get_port());
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&maint)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
            "cannot connect to Postgres at {where_}\n  start it with `pg_ctlcluster <version> main start` \
             (see `pg_lsclusters`), `service postgresql start`, or `docker compose up -d postgres rabbitmq`"
        ))),
        Err(_) => bail!(
            "Postgres at {where_} did not answer within 5s\n  start it with `pg_ctlcluster <version> main start` \
             (see `pg_lsclusters`), or `docker compose up -d postgres rabbitmq`"
        ),
    }
}

/// Checks Postgres is reachable and creates the URL's database if missing.
pub(super) async fn check_postgres_and_create_db(url: &str) -> anyhow::Result<()> {
    let opts = pg_options(url)?;
    let db = opts
        .get_database()
        .filter(|d| !d.is_empty())
        .with_context(|| format!("database URL {url:?} names no database"))?
        .to_string();
    let mut conn = connect_maintenance(&opts).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&db)
        .fetch_optional(&mut conn)
        .await
        .context("checking whether the database exists")?;
    if exists.is_none() {
        let sql = format!("CREATE DATABASE {}", quote_ident(&db));
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            // Another process may have created it between the check and now.
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !duplicate {
                return Err(anyhow::Error::new(e).context(format!("creating database {db}")));
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Deletes a test lab's queue, its dead-letter queue and its exchange.
pub(super) async fn delete_broker_objects(
    url: &str,
    exchange: &str,
    queue: &str,
) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    use lapin::types::ShortString;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await?;
    for q in [queue.to_string(), format!("{queue}.dlq")] {
        channel
            .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            ShortString::from(exchange.to_string()),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    let _ = conn.close(200, ShortString::from("test lab stopped")).await;
    Ok(())
}

/// Drops the URL's database, disconnecting its sessions (`WITH (FORCE)`).
pub(super) async fn drop_database(url: &str) -> anyhow::Result<()> {
    let opts = pg_options(url)?;
    let Some(db) = opts.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut conn = connect_maintenance(&opts).await?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&db));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {db}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Checks that the AMQP URL's host:port accepts TCP connections.
pub(super) async fn check_rabbitmq(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid AMQP URL {url:?}"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("AMQP URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port().unwrap_or(if parsed.scheme() == "amqps" {
        5671
    } else {
        5672
    });
    let hint = "start it with `rabbitmq-server -detached` (or `service rabbitmq-server start`, \
                or `docker compose up -d postgres rabbitmq`)";
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!("cannot connect to RabbitMQ at {host}:{port}: {e}\n  {hint}"),
        Err(_) => bail!("RabbitMQ at {host}:{port} did not answer within 5s\n  {hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_urls_checked() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(pg_options("not a url").is_err());
    }
}
