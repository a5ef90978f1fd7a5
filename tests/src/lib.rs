//! The end-to-end harness. It starts the real `kms` binary against real
//! PKCS#11 modules (SoftHSM; hsm-sim when built) and real databases
//! (SQLite; PostgreSQL from `KMS_TEST_POSTGRES_URL`), and talks to it over
//! mutual TLS like any client.
//!
//! Run it through `scripts/test`, which installs and starts what it needs.
//! Each test runs in its own process (cargo-nextest), with its own token and
//! database.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// The newest migration of `kms/migrations` (both engines).
pub const LATEST_SCHEMA: i64 = 5;

pub mod bench;
pub mod ca;
pub mod ceremony;
pub mod pki;
pub mod server;
pub mod softhsm;
pub mod token;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// Random lower-case hex, for unique names.
pub fn unique(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("randomness");
    hex::encode(b)
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `KMS_TEST_POSTGRES_URL`.
    Postgres,
}

/// A fresh database for one test; the PostgreSQL one is dropped at the end.
pub struct TestDb {
    /// URL the service should use.
    pub url: String,
    drop_pg: Option<(String, String)>,
}

impl TestDb {
    /// Creates a fresh database of `kind` (SQLite files go in `dir`).
    pub async fn new(kind: DbKind, dir: &std::path::Path) -> TestDb {
        match kind {
            DbKind::Sqlite => TestDb { url: format!("sqlite://{}", dir.join("kms.db").display()), drop_pg: None },
            DbKind::Postgres => {
                let admin = std::env::var("KMS_TEST_POSTGRES_URL").expect(
                    "KMS_TEST_POSTGRES_URL is not set: run the suite through scripts/test, which starts PostgreSQL",
                );
                sqlx::any::install_default_drivers();
                let name = format!("kms_test_{}", unique(6));
                let pool = sqlx::AnyPool::connect(&admin).await.expect("connect to PostgreSQL admin URL");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).expect("URL with a database name");
                TestDb { url: format!("{base}/{name}"), drop_pg: Some((admin, name)) }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.drop_pg.take() {
            // Best effort: a separate thread with its own runtime, so Drop works
            // inside or outside an async context.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                    }
                });
                Ok::<(), std::io::Error>(())
            })
            .join();
        }
    }
}

/// Both database kinds, for table-driven tests.
pub const ALL_DBS: [DbKind; 2] = [DbKind::Sqlite, DbKind::Postgres];

/// A plain HTTP/1.1 GET on 127.0.0.1 (the operations listener); returns the
/// whole response, status line first.
pub fn http_get(port: u16, path: &str) -> String {
    String::from_utf8_lossy(&http_get_raw(port, path)).into_owned()
}

fn http_get_raw(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// A GET that must answer 200; returns the body bytes (for DER such as CRLs).
pub fn http_get_bytes(port: u16, path: &str) -> Vec<u8> {
    let raw = http_get_raw(port, path);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response has a header");
    let head = String::from_utf8_lossy(&raw[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked body: {head}");
    raw[split + 4..].to_vec()
}
