//! Metadata storage: SQLite (the embedded default, a file in the data
//! directory) or PostgreSQL (for several replicas), through sqlx's `Any`
//! driver with one migration directory per backend, embedded in the binary.
//!
//! The database holds metadata only: never a clear key value.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::config::DatabaseConfig;

/// A database transaction; audit records are appended inside the same
/// transaction as the work they describe.
pub type Tx = Transaction<'static, Any>;

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or opened.
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// Embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// Stored data is not what the code wrote (for example an audit record
    /// whose details are not JSON).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The metadata store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Removes the password from a database URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Connects and applies the embedded migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if cfg.url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let synchronous = match cfg.sqlite_synchronous {
            crate::config::SqliteSync::Full => "PRAGMA synchronous = FULL",
            crate::config::SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
        };
        let url = match backend {
            Backend::Sqlite if !cfg.url.contains("mode=") => {
                let sep = if cfg.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", cfg.url)
            }
            _ => cfg.url.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // why: WAL lets readers run beside the one writer; the busy
                        // timeout makes a second writer wait instead of failing.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query(synchronous).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect { url: redact_url(&cfg.url), source })?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// The pool, for queries that need no transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True when a round trip succeeds.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The newest migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("v")?)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://kms:s3cret@db:5432/kms"), "postgres://kms:***@db:5432/kms");
        assert_eq!(redact_url("sqlite:///var/lib/kms/kms.db"), "sqlite:///var/lib/kms/kms.db");
    }
}
