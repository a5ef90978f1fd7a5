//! The real `kms` server over mutual TLS: authentication, authorization
//! with audit, health, reflection, metrics, limits, start-up refusals and
//! shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;

use kms::audit;
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use kms_tests::server::{Setup, expect_startup_failure};
use kms_tests::{ALL_DBS, DbKind, http_get};
use tonic::Code;

async fn audit_store(setup: &Setup) -> Store {
    Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_capabilities_over_mtls() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let mut admin = AdminServiceClient::new(setup.channel(&server, "operator").await);
    let status = admin.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
    let module = status.module.unwrap();
    assert_eq!(module.token_label, setup.token.label);
    assert_eq!(module.state, "up");
    assert_eq!(module.sessions_max, 2);
    let db = status.database.unwrap();
    assert_eq!((db.backend.as_str(), db.reachable, db.schema_version), ("sqlite", true, 4));

    let caps = admin.get_capabilities(pb::GetCapabilitiesRequest {}).await.unwrap().into_inner();
    let row = |n: &str| caps.capabilities.iter().find(|c| c.name == n).unwrap().clone();
    assert!(row("des3_ecb_encrypt_data").available);
    assert_eq!(row("des3_ecb_encrypt_data").mechanism, 0x1102);
    let des3_wrap = caps
        .wrapping
        .iter()
        .find(|w| w.wrapping_key_type == "DES2" && w.mechanism == "CKM_DES3_ECB" && w.wrapped_key_type == "DES2")
        .unwrap();
    match setup.token.module {
        // DESIGN.md §5: no national algorithms, and no wrapping under 3DES.
        kms_tests::token::Module::SoftHsm => {
            assert!(!row("sm4_ecb").available);
            assert!(!des3_wrap.supported);
            assert_eq!(des3_wrap.error, "CKR_MECHANISM_INVALID");
        }
        kms_tests::token::Module::HsmSim => {
            for n in [
                "sm4_ecb",
                "sm4_ecb_encrypt_data",
                "sm3",
                "sm2_sign",
                "an10922_aes128",
                "key_xor",
                "sp800_108_counter_kdf",
            ] {
                assert!(row(n).available, "{n}: {:?}", row(n));
            }
            assert!(des3_wrap.supported, "{des3_wrap:?}");
        }
    }

    let who = admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().principal.unwrap();
    assert_eq!(
        (who.name.as_str(), who.role.as_str(), who.tenant.as_str()),
        ("operator-client", "operator", "city-3301")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_unauthenticated_and_audited() {
    // The handshake lets a connection without a client certificate through
    // (a reader enrolls that way, with a token); every other call on it is
    // refused with UNAUTHENTICATED and audited.
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let ca = std::fs::read(&setup.pki.ca_pem).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", server.grpc_port))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint.connect().await.unwrap();
    let err = AdminServiceClient::new(channel.clone()).who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = kms_proto::v1::key_service_client::KeyServiceClient::new(channel)
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let store = audit_store(&setup).await;
    let records = audit::read_range(&store, 1, audit::count(&store).await.unwrap()).await.unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.action == "AdminService/WhoAmI" && r.outcome == audit::Outcome::Unauthenticated.as_str()),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused_at_the_handshake() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let foreign = kms_tests::pki::TestPki::new(setup.dir.path(), "foreign");
    let cert = foreign.client("intruder", Some("operator"), Some("city-3301"));
    let opts = setup.client_options(&server, &cert);
    let refused = match opts.connect().await {
        Err(_) => true,
        Ok(channel) => AdminServiceClient::new(channel).get_status(pb::GetStatusRequest {}).await.is_err(),
    };
    assert!(refused, "a certificate from a foreign CA got an answer");
    assert!(server.log_contains("TLS handshake refused"), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_call_gets_permission_denied_and_is_audited() {
    for kind in ALL_DBS {
        let setup = Setup::new(kind).await;
        let server = setup.start();
        let mut reader = AdminServiceClient::new(setup.channel(&server, "reader").await);
        let err = reader.get_status(pb::GetStatusRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{kind:?}: {err:?}");
        assert!(err.message().contains("reader"), "{}", err.message());
        // WhoAmI is open to every certified principal.
        reader.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

        let store = audit_store(&setup).await;
        let records = audit::read_range(&store, 1, 100).await.unwrap();
        let denial = records.iter().find(|r| r.outcome == "denied").expect("denial audited");
        assert_eq!(denial.action, "admin.GetStatus");
        assert_eq!(denial.principal, "reader-client");
        assert_eq!((denial.role.as_str(), denial.tenant.as_str()), ("reader", "city-3301"));
        assert!(denial.reason.contains("no policy permits"), "{}", denial.reason);
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_role_is_unauthenticated_and_audited() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let cert = setup.pki.client("no-role", None, Some("city-3301"));
    let mut client = AdminServiceClient::new(setup.client_options(&server, &cert).connect().await.unwrap());
    let err = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("role"), "{}", err.message());
    let store = audit_store(&setup).await;
    let records = audit::read_range(&store, 1, 100).await.unwrap();
    assert!(records.iter().any(|r| r.outcome == "unauthenticated" && r.reason.contains("role")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let channel = setup.channel(&server, "auditor").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "kms.v1.AdminService"] {
        let r =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream_once(request)).await.unwrap().into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "kms.v1.AdminService",
        "kms.v1.KeyService",
        "kms.v1.CertificateService",
        "kms.v1.PersonalizationService",
        "kms.v1.SecureChannelService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::IntoStreamingRequest<Message = T> {
    tonic::Request::new(futures_once(item))
}

fn futures_once<T>(item: T) -> impl tokio_stream_like::Stream<Item = T> {
    tokio_stream_like::iter(vec![item])
}

mod tokio_stream_like {
    pub use tokio_stream::{Stream, iter};
}

/// A WhoAmIRequest padded with an unknown field, to exceed the size limit.
#[derive(Clone, PartialEq, prost::Message)]
struct PaddedRequest {
    #[prost(bytes = "vec", tag = "15")]
    pad: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_and_the_server_carries_on() {
    let mut setup = Setup::new(DbKind::Sqlite).await;
    setup.extra_config = String::new();
    let config = setup.write_config();
    let text = std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nmax_message_bytes = 65536\n");
    std::fs::write(&config, text).unwrap();
    let server = kms_tests::server::Server::spawn(&config, setup.dir.path());
    let channel = setup.channel(&server, "operator").await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/kms.v1.AdminService/WhoAmI");
    let codec: tonic_prost::ProstCodec<PaddedRequest, pb::WhoAmIResponse> = tonic_prost::ProstCodec::default();
    let err = grpc
        .unary(tonic::Request::new(PaddedRequest { pad: vec![7u8; 200_000] }), path.clone(), codec)
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
    // A request within the limit (unknown fields are ignored) still works.
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<PaddedRequest, pb::WhoAmIResponse> = tonic_prost::ProstCodec::default();
    grpc.unary(tonic::Request::new(PaddedRequest { pad: vec![7u8; 1000] }), path, codec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_liveness_on_the_ops_listener() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let mut admin = AdminServiceClient::new(setup.channel(&server, "operator").await);
    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let mut reader = AdminServiceClient::new(setup.channel(&server, "reader").await);
    let _ = reader.get_status(pb::GetStatusRequest {}).await;
    let metrics = http_get(server.ops_port, "/metrics");
    assert!(metrics.contains("kms_rpc_calls_total{rpc=\"AdminService/WhoAmI\",code=\"Ok\"} 1"), "{metrics}");
    assert!(metrics.contains("kms_rpc_calls_total{rpc=\"AdminService/GetStatus\",code=\"PermissionDenied\"} 1"));
    assert!(metrics.contains("kms_hsm_sessions_open"));
    assert!(metrics.contains("kms_hsm_module_up 1"));
    let health = http_get(server.ops_port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"hsm\":true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let mut server = setup.start();
    let mut admin = AdminServiceClient::new(setup.channel(&server, "operator").await);
    admin.get_status(pb::GetStatusRequest {}).await.unwrap();
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    assert!(server.log_contains("kms stopped"), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_refuses_to_start_naming_the_problem() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let config = setup.write_config();
    let original = std::fs::read_to_string(&config).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown field", original.replace("[server]\n", "[server]\nsurprise = 1\n"), "unknown field `surprise`"),
        (
            "missing module",
            original.replace(&setup.token.module.path().display().to_string(), "/nonexistent/libpkcs11.so"),
            "/nonexistent/libpkcs11.so",
        ),
        (
            "absent token",
            original.replace(&format!("token_label = \"{}\"", setup.token.label), "token_label = \"no-such-token\""),
            "no token labelled \"no-such-token\"",
        ),
        (
            "unreadable PIN file",
            original.replace(&setup.token.pin_file.display().to_string(), "/nonexistent/pin"),
            "cannot read hsm.pin_file /nonexistent/pin",
        ),
        (
            "unreachable database",
            original
                .replace(&setup.db.url, "postgres://kms:x@127.0.0.1:1/kms")
                .replace("[database]\n", "[database]\nconnect_timeout_secs = 1\n"),
            "cannot connect to database postgres://kms:***@127.0.0.1:1/kms",
        ),
        (
            "limit out of range",
            original.replace("[server]\n", "[server]\nmax_message_bytes = 1\n"),
            "server.max_message_bytes",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(&config, &text).unwrap();
        let stderr = expect_startup_failure(&config);
        assert!(stderr.contains(expected), "{what}: expected {expected:?} in:\n{stderr}");
    }
    // A wrong PIN.
    std::fs::write(&setup.token.pin_file, "wrong-pin-0").unwrap();
    std::fs::write(&config, &original).unwrap();
    let stderr = expect_startup_failure(&config);
    assert!(stderr.contains("CKR_PIN_INCORRECT"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_that_does_not_validate_refuses_to_start() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let policies = setup.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let root = kms_tests::workspace_root().join("policies");
    std::fs::copy(root.join("schema.cedarschema"), policies.join("schema.cedarschema")).unwrap();
    std::fs::write(
        policies.join("bad.cedar"),
        "permit (principal, action == Kms::Action::\"admin.NoSuchThing\", resource);\n",
    )
    .unwrap();
    let config = setup.write_config();
    let text =
        std::fs::read_to_string(&config).unwrap().replace(&root.display().to_string(), &policies.display().to_string());
    std::fs::write(&config, text).unwrap();
    let stderr = expect_startup_failure(&config);
    assert!(stderr.contains("admin.NoSuchThing"), "{stderr}");
    std::fs::write(policies.join("bad.cedar"), "permit (principal,\n action ==, resource);\n").unwrap();
    let stderr = expect_startup_failure(&config);
    assert!(stderr.contains("bad.cedar") && stderr.contains("line 2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_environment_which_overrides_the_file() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let config = setup.write_config();
    let unreachable = "postgres://kms:x@127.0.0.1:1/kms";
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&setup.db.url, unreachable)
        .replace("[database]\n", "[database]\nconnect_timeout_secs = 1\n");
    std::fs::write(&config, text).unwrap();
    // The file alone names an unreachable database.
    let stderr = kms_tests::server::expect_startup_failure(&config);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    // The environment wins over the file...
    let mut server =
        kms_tests::server::Server::spawn_with(&config, setup.dir.path(), &[("KMS_DATABASE_URL", &setup.db.url)], &[]);
    let mut admin = AdminServiceClient::new(setup.channel(&server, "operator").await);
    let db = admin.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().database.unwrap();
    assert!(db.reachable);
    assert!(server.terminate().success());
    // ... and a flag wins over the environment.
    let stderr = kms_tests::server::expect_startup_failure_with(
        &config,
        &[("KMS_DATABASE_URL", &setup.db.url)],
        &["--database-url", "postgres://flag:x@127.0.0.1:2/kms"],
    );
    assert!(stderr.contains("postgres://flag:***@127.0.0.1:2/kms"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_further_clients_back() {
    let mut setup = Setup::new(DbKind::Sqlite).await;
    setup.extra_config = String::new();
    let config = setup.write_config();
    let text = std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nmax_connections = 1\n");
    std::fs::write(&config, text).unwrap();
    let server = kms_tests::server::Server::spawn(&config, setup.dir.path());
    let first = setup.channel(&server, "operator").await;
    AdminServiceClient::new(first.clone()).who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    // A second connection is not served while the first holds the only slot.
    let cert = setup.pki.client("second", Some("operator"), Some("city-3301"));
    let opts = setup.client_options(&server, &cert);
    let second =
        tokio::time::timeout(std::time::Duration::from_millis(1500), async {
            let channel = opts.connect().await?;
            AdminServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.map_err(|e| {
                kms::cli::ClientError::Call { rpc: "WhoAmI", code: e.code(), message: e.message().to_owned() }
            })
        })
        .await;
    assert!(second.is_err() || second.as_ref().is_ok_and(|r| r.is_err()), "second connection was served");
    // Once the first goes away, the second is served.
    drop(first);
    let channel = opts.connect().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        AdminServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}),
    )
    .await
    .expect("served after the first connection closed")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let config = setup.write_config();
    let text =
        std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nhandshake_timeout_secs = 1\n");
    std::fs::write(&config, text).unwrap();
    let server = kms_tests::server::Server::spawn(&config, setup.dir.path());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.grpc_port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the connection");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900) && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(server.log_contains("TLS handshake timed out"), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_card_profile_refuses_to_start_naming_file_and_line() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let profiles = setup.dir.path().join("profiles");
    std::fs::create_dir_all(profiles.join("cards")).unwrap();
    std::fs::write(
        profiles.join("cards/city-card.toml"),
        "name = \"city-card\"\n\n[[role]]\nname = \"dpk\"\nmaster_key = \"city/1/dpk\"\nmethod = \"pboc-4des\"\nfactors = [\"asn\"]\n",
    )
    .unwrap();
    let config = setup.write_config();
    let root = kms_tests::workspace_root().join("profiles");
    let text =
        std::fs::read_to_string(&config).unwrap().replace(&root.display().to_string(), &profiles.display().to_string());
    std::fs::write(&config, text).unwrap();
    let stderr = expect_startup_failure(&config);
    assert!(stderr.contains("city-card.toml") && stderr.contains("line 6") && stderr.contains("pboc-4des"), "{stderr}");
}
