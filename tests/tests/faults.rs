//! Reliability against a real module that fails: hsm-sim's fault injection
//! takes the "device" away while the service runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use kms_proto::v1::key_service_client::KeyServiceClient;
use kms_tests::server::Setup;
use kms_tests::token::Module;
use kms_tests::{DbKind, http_get};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_outage_fails_fast_and_recovers_without_a_restart() {
    let mut setup = Setup::with_module(Module::HsmSim, DbKind::Sqlite).await;
    let outage = setup.dir.path().join("outage");
    setup.token.hsm_sim_faults(&format!(
        "while_file = {:?}\nwhile_file_rv = \"CKR_DEVICE_REMOVED\"\n",
        outage.display().to_string()
    ));
    setup.extra_config =
        "[hsm.recovery]\nmax_attempts = 3\ninitial_backoff_ms = 20\nmax_backoff_ms = 50\ndown_retry_ms = 300\n".into();
    let server = setup.start();
    let mut admin = AdminServiceClient::new(setup.channel(&server, "operator").await);
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    let create = |name: &str| pb::CreateKeyRequest {
        name: name.into(),
        algorithm: pb::KeyAlgorithm::Aes128 as i32,
        purpose: pb::KeyPurpose::TransportExport as i32,
        kcv_method: String::new(),
    };
    so.create_key(create("partner/p/kek-1")).await.unwrap();

    // The device goes away.
    std::fs::write(&outage, b"").unwrap();
    let err = so.create_key(create("partner/p/kek-2")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let status = admin.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().module.unwrap();
    assert_eq!(status.state, "down");
    assert!(status.error.contains("unavailable"), "{}", status.error);
    // While down, calls fail at once instead of waiting on the module.
    let started = Instant::now();
    let err = so.create_key(create("partner/p/kek-2")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    assert!(http_get(server.ops_port, "/healthz").starts_with("HTTP/1.1 503"));
    assert!(http_get(server.ops_port, "/metrics").contains("kms_hsm_module_up 0"));
    // Nothing half-made: the failed key is not in the catalogue.
    let missing =
        so.get_key(pb::GetKeyRequest { key: Some(pb::KeyRef { name: "partner/p/kek-2".into(), version: 0 }) }).await;
    assert!(missing.is_err());

    // The device comes back; the service recovers by itself.
    std::fs::remove_file(&outage).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match so.create_key(create("partner/p/kek-2")).await {
            Ok(k) => {
                assert_eq!(k.into_inner().version, 1);
                break;
            }
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    }
    let status = admin.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().module.unwrap();
    assert_eq!(status.state, "up", "{status:?}");
    // The session that met the outage was dropped; the pool serves on and
    // reopens sessions when it runs short.
    assert!(status.sessions_open >= 1, "{status:?}");
    assert!(http_get(server.ops_port, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(server.ops_port, "/metrics").contains("kms_hsm_module_up 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_slower_than_the_request_timeout_is_cut_off() {
    let setup = Setup::with_module(Module::HsmSim, DbKind::Sqlite).await;
    let slow = setup.dir.path().join("slow");
    // Every PKCS#11 call takes 700 ms while the file exists; a key creation
    // needs several calls.
    setup.token.hsm_sim_faults(&format!("latency_ms = 700\nlatency_file = {:?}\n", slow.display().to_string()));
    let server = setup.start();
    let config = setup.dir.path().join("kms.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nrequest_timeout_secs = 1\n");
    std::fs::write(&config, text).unwrap();
    drop(server);
    let server = kms_tests::server::Server::spawn(&config, setup.dir.path());
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    let create = |name: &str| pb::CreateKeyRequest {
        name: name.into(),
        algorithm: pb::KeyAlgorithm::Aes128 as i32,
        purpose: pb::KeyPurpose::TransportExport as i32,
        kcv_method: String::new(),
    };
    so.create_key(create("partner/p/fast")).await.unwrap();
    std::fs::write(&slow, b"").unwrap();
    let started = Instant::now();
    let err = so.create_key(create("partner/p/slow")).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err.code(), Code::Cancelled | Code::DeadlineExceeded), "{err:?}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500), "{waited:?}");
    std::fs::remove_file(&slow).unwrap();
    // The service carries on.
    so.create_key(create("partner/p/after")).await.unwrap();
}
