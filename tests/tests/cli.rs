//! The operator CLI (`kms keys ...`, `kms derive`, `kms certs ...`) as an
//! operator runs it: the real binary against the real server over mutual
//! TLS (and, for `kms certs enroll`, TLS without a client certificate), the
//! module of this run behind it. Output is parsed as JSON, exit codes are
//! checked, and what `kms certs` writes is checked with OpenSSL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kms_tests::ca::{make_csr, openssl, openssl_ok, write};
use kms_tests::server::{Server, Setup, kms_bin};
use kms_tests::token::Module;
use kms_tests::{DbKind, http_get_bytes};
use serde_json::Value;

const MOHURD_ROLES: [&str; 11] = ["dcck", "dcmk", "damk", "dpk", "dlk", "dtk", "dulk", "duk", "dpuk", "drpk", "diak"];
const KEK: &str = "partner/p1/kek";

/// Runs `kms` as one client certificate.
struct Cli {
    endpoint: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Cli {
    fn new(setup: &Setup, server: &Server, role: &str) -> Cli {
        let c = setup.pki.client(&format!("{role}-cli"), Some(role), Some("city-3301"));
        Cli::with_cert(setup, server, c.cert, c.key)
    }

    /// As the holder of `cert` (PEM, followed by its chain when the service
    /// issued it) and `key`.
    fn with_cert(setup: &Setup, server: &Server, cert: PathBuf, key: PathBuf) -> Cli {
        Cli { endpoint: format!("https://127.0.0.1:{}", server.grpc_port), ca: setup.pki.ca_pem.clone(), cert, key }
    }

    /// `kms <command...> <client flags> <rest...>`, standard input empty (not a terminal).
    fn run(&self, command: &[&str], rest: &[&str]) -> Output {
        let mut cmd = Command::new(kms_bin());
        cmd.args(command)
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(rest)
            .env_remove("KMS_PROFILE")
            .stdin(Stdio::null());
        cmd.output().expect("run kms")
    }

    /// Like [`Cli::run`], expecting success; returns standard output.
    fn ok(&self, command: &[&str], rest: &[&str]) -> String {
        let out = self.run(command, rest);
        assert!(out.status.success(), "kms {command:?} {rest:?}: {}\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The catalogue the derivation tests need, made through the CLI: an
/// AES-128 export transport key and the eleven MOHURD master keys.
fn create_catalogue(so: &Cli) {
    let kek = json_lines(
        &so.ok(&["keys", "create", KEK], &["--algorithm", "aes128", "--purpose", "transport-export", "--json"]),
    );
    assert_eq!(kek.len(), 1);
    assert_eq!(kek[0]["purpose"], "transport-export");
    for role in MOHURD_ROLES {
        let name = format!("city/3301/mohurd/{role}");
        let k = json_lines(
            &so.ok(&["keys", "create", &name], &["--algorithm", "des2", "--purpose", "derivation-master", "--json"]),
        );
        assert_eq!(
            (k[0]["name"].as_str(), k[0]["version"].as_u64(), k[0]["algorithm"].as_str()),
            (Some(name.as_str()), Some(1), Some("des2"))
        );
        assert_eq!(k[0]["kcv"]["method"], "DES3_ZERO");
        assert_eq!(k[0]["origin"], "generated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_catalogue_through_the_cli() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let so = Cli::new(&setup, &server, "security_officer");
    let partner = Cli::new(&setup, &server, "issuance_partner");
    create_catalogue(&so);

    // Human output is an aligned table.
    let table = so.ok(&["keys", "get", "city/3301/mohurd/dpk"], &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("KCV") && lines[0].contains("ORIGIN"), "{table}");
    assert!(lines[1].starts_with("city/3301/mohurd/dpk"), "{table}");
    assert!(lines[1].contains("derivation-master") && lines[1].contains("DES3_ZERO:"), "{table}");
    assert_eq!(lines[0].find("VERSION"), lines[1].find(" 1 ").map(|i| i + 1), "columns align:\n{table}");

    let got = json_lines(&so.ok(&["keys", "get", "city/3301/mohurd/dpk@v1"], &["--json"]));
    assert_eq!(got[0]["state"], "active");
    assert_eq!(got[0]["kcv"]["value"].as_str().unwrap().len(), 6);

    // list follows the pages (5 per page) to the end, in name order.
    let all = json_lines(&so.ok(&["keys", "list"], &["--json", "--page-size", "5"]));
    assert_eq!(all.len(), 12);
    let names: Vec<&str> = all.iter().map(|k| k["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(names[11], KEK);
    let limited = json_lines(&so.ok(&["keys", "list"], &["--json", "--page-size", "2", "--limit", "3"]));
    assert_eq!(limited.len(), 3);
    let masters =
        json_lines(&so.ok(&["keys", "list"], &["--json", "--prefix", "city/3301/", "--purpose", "derivation-master"]));
    assert_eq!(masters.len(), 11);

    // Rotate, suspend, reactivate.
    let v2 = json_lines(&so.ok(&["keys", "rotate", "city/3301/mohurd/diak"], &["--json"]));
    assert_eq!(v2[0]["version"], 2);
    let s = json_lines(&so.ok(
        &["keys", "set-state", "city/3301/mohurd/diak@v2"],
        &["--state", "suspended", "--reason", "incident 17", "--json"],
    ));
    assert_eq!(s[0]["state"], "suspended");
    let suspended = json_lines(&so.ok(&["keys", "list"], &["--json", "--state", "suspended"]));
    assert_eq!(suspended.len(), 1);
    so.ok(&["keys", "set-state", "city/3301/mohurd/diak@v2"], &["--state", "active", "--reason", "resolved"]);
    // set-state needs an explicit version: a usage error (exit 2).
    let out = so.run(&["keys", "set-state", "city/3301/mohurd/diak"], &["--state", "active", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // destroy without --yes, standard input not a terminal: refused, nothing done.
    let out = so.run(&["keys", "destroy", "city/3301/mohurd/diak@v1"], &["--reason", "retired"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    let still = json_lines(&so.ok(&["keys", "get", "city/3301/mohurd/diak@v1"], &["--json"]));
    assert_eq!(still[0]["state"], "deprecated");
    let gone = json_lines(
        &so.ok(&["keys", "destroy", "city/3301/mohurd/diak@v1"], &["--reason", "retired", "--yes", "--json"]),
    );
    assert_eq!(gone[0]["state"], "destroyed");

    // Import and adopt reach the server with what was given: a key wrapped
    // under a transport key whose value nobody knows cannot match its KCV,
    // and there is no ceremony object of that label.
    so.ok(&["keys", "create", "city/3301/kek/import"], &["--algorithm", "aes128", "--purpose", "transport-import"]);
    let wrapped = dir_file(&setup, "dlk.wrapped", "00112233445566778899AABBCCDDEEFF0011223344556677\n");
    let out = so.run(
        &["keys", "import", "city/3301/mohurd/dlk"],
        &[
            "--algorithm",
            "des2",
            "--purpose",
            "derivation-master",
            "--transport-key",
            "city/3301/kek/import@v1",
            "--wrapped-file",
            wrapped.to_str().unwrap(),
            "--format",
            "aes-key-wrap",
            "--kcv",
            "DES3_ZERO:08D7B4",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ImportKey failed"), "{}", text(&out.stderr));
    let out = so.run(
        &["keys", "adopt", "city/3301/kek/other"],
        &[
            "--label",
            "no-such-label",
            "--algorithm",
            "aes128",
            "--purpose",
            "transport-import",
            "--kcv",
            "AES_ZERO:000000",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ImportKey failed"), "{}", text(&out.stderr));
    let out = so.run(
        &["keys", "import", "x/y"],
        &["--algorithm", "des2", "--purpose", "mac", "--transport-key", "k", "--wrapped-hex", "00", "--kcv", "nocolon"],
    );
    assert_eq!(out.status.code(), Some(2), "a malformed --kcv is a usage error: {}", text(&out.stderr));
    let unchanged = json_lines(&so.ok(&["keys", "list"], &["--json", "--prefix", "city/3301/mohurd/dlk"]));
    assert_eq!(unchanged.len(), 1, "nothing was imported");

    // Card profiles.
    let profiles = json_lines(&so.ok(&["keys", "profiles"], &["--json"]));
    let mohurd = profiles.iter().find(|p| p["name"] == "mohurd-epurse").expect("mohurd-epurse loaded");
    assert_eq!(mohurd["roles"].as_array().unwrap().len(), 11);

    // A partner may not manage the catalogue: the server's refusal, exit 1.
    let out = partner.run(&["keys", "create", "x/y"], &["--algorithm", "aes128", "--purpose", "mac"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("PermissionDenied"), "{}", text(&out.stderr));
    // A bad algorithm is clap's usage error.
    let out = so.run(&["keys", "create", "x/y"], &["--algorithm", "rot13", "--purpose", "mac"]);
    assert_eq!(out.status.code(), Some(2));
}

fn dir_file(setup: &Setup, name: &str, contents: &str) -> PathBuf {
    let path = setup.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn check_keys(line: &Value) {
    let keys = line["keys"].as_array().unwrap_or_else(|| panic!("no keys: {line}"));
    assert_eq!(keys.len(), 11, "{line}");
    for (k, role) in keys.iter().zip(MOHURD_ROLES) {
        assert_eq!(k["role"], role);
        assert_eq!(k["master_key"], format!("city/3301/mohurd/{role}"));
        assert_eq!(k["master_version"], 1);
        assert_eq!(k["algorithm"], "des2");
        assert_eq!(k["kcv_method"], "DES3_ZERO");
        assert_eq!(k["kcv"].as_str().unwrap().len(), 6);
        assert_eq!(k["format"], "aes-key-wrap");
        // RFC 3394 of a 16-byte key: 24 bytes.
        let wrapped = hex::decode(k["wrapped"].as_str().unwrap()).unwrap();
        assert_eq!(wrapped.len(), 24);
    }
}

fn write_cards(dir: &Path, n: u64, bad: usize) -> PathBuf {
    let mut csv = String::from("asn\n");
    for i in 0..n {
        if i as usize == bad {
            csv.push_str("45678901234567ZZ\n");
        } else {
            csv.push_str(&format!("{:016X}\n", 0x4567890123450000u64 + i));
        }
    }
    let path = dir.join("cards.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_one_card_and_a_batch_file() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let so = Cli::new(&setup, &server, "security_officer");
    let partner = Cli::new(&setup, &server, "issuance_partner");
    create_catalogue(&so);
    let dir = setup.dir.path();

    // One card.
    let one = json_lines(
        &partner.ok(&["derive"], &["--profile", "mohurd-epurse", "--transport-key", KEK, "--asn", "4567890123456701"]),
    );
    assert_eq!(one.len(), 1);
    assert_eq!((one[0]["index"].as_u64(), one[0]["replayed"].as_bool()), (Some(0), Some(false)));
    assert_eq!(one[0]["card"], serde_json::json!({"asn": "4567890123456701"}));
    check_keys(&one[0]);
    // Pinning a version gives the same keys (same master, same card).
    let pinned = json_lines(&partner.ok(
        &["derive"],
        &[
            "--profile",
            "mohurd-epurse",
            "--transport-key",
            &format!("{KEK}@v1"),
            "--pin",
            "city/3301/mohurd/dpk@v1",
            "--asn",
            "4567890123456701",
        ],
    ));
    assert_eq!(pinned[0]["keys"][3]["kcv"], one[0]["keys"][3]["kcv"]);
    // A single card the server refuses: an error line, exit 3.
    let out = partner.run(&["derive"], &["--profile", "mohurd-epurse", "--transport-key", KEK, "--asn", "4567"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let bad = json_lines(&text(&out.stdout));
    assert_eq!(bad[0]["error"]["code"], "INVALID_ARGUMENT");
    assert!(bad[0]["error"]["message"].as_str().unwrap().contains("card.asn"));
    // A security officer may not derive: the call fails, exit 1, no line.
    let out = so.run(&["derive"], &["--profile", "mohurd-epurse", "--transport-key", KEK, "--asn", "4567890123456701"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("PermissionDenied"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());

    // A file of 50 cards; line 19 of the file (index 17) is malformed.
    let cards = write_cards(dir, 50, 17);
    let results = dir.join("results.jsonl");
    let args = |out: &Path| -> Vec<String> {
        [
            "--profile",
            "mohurd-epurse",
            "--transport-key",
            KEK,
            "--input",
            cards.to_str().unwrap(),
            "--batch-id",
            "b1",
            "--output",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(&results);
    let out = partner.run(&["derive"], &a.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "some cards failed: {stderr}");
    assert!(stderr.contains("batch b1: 50 cards: 49 ok, 1 failed, 0 replayed"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
    let first = json_lines(&std::fs::read_to_string(&results).unwrap());
    assert_eq!(first.len(), 50);
    for (i, r) in first.iter().enumerate() {
        assert_eq!(r["index"], i as u64);
        assert_eq!(r["line"], i as u64 + 2);
        assert_eq!(r["replayed"], false);
        if i == 17 {
            assert_eq!(r["card"]["asn"], "45678901234567ZZ");
            assert_eq!(r["error"]["code"], "INVALID_ARGUMENT", "{r}");
            assert!(r["error"]["message"].as_str().unwrap().contains("card.asn"), "{r}");
            assert!(r.get("keys").is_none());
        } else {
            assert_eq!(r["card"]["asn"], format!("{:016X}", 0x4567890123450000u64 + i as u64));
            check_keys(r);
        }
    }

    // The same batch id again: everything is answered from the record.
    let again = dir.join("again.jsonl");
    let a = args(&again);
    let out = partner.run(&["derive"], &a.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("49 ok, 1 failed, 50 replayed"), "{stderr}");
    let second = json_lines(&std::fs::read_to_string(&again).unwrap());
    assert_eq!(second.len(), 50);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(b["replayed"], true, "{b}");
        assert_eq!(a["keys"], b["keys"]);
        assert_eq!(a["error"], b["error"]);
    }

    // JSON lines to standard output; a malformed line stops the run and is named.
    let jsonl = dir.join("cards.jsonl");
    std::fs::write(&jsonl, "{\"asn\":\"4567890123456701\"}\n\n{\"asn\":\"4567890123456702\"}\n{\"asn\": 7}\n").unwrap();
    let out = partner.run(
        &["derive"],
        &["--profile", "mohurd-epurse", "--transport-key", KEK, "--input", jsonl.to_str().unwrap(), "--batch-id", "j1"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cards.jsonl line 4"), "{stderr}");
    let done = json_lines(&text(&out.stdout));
    assert_eq!(done.len(), 2, "the cards before the bad line were done");
    check_keys(&done[1]);
    assert_eq!(done[1]["line"], 3);

    // Usage errors: exit 2.
    let out = partner
        .run(&["derive"], &["--profile", "mohurd-epurse", "--transport-key", KEK, "--input", cards.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "--input needs --batch-id: {}", text(&out.stderr));
    let txt = dir.join("cards.txt");
    std::fs::write(&txt, "asn\n4567890123456701\n").unwrap();
    let out = partner.run(
        &["derive"],
        &["--profile", "mohurd-epurse", "--transport-key", KEK, "--input", txt.to_str().unwrap(), "--batch-id", "t1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = partner.run(
        &["derive"],
        &[
            "--profile",
            "mohurd-epurse",
            "--transport-key",
            KEK,
            "--input",
            txt.to_str().unwrap(),
            "--input-format",
            "csv",
            "--batch-id",
            "t1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Peak resident memory (kB) of a running process, sampled until it exits.
fn run_sampling_rss(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The client streams a file: its memory does not grow with the number of
/// cards. Slow (tens of thousands of derivations), so run on demand:
/// `cargo nextest run -p kms-tests --test cli --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: derives tens of thousands of cards"]
async fn derive_memory_stays_flat_on_a_long_file() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let so = Cli::new(&setup, &server, "security_officer");
    let partner = Cli::new(&setup, &server, "issuance_partner");
    create_catalogue(&so);
    let dir = setup.dir.path();
    let mut peaks = Vec::new();
    for (n, id) in [(1_000u64, "small"), (20_000, "large")] {
        let path = dir.join(format!("{id}.jsonl"));
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!("{{\"asn\":\"{:016X}\"}}\n", 0x3301000000000000u64 + i));
        }
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(kms_bin());
        cmd.args(["derive", "--endpoint", &partner.endpoint, "--ca"])
            .arg(&partner.ca)
            .arg("--cert")
            .arg(&partner.cert)
            .arg("--key")
            .arg(&partner.key)
            .args(["--profile", "mohurd-epurse", "--transport-key", KEK, "--batch-id", id, "--input"])
            .arg(&path)
            .arg("--output")
            .arg(dir.join(format!("{id}.out")));
        let (status, peak) = run_sampling_rss(cmd);
        assert!(status.success(), "{status}");
        let lines = std::fs::read_to_string(dir.join(format!("{id}.out"))).unwrap().lines().count();
        assert_eq!(lines as u64, n);
        peaks.push(peak);
    }
    eprintln!("peak RSS: 1,000 cards {} kB, 20,000 cards {} kB", peaks[0], peaks[1]);
    assert!(peaks[1] < peaks[0] + 16 * 1024, "memory grew with the file: {peaks:?} kB");
}

// ---- kms certs ------------------------------------------------------------------------------

/// The issuing CA the `kms certs` tests stand up.
const ISSUER: &str = "city-3301-2026";
/// The escrow key every test server names in `[ca] escrow_key`.
const ESCROW: &str = "city/3301/ca/escrow";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Asserts that a run succeeded; returns its standard output.
fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}\nstderr: {}\nstdout: {}", out.status, text(&out.stderr), text(&out.stdout));
    text(&out.stdout)
}

/// Asserts that a run failed with exit status `code` and that standard
/// error says each of `needles`; returns standard error.
fn failed(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}\nstdout: {}", text(&out.stdout));
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in: {stderr}");
    }
    stderr
}

/// `kms certs enroll` as a reader runs it: TLS without a client
/// certificate, given only the endpoint and the CA of the server's
/// certificate. `stdin` is what standard input holds (else nothing).
fn enroll(setup: &Setup, server: &Server, rest: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(kms_bin());
    cmd.args(["certs", "enroll", "--endpoint", &format!("https://127.0.0.1:{}", server.grpc_port), "--ca"])
        .arg(&setup.pki.ca_pem)
        .args(rest)
        .env_remove("KMS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Some(input) = stdin else {
        return cmd.stdin(Stdio::null()).output().expect("run kms");
    };
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("run kms");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A P-256 key (`<stem>.key`) and a PEM CSR (`<stem>.csr`) for `subject`,
/// made as the guide makes them; returns the CSR's path.
fn pem_csr(dir: &Path, stem: &str, subject: &str) -> String {
    let csr = p(&dir.join(format!("{stem}.csr")));
    let key = format!("{stem}.key");
    let args = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key];
    openssl_ok(dir, &[&args[..], &["-subj", subject, "-out", &csr]].concat());
    csr
}

/// `openssl verify` of `cert` up to the harness root, with `untrusted`
/// (the issuing CA, or a whole chain) as intermediates.
fn verify(dir: &Path, root: &Path, untrusted: &Path, cert: &Path) {
    let out = openssl_ok(dir, &["verify", "-CAfile", &p(root), "-untrusted", &p(untrusted), &p(cert)]);
    assert!(out.contains(": OK"), "{out}");
}

/// Opens a dual enrollment's `encryption-key.p7m` with the reader's signing
/// key, as the guide says, and checks that it holds the private key of
/// `encryption.crt`.
fn open_envelope(dir: &Path, out_dir: &Path, signing_key: &Path) {
    let der = out_dir.join("encryption-key.der");
    openssl_ok(
        dir,
        &[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            &p(&out_dir.join("encryption-key.p7m")),
            "-inkey",
            &p(signing_key),
            "-recip",
            &p(&out_dir.join("signing.crt")),
            "-out",
            &p(&der),
        ],
    );
    let from_key = openssl_ok(dir, &["pkey", "-inform", "DER", "-in", &p(&der), "-pubout"]);
    let from_cert = openssl_ok(dir, &["x509", "-in", &p(&out_dir.join("encryption.crt")), "-noout", "-pubkey"]);
    assert_eq!(from_key.trim(), from_cert.trim(), "the enveloped key is not encryption.crt's");
}

/// Stands up [`ISSUER`] through the CLI as a security officer: its key and
/// CSR made in the token, the CSR signed by the harness root (the
/// ceremony's part), the certificate activated. Returns the issuing CA's
/// certificate (PEM), for `openssl verify -untrusted`.
fn stand_up_issuer(setup: &Setup, so: &Cli, op: &Cli) -> PathBuf {
    let dir = setup.dir.path();
    let csr = dir.join(format!("{ISSUER}.csr"));
    let csr_out = p(&csr);
    let create = [
        "--name",
        ISSUER,
        "--common-name",
        "Hangzhou Transit Issuing CA 2026",
        "--organization",
        "Hangzhou City Card",
        "--country",
        "cn",
        "--csr-out",
        &csr_out,
    ];
    // Only a security officer may; nothing is written for anyone else.
    failed(&op.run(&["certs", "issuer", "create"], &create), 1, &["CreateIssuer failed: PermissionDenied"]);
    assert!(!csr.exists());
    let created = json_lines(&so.ok(&["certs", "issuer", "create"], &[&create[..], &["--json"]].concat()));
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(
        (c["name"].as_str(), c["state"].as_str(), c["key_type"].as_str()),
        (Some(ISSUER), Some("pending"), Some("ec-p256"))
    );
    let subject = c["subject"].as_str().unwrap();
    for part in ["CN=Hangzhou Transit Issuing CA 2026", "O=Hangzhou City Card", "C=CN"] {
        assert!(subject.contains(part), "{subject}");
    }
    assert_eq!(c["csr_file"], csr_out);
    assert_eq!(c["not_after"], Value::Null);
    // The same name again: ALREADY_EXISTS.
    failed(&so.run(&["certs", "issuer", "create"], &create), 1, &["CreateIssuer failed: AlreadyExists"]);

    // The CSR is PEM, signed by the key in the token.
    let out = openssl_ok(dir, &["req", "-in", &csr_out, "-noout", "-verify"]);
    assert!(out.contains("verify OK"), "{out}");
    let der = dir.join(format!("{ISSUER}.csr.der"));
    openssl_ok(dir, &["req", "-in", &csr_out, "-outform", "DER", "-out", &p(&der)]);
    let cert = write(dir, &format!("{ISSUER}.crt"), setup.pki.sign_issuing_ca(&std::fs::read(&der).unwrap()));

    let activate = ["--name", ISSUER, "--certificate", &p(&cert), "--chain", &p(&setup.pki.ca_pem), "--json"];
    // A chain that does not lead to a root is refused; the issuer stays pending.
    let activate_no_root = ["--name", ISSUER, "--certificate", &p(&cert), "--chain", &p(&cert)];
    failed(
        &so.run(&["certs", "issuer", "activate"], &activate_no_root),
        1,
        &["ActivateIssuer failed: InvalidArgument"],
    );
    let active = json_lines(&so.ok(&["certs", "issuer", "activate"], &activate));
    let a = &active[0];
    assert_eq!(a["state"], "active");
    assert_eq!(a["crl_url"], format!("http://crl.test/crl/{ISSUER}.crl"));
    assert_eq!(a["crl_number"], 1, "activation publishes CRL number 1");
    assert!(a["not_after"].as_str().is_some_and(|t| t.ends_with('Z')), "{a}");
    failed(
        &so.run(&["certs", "issuer", "activate"], &activate),
        1,
        &["ActivateIssuer failed: FailedPrecondition", "not pending"],
    );

    let issuers = json_lines(&op.ok(&["certs", "issuer", "list"], &["--json"]));
    assert_eq!(issuers.len(), 1);
    assert_eq!((issuers[0]["name"].as_str(), issuers[0]["state"].as_str()), (Some(ISSUER), Some("active")));
    let table = op.ok(&["certs", "issuer", "list"], &[]);
    assert!(table.starts_with("NAME") && table.contains(&format!("\n{ISSUER}  active  ec-p256")), "{table}");
    cert
}

/// A whole reader's life through `kms certs`: an issuer stood up, a token
/// made, the reader enrolled without a client certificate (dual on
/// hsm-sim; SoftHSM cannot build the envelope), its files checked with
/// OpenSSL, found, renewed with its own certificate, revoked, and the CRL
/// fetched and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_a_reader_enrolls_renews_and_is_revoked() {
    // why: SoftHSM 2.6 cannot wrap under CKM_AES_CBC_PAD, which the CMS
    // envelope of every dual enrollment needs; hsm-sim can.
    let dual = Module::from_env() == Module::HsmSim;
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let dir = setup.dir.path().to_owned();
    let so = Cli::new(&setup, &server, "security_officer");
    let op = Cli::new(&setup, &server, "operator");
    let auditor = Cli::new(&setup, &server, "auditor");
    let issuer = stand_up_issuer(&setup, &so, &op);
    let root = setup.pki.ca_pem.clone();

    // The profiles readers enroll with.
    let profiles = json_lines(&op.ok(&["certs", "profiles"], &["--json"]));
    let profile =
        |name: &str| profiles.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name} not loaded")).clone();
    assert_eq!(profile("reader-sign")["enrollment"], true);
    assert_eq!(profile("reader-sign")["service_generated_key"], false);
    assert_eq!(profile("reader-encrypt")["service_generated_key"], true);
    assert_eq!(profile("server-tls")["enrollment"], false);
    assert!(op.ok(&["certs", "profiles"], &[]).starts_with("NAME"));

    // An operator makes one-time tokens; the secret is printed once.
    let token = |serial: &str| -> PathBuf {
        let t = json_lines(&op.ok(
            &["certs", "token", "create"],
            &[
                "--reader-serial",
                serial,
                "--profile",
                "reader-sign",
                "--profile",
                "reader-encrypt",
                "--ttl",
                "4h",
                "--json",
            ],
        ));
        assert_eq!(t.len(), 1);
        let mut keys: Vec<&str> = t[0].as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["expires_at", "issuer", "token", "token_id"]);
        let secret = t[0]["token"].as_str().unwrap();
        assert!(secret.starts_with("kmset."), "{secret}");
        write(&dir, &format!("{serial}.token"), format!("{secret}\n"))
    };
    let token_file = token("R3301000123");
    let other_token = token("R3301000999");
    // Tokens are for reader profiles only, and an auditor may not make them.
    failed(
        &op.run(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "client-tls"]),
        1,
        &["CreateEnrollmentToken failed: PermissionDenied"],
    );
    failed(
        &auditor.run(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "reader-sign"]),
        1,
        &["CreateEnrollmentToken failed: PermissionDenied"],
    );
    failed(&op.run(&["certs", "token", "create"], &["--reader-serial", "R1"]), 2, &["--profile"]);
    failed(
        &op.run(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "reader-sign", "--ttl", "24"]),
        2,
        &["without a unit"],
    );

    // The reader's key and CSR (DER), made by OpenSSL.
    let reader = make_csr(&dir, "reader", "ec", "/CN=R3301000123", &[]);
    let reader_csr = p(&dir.join("reader.csr"));
    let out_dir = dir.join("reader");
    let out_s = p(&out_dir);
    let tf = p(&token_file);

    // Dual before the escrow key exists: the configured key is not found,
    // nothing is written, the token is not used up.
    failed(
        &enroll(&setup, &server, &["--csr", &reader_csr, "--token-file", &tf, "--dual", "--out-dir", &out_s], None),
        1,
        &["EnrollReader failed: NotFound", "ca.escrow_key"],
    );
    assert!(!out_dir.join("signing.crt").exists());
    let escrow =
        json_lines(&so.ok(&["keys", "create", ESCROW], &["--algorithm", "aes256", "--purpose", "escrow", "--json"]));
    assert_eq!(escrow[0]["purpose"], "escrow");
    if !dual {
        failed(
            &enroll(&setup, &server, &["--csr", &reader_csr, "--token-file", &tf, "--dual", "--out-dir", &out_s], None),
            1,
            &["EnrollReader failed: FailedPrecondition", "CKM_AES_CBC_PAD"],
        );
    }
    // A token bound to another reader: the CSR is refused, the token kept.
    failed(
        &enroll(&setup, &server, &["--csr", &reader_csr, "--token-file", &p(&other_token), "--out-dir", &out_s], None),
        1,
        &["EnrollReader failed: InvalidArgument: invalid csr: subject_mismatch"],
    );
    // A token the service never made.
    let bogus = write(&dir, "bogus.token", "kmset.0011223344556677.00\n");
    failed(
        &enroll(&setup, &server, &["--csr", &reader_csr, "--token-file", &p(&bogus), "--out-dir", &out_s], None),
        1,
        &["EnrollReader failed: Unauthenticated", "enrollment token not recognised"],
    );
    // Usage errors: two authorizations, --encryption-profile without
    // --dual, no token and no terminal to ask on.
    failed(
        &enroll(
            &setup,
            &server,
            &["--csr", &reader_csr, "--token", "x", "--token-file", &tf, "--out-dir", &out_s],
            None,
        ),
        2,
        &[],
    );
    failed(
        &enroll(
            &setup,
            &server,
            &["--csr", &reader_csr, "--token-file", &tf, "--encryption-profile", "reader-encrypt", "--out-dir", &out_s],
            None,
        ),
        2,
        &["--dual"],
    );
    failed(&enroll(&setup, &server, &["--csr", &reader_csr, "--out-dir", &out_s], None), 2, &["--token-file"]);

    // The enrollment.
    let mut args = vec!["--csr", &reader_csr, "--token-file", &tf, "--out-dir", &out_s, "--json"];
    if dual {
        args.push("--dual");
    }
    let got = json_lines(&succeeded(&enroll(&setup, &server, &args, None)));
    assert_eq!(got.len(), 1);
    let got = &got[0];
    let signing = out_dir.join("signing.crt");
    let chain = out_dir.join("chain.pem");
    let s = &got["signing"];
    assert_eq!(s["subject"], "CN=R3301000123");
    assert_eq!(
        (s["profile"].as_str(), s["role"].as_str(), s["tenant"].as_str()),
        (Some("reader-sign"), Some("reader"), Some("city-3301"))
    );
    assert_eq!((s["status"].as_str(), s["issuer"].as_str()), (Some("valid"), Some(ISSUER)));
    assert!(s["requested_by"].as_str().unwrap().starts_with("token:"), "{s}");
    assert_eq!(
        (got["signing_file"].as_str(), got["chain_file"].as_str()),
        (Some(p(&signing).as_str()), Some(p(&chain).as_str()))
    );
    let serial = s["serial"].as_str().unwrap().to_owned();
    verify(&dir, &root, &issuer, &signing);
    verify(&dir, &root, &chain, &signing);
    assert_eq!(std::fs::read_to_string(&chain).unwrap().matches("BEGIN CERTIFICATE").count(), 2, "issuer and root");
    let text_of = |f: &Path| openssl_ok(&dir, &["x509", "-in", &p(f), "-noout", "-text"]);
    let t = text_of(&signing);
    assert!(t.contains("TLS Web Client Authentication") && t.contains("URI:urn:kms:role:reader"), "{t}");
    assert!(t.contains(&format!("http://crl.test/crl/{ISSUER}.crl")), "{t}");
    if dual {
        let e = &got["encryption"];
        assert_eq!(e["profile"], "reader-encrypt");
        assert_eq!(e["paired_serial"], serial);
        assert_eq!(s["paired_serial"], e["serial"]);
        let key_file = out_dir.join("encryption-key.p7m");
        assert_eq!(got["encryption_key_file"], p(&key_file));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
        verify(&dir, &root, &chain, &out_dir.join("encryption.crt"));
        open_envelope(&dir, &out_dir, &reader.key);
    } else {
        assert!(got.get("encryption").is_none() && got.get("encryption_key_file").is_none(), "{got}");
        assert!(!out_dir.join("encryption.crt").exists());
    }

    // The token is used up.
    failed(
        &enroll(
            &setup,
            &server,
            &["--csr", &reader_csr, "--token-file", &tf, "--out-dir", &p(&dir.join("again"))],
            None,
        ),
        1,
        &["EnrollReader failed: FailedPrecondition", "already used"],
    );

    // Another reader: a PEM CSR, the token on standard input, text output.
    let other_csr = pem_csr(&dir, "other", "/CN=R3301000999");
    let secret = std::fs::read_to_string(&other_token).unwrap();
    let other_dir = dir.join("other");
    let shown = succeeded(&enroll(
        &setup,
        &server,
        &["--csr", &other_csr, "--token-file", "-", "--out-dir", &p(&other_dir)],
        Some(&secret),
    ));
    assert!(shown.starts_with("subject CN=R3301000999\n"), "{shown}");
    assert!(shown.contains("signing certificate") && shown.contains("chain (2 certificates)"), "{shown}");
    verify(&dir, &root, &other_dir.join("chain.pem"), &other_dir.join("signing.crt"));

    // A reader with a ministry certificate (a trusted external CA) instead
    // of a token: it signs the CSR's DER bytes with that certificate's key.
    // The CSR may be given as PEM: the CLI sends its DER.
    let ministry = setup.ministry.client("R3301000555", None, None);
    let ext_csr = pem_csr(&dir, "ext", "/CN=R3301000555");
    openssl_ok(&dir, &["req", "-in", &ext_csr, "-outform", "DER", "-out", "ext.csr.der"]);
    let ext_sig = p(&dir.join("ext.csr.sig"));
    openssl_ok(&dir, &["dgst", "-sha256", "-sign", &p(&ministry.key), "-out", &ext_sig, "ext.csr.der"]);
    let ext_dir = dir.join("ext");
    let external = |csr: &str, sig: &str| {
        let args = ["--csr", csr, "--external-cert", &p(&ministry.cert), "--external-signature", sig];
        enroll(
            &setup,
            &server,
            &[&args[..], &["--validity-days", "30", "--out-dir", &p(&ext_dir), "--json"]].concat(),
            None,
        )
    };
    let wrong_sig = write(&dir, "wrong.sig", b"\x30\x06\x02\x01\x01\x02\x01\x01");
    failed(&external(&ext_csr, &p(&wrong_sig)), 1, &["EnrollReader failed: Unauthenticated", "external certificate"]);
    failed(
        &enroll(&setup, &server, &["--csr", &ext_csr, "--external-cert", &p(&ministry.cert), "--out-dir", "x"], None),
        2,
        &["--external-signature"],
    );
    let ext = json_lines(&succeeded(&external(&ext_csr, &ext_sig)));
    let e = &ext[0]["signing"];
    assert_eq!((e["subject"].as_str(), e["tenant"].as_str()), (Some("CN=R3301000555"), Some("city-3301")));
    assert!(e["requested_by"].as_str().unwrap().starts_with("external:R3301000555"), "{e}");
    let at = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    let days = (at(&e["not_after"]) - at(&e["not_before"])).whole_days();
    assert!((30..=31).contains(&days), "--validity-days 30 gave {days} days: {e}");
    verify(&dir, &root, &ext_dir.join("chain.pem"), &ext_dir.join("signing.crt"));
    // More than the profile allows is refused, not shortened.
    let t = token("R3301000777");
    let long = pem_csr(&dir, "long", "/CN=R3301000777");
    failed(
        &enroll(
            &setup,
            &server,
            &["--csr", &long, "--token-file", &p(&t), "--validity-days", "5000", "--out-dir", &p(&dir.join("long"))],
            None,
        ),
        1,
        &["EnrollReader failed: InvalidArgument: invalid csr: validity_too_long"],
    );

    // Find and inspect.
    let readers = if dual { 4 } else { 3 };
    assert_eq!(json_lines(&auditor.ok(&["certs", "list"], &["--json"])).len(), readers);
    // Page by page (one certificate a page) gives the same; --limit stops early.
    assert_eq!(json_lines(&auditor.ok(&["certs", "list"], &["--json", "--page-size", "1"])).len(), readers);
    assert_eq!(json_lines(&auditor.ok(&["certs", "list"], &["--json", "--page-size", "1", "--limit", "2"])).len(), 2);
    assert_eq!(auditor.ok(&["certs", "list"], &["--expires-within", "29d"]), "no certificates\n");
    assert_eq!(json_lines(&auditor.ok(&["certs", "list"], &["--json", "--expires-within", "31d"])).len(), 1);
    assert_eq!(
        json_lines(&auditor.ok(&["certs", "list"], &["--json", "--expires-before", "2100-01-01"])).len(),
        readers
    );
    failed(&auditor.run(&["certs", "list"], &["--expires-before", "31/12/2026"]), 2, &["YYYY-MM-DD"]);
    let mine = json_lines(&auditor.ok(&["certs", "list"], &["--json", "--subject-contains", "R3301000123"]));
    assert_eq!(mine.len(), if dual { 2 } else { 1 });
    let exact = json_lines(&op.ok(&["certs", "list"], &["--json", "--subject", "CN=R3301000999"]));
    assert_eq!(exact.len(), 1);
    let prefix = json_lines(&op.ok(&["certs", "list"], &["--json", "--serial-prefix", &serial[..6]]));
    assert!(prefix.iter().any(|c| c["serial"] == serial.as_str()));
    let table = op.ok(&["certs", "list"], &["--issuer", ISSUER, "--status", "valid"]);
    assert!(table.starts_with("SERIAL") && table.lines().count() == readers + 1, "{table}");
    failed(
        &Cli::new(&setup, &server, "issuance_partner").run(&["certs", "list"], &[]),
        1,
        &["ListCertificates failed: PermissionDenied"],
    );
    // OpenSSL's colon form, lower case.
    let colons =
        serial.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_lowercase()).collect::<Vec<_>>().join(":");
    let got_file = dir.join("got.crt");
    let one = json_lines(&auditor.ok(&["certs", "get", &colons], &["--json", "--out", &p(&got_file)]));
    assert_eq!(one[0]["serial"], serial.as_str());
    assert_eq!(std::fs::read(&got_file).unwrap(), std::fs::read(&signing).unwrap());
    let detail = op.ok(&["certs", "get", &serial], &[]);
    assert!(detail.contains("CN=R3301000123") && detail.contains("requested by"), "{detail}");
    assert_eq!(detail.contains("paired with"), dual, "{detail}");
    failed(&op.run(&["certs", "get", "00AA"], &[]), 1, &["GetCertificate failed: NotFound"]);

    // The reader renews with its own certificate (and the chain), a new key,
    // the same subject.
    let full = format!("{}{}", std::fs::read_to_string(&signing).unwrap(), std::fs::read_to_string(&chain).unwrap());
    let reader_cli = Cli::with_cert(&setup, &server, write(&dir, "reader-full.pem", full), reader.key.clone());
    failed(
        &reader_cli.run(&["certs", "renew"], &["--csr", &reader_csr, "--out-dir", &p(&dir.join("same"))]),
        1,
        &["RenewCertificate failed: InvalidArgument", "new key"],
    );
    let renew = make_csr(&dir, "renew", "ec", "/CN=R3301000123", &[]);
    let renew_dir = dir.join("reader-2");
    let renew_csr = p(&dir.join("renew.csr"));
    let renew_out = p(&renew_dir);
    let mut args = vec!["--csr", &renew_csr, "--out-dir", &renew_out, "--json"];
    if dual {
        args.push("--dual");
    }
    let renewed = json_lines(&reader_cli.ok(&["certs", "renew"], &args));
    let r = &renewed[0]["signing"];
    assert_eq!(r["subject"], "CN=R3301000123");
    assert_ne!(r["serial"], serial.as_str());
    let renewed_signing = renew_dir.join("signing.crt");
    verify(&dir, &root, &renew_dir.join("chain.pem"), &renewed_signing);
    if dual {
        open_envelope(&dir, &renew_dir, &renew.key);
    }

    // Revocation: --yes or a terminal; an auditor may not; a reason is
    // RFC 5280's in kebab-case.
    failed(&op.run(&["certs", "revoke", &serial], &["--reason", "key-compromise"]), 2, &["--yes"]);
    failed(&op.run(&["certs", "revoke", &serial], &["--reason", "keyCompromise", "--yes"]), 2, &[]);
    failed(
        &auditor.run(&["certs", "revoke", &serial], &["--reason", "key-compromise", "--yes"]),
        1,
        &["RevokeCertificate failed: PermissionDenied"],
    );
    let revoked = json_lines(&op.ok(&["certs", "revoke", &serial], &["--reason", "key-compromise", "--yes", "--json"]));
    assert_eq!(
        (revoked[0]["status"].as_str(), revoked[0]["revocation_reason"].as_str()),
        (Some("revoked"), Some("keyCompromise"))
    );
    assert!(revoked[0]["revoked_at"].as_str().is_some());
    failed(
        &op.run(&["certs", "revoke", &serial], &["--reason", "key-compromise", "--yes"]),
        1,
        &["RevokeCertificate failed: FailedPrecondition", "already revoked"],
    );
    assert_eq!(json_lines(&op.ok(&["certs", "list"], &["--json", "--status", "revoked"])).len(), 1);
    // The revoked certificate no longer authenticates, for any call.
    failed(&reader_cli.run(&["certs", "chain"], &[]), 1, &["GetCaChain failed: Unauthenticated", "revoked"]);

    // The CRL: the same bytes over gRPC and from the ops listener, signed by
    // the issuer, naming the revoked certificate.
    let crl = dir.join(format!("{ISSUER}.crl"));
    let info = json_lines(&op.ok(&["certs", "crl"], &["--issuer", ISSUER, "--out", &p(&crl), "--json"]));
    assert_eq!(info[0]["entries"], 1);
    assert!(info[0]["number"].as_u64().unwrap() >= 2, "{}", info[0]);
    assert_eq!(std::fs::read(&crl).unwrap(), http_get_bytes(server.ops_port, &format!("/crl/{ISSUER}.crl")));
    let issuer_chain = dir.join(format!("{ISSUER}-chain.pem"));
    op.ok(&["certs", "chain"], &["--issuer", ISSUER, "--out", &p(&issuer_chain)]);
    let out = openssl_ok(
        &dir,
        &["crl", "-inform", "DER", "-in", &p(&crl), "-CAfile", &p(&issuer_chain), "-verify", "-noout", "-text"],
    );
    assert!(out.contains("verify OK") && out.contains(&serial) && out.contains("Key Compromise"), "{out}");
    let crl_pem = dir.join("crl.pem");
    openssl_ok(&dir, &["crl", "-inform", "DER", "-in", &p(&crl), "-out", &p(&crl_pem)]);
    let check = |cert: &Path| {
        openssl(
            &dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                &p(&root),
                "-untrusted",
                &p(&chain),
                "-CRLfile",
                &p(&crl_pem),
                &p(cert),
            ],
        )
    };
    let (ok, out) = check(&signing);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = check(&renewed_signing);
    assert!(ok, "{out}");
    let shown = op.ok(&["certs", "crl"], &["--issuer", ISSUER]);
    assert!(shown.contains("entries") && shown.contains("not saved"), "{shown}");
    failed(&op.run(&["certs", "crl"], &["--issuer", "no-such-issuer"]), 1, &["GetCrl failed: NotFound"]);
}

/// Server and client certificates through `kms certs issue`, the chain,
/// a client certificate that stops working when revoked, and retirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_issue_chain_and_retire() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let dir = setup.dir.path().to_owned();
    let so = Cli::new(&setup, &server, "security_officer");
    let op = Cli::new(&setup, &server, "operator");
    let issuer = stand_up_issuer(&setup, &so, &op);
    let root = setup.pki.ca_pem.clone();

    // A server certificate for a PEM CSR; the operator adds the names.
    let web_csr = pem_csr(&dir, "web", "/CN=kms2.city.example");
    let web = dir.join("web.crt");
    let web_chain = dir.join("web-chain.pem");
    let issued = json_lines(&op.ok(
        &["certs", "issue"],
        &[
            "--csr",
            &web_csr,
            "--name",
            "kms2.city.example",
            "--name",
            "10.0.0.6",
            "--out",
            &p(&web),
            "--chain-out",
            &p(&web_chain),
            "--json",
        ],
    ));
    assert_eq!((issued[0]["profile"].as_str(), issued[0]["issuer"].as_str()), (Some("server-tls"), Some(ISSUER)));
    assert_eq!(
        (issued[0]["file"].as_str(), issued[0]["chain_file"].as_str()),
        (Some(p(&web).as_str()), Some(p(&web_chain).as_str()))
    );
    verify(&dir, &root, &web_chain, &web);
    let t = openssl_ok(&dir, &["x509", "-in", &p(&web), "-noout", "-text"]);
    for needle in ["DNS:kms2.city.example", "IP Address:10.0.0.6", "TLS Web Server Authentication", "CA:FALSE"] {
        assert!(t.contains(needle), "{needle} missing:\n{t}");
    }
    let shown = op.ok(
        &["certs", "issue"],
        &["--csr", &web_csr, "--name", "kms2.city.example", "--out", &p(&dir.join("web-2.crt"))],
    );
    assert!(shown.contains("certificate written to"), "{shown}");

    // Refusals name the reason (INVALID_ARGUMENT, "invalid csr: <code>: ...").
    make_csr(&dir, "evil", "ec", "/CN=evil.city.example", &["-addext", "basicConstraints=critical,CA:TRUE"]);
    make_csr(&dir, "weak", "rsa1024", "/CN=weak.city.example", &[]);
    let no = p(&dir.join("no.crt"));
    for (csr, extra, reason) in [
        (web_csr.clone(), &["--validity-days", "5000"][..], "invalid csr: validity_too_long"),
        (p(&dir.join("evil.csr")), &[][..], "invalid csr: ca_requested"),
        (p(&dir.join("weak.csr")), &[][..], "invalid csr: weak_key"),
        (web_csr.clone(), &["--name", "bad_name"][..], "invalid csr: san_not_allowed"),
    ] {
        let args = [&["--csr", csr.as_str(), "--name", "x.city.example", "--out", &no][..], extra].concat();
        failed(&op.run(&["certs", "issue"], &args), 1, &["IssueServerCertificate failed: InvalidArgument", reason]);
    }
    assert!(!dir.join("no.crt").exists());
    failed(
        &Cli::new(&setup, &server, "issuance_partner").run(
            &["certs", "issue"],
            &["--csr", &web_csr, "--name", "x.city.example", "--out", &p(&dir.join("no.crt"))],
        ),
        1,
        &["IssueServerCertificate failed: PermissionDenied"],
    );
    // Usage errors: --tenant needs --role, a zero validity, a file that is no CSR.
    failed(&op.run(&["certs", "issue"], &["--csr", &web_csr, "--tenant", "city-3301", "--out", &no]), 2, &["--role"]);
    failed(&op.run(&["certs", "issue"], &["--csr", &web_csr, "--validity-days", "0", "--out", &no]), 2, &[]);
    let not_csr = write(&dir, "hello.csr", "hello\n");
    failed(&op.run(&["certs", "issue"], &["--csr", &p(&not_csr), "--out", &no]), 2, &["neither a PEM nor a DER CSR"]);

    // A client certificate of this service, with a role and a tenant: it
    // authenticates as that principal.
    let op7 = make_csr(&dir, "op-7", "ec", "/CN=op-7", &[]);
    let op7_crt = dir.join("op-7.crt");
    let op7_chain = dir.join("op-7-chain.pem");
    let c = json_lines(&op.ok(
        &["certs", "issue"],
        &[
            "--csr",
            &p(&dir.join("op-7.csr")),
            "--profile",
            "client-tls",
            "--role",
            "operator",
            "--tenant",
            "city-3301",
            "--out",
            &p(&op7_crt),
            "--chain-out",
            &p(&op7_chain),
            "--json",
        ],
    ));
    assert_eq!(
        (c[0]["role"].as_str(), c[0]["tenant"].as_str(), c[0]["profile"].as_str()),
        (Some("operator"), Some("city-3301"), Some("client-tls"))
    );
    let op7_serial = c[0]["serial"].as_str().unwrap().to_owned();
    failed(
        &op.run(
            &["certs", "issue"],
            &[
                "--csr",
                &p(&dir.join("op-7.csr")),
                "--profile",
                "client-tls",
                "--role",
                "reader",
                "--tenant",
                "city-3301",
                "--out",
                &no,
            ],
        ),
        1,
        &["invalid csr: role_not_allowed"],
    );
    let full =
        format!("{}{}", std::fs::read_to_string(&op7_crt).unwrap(), std::fs::read_to_string(&op7_chain).unwrap());
    let op7 = Cli::with_cert(&setup, &server, write(&dir, "op-7-full.pem", full), op7.key.clone());
    let who: Value = serde_json::from_str(op7.ok(&["whoami"], &["--json"]).trim()).unwrap();
    assert_eq!(
        (who["name"].as_str(), who["role"].as_str(), who["tenant"].as_str()),
        (Some("op-7"), Some("operator"), Some("city-3301"))
    );
    assert_eq!(who["certificate_serial"], op7_serial.as_str());

    // The chain: the issuer's certificate, then the root.
    let chain = dir.join("chain.pem");
    let ch = json_lines(&op7.ok(&["certs", "chain"], &["--issuer", ISSUER, "--out", &p(&chain), "--json"]));
    let certs = ch[0]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{}", ch[0]);
    assert!(certs[0]["subject"].as_str().unwrap().contains("Hangzhou Transit Issuing CA 2026"), "{}", ch[0]);
    assert_eq!(ch[0]["file"], p(&chain));
    let printed = op.ok(&["certs", "chain"], &[]);
    assert_eq!(printed, std::fs::read_to_string(&chain).unwrap(), "the newest active issuer's chain, as PEM");
    verify(&dir, &root, &chain, &op7_crt);
    verify(&dir, &root, &issuer, &op7_crt);
    let table = op.ok(&["certs", "chain"], &["--out", &p(&dir.join("chain-2.pem"))]);
    assert!(table.starts_with("#") && table.contains("written to"), "{table}");

    // Revoked, the client certificate is refused on every call.
    let shown = so.ok(&["certs", "revoke", &op7_serial], &["--reason", "privilege-withdrawn", "--yes"]);
    assert!(shown.contains("revoked") && shown.contains("privilegeWithdrawn"), "{shown}");
    failed(&op7.run(&["whoami"], &[]), 1, &["WhoAmI failed: Unauthenticated", "revoked"]);
    failed(&op7.run(&["certs", "list"], &[]), 1, &["ListCertificates failed: Unauthenticated", "revoked"]);

    // Retirement: --yes or a terminal; a security officer's; then nothing
    // more is issued under it, but its CRL is still served.
    failed(&so.run(&["certs", "issuer", "retire"], &["--name", ISSUER]), 2, &["--yes"]);
    failed(
        &op.run(&["certs", "issuer", "retire"], &["--name", ISSUER, "--yes"]),
        1,
        &["RetireIssuer failed: PermissionDenied"],
    );
    let retired = json_lines(&so.ok(&["certs", "issuer", "retire"], &["--name", ISSUER, "--yes", "--json"]));
    assert_eq!(retired[0]["state"], "retired");
    failed(
        &so.run(&["certs", "issuer", "retire"], &["--name", ISSUER, "--yes"]),
        1,
        &["RetireIssuer failed: FailedPrecondition", "retired, not active"],
    );
    failed(
        &op.run(
            &["certs", "issue"],
            &["--csr", &web_csr, "--name", "kms2.city.example", "--issuer", ISSUER, "--out", &no],
        ),
        1,
        &["IssueServerCertificate failed: FailedPrecondition", "retired, not active"],
    );
    failed(
        &op.run(&["certs", "issue"], &["--csr", &web_csr, "--name", "kms2.city.example", "--out", &no]),
        1,
        &["FailedPrecondition", "no active issuer"],
    );
    failed(
        &op.run(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "reader-sign"]),
        1,
        &["CreateEnrollmentToken failed: FailedPrecondition", "no active issuer"],
    );
    failed(&op.run(&["certs", "chain"], &[]), 1, &["GetCaChain failed: FailedPrecondition", "no active issuer"]);
    op.ok(&["certs", "chain"], &["--issuer", ISSUER]);
    let crl = dir.join("retired.crl");
    let info = json_lines(&op.ok(&["certs", "crl"], &["--issuer", ISSUER, "--out", &p(&crl), "--json"]));
    assert_eq!(info[0]["entries"], 1, "the revoked client certificate");
    let out =
        openssl_ok(&dir, &["crl", "-inform", "DER", "-in", &p(&crl), "-CAfile", &p(&issuer), "-verify", "-noout"]);
    assert!(out.contains("verify OK"), "{out}");
    assert!(op.ok(&["certs", "issuer", "list"], &[]).contains(&format!("{ISSUER}  retired")));

    // A successor takes over, its certificate made the way the guide makes
    // it: a test root and the issuing CA's certificate by plain OpenSSL.
    let next = "city-3301-2027";
    let csr = p(&dir.join(format!("{next}.csr")));
    let shown = so.ok(
        &["certs", "issuer", "create"],
        &[
            "--name",
            next,
            "--common-name",
            "City 3301 Transit Issuing CA 2027",
            "--key-type",
            "ec-p384",
            "--csr-out",
            &csr,
        ],
    );
    assert!(shown.contains(&format!("CSR written to {csr}")), "{shown}");
    assert!(shown.contains(&format!("kms certs issuer activate --name {next}")), "{shown}");
    let root_args = [
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.crt",
        "-days",
        "3650",
        "-sha384",
        "-subj",
        "/CN=City 3301 Transit Test Root/O=City 3301 Transit/C=CN",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    openssl_ok(&dir, &root_args);
    write(
        &dir,
        "issuer.ext",
        "basicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    );
    let crt = format!("{next}.crt");
    let sign_args = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "root.crt",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "1825",
        "-sha384",
        "-extfile",
        "issuer.ext",
        "-out",
        &crt,
    ];
    openssl_ok(&dir, &sign_args);
    assert!(openssl_ok(&dir, &["verify", "-CAfile", "root.crt", &crt]).contains(": OK"));
    let (crt, root_crt) = (p(&dir.join(&crt)), p(&dir.join("root.crt")));
    let active = json_lines(&so.ok(
        &["certs", "issuer", "activate"],
        &["--name", next, "--certificate", &crt, "--chain", &root_crt, "--json"],
    ));
    assert_eq!((active[0]["state"].as_str(), active[0]["key_type"].as_str()), (Some("active"), Some("ec-p384")));
    let (web, web_chain) = (p(&dir.join("web-2027.crt")), p(&dir.join("web-2027-chain.pem")));
    let issued = json_lines(&op.ok(
        &["certs", "issue"],
        &["--csr", &web_csr, "--name", "kms2.city.example", "--out", &web, "--chain-out", &web_chain, "--json"],
    ));
    assert_eq!(issued[0]["issuer"], next, "the newest active issuer");
    let out = openssl_ok(&dir, &["verify", "-CAfile", &root_crt, "-untrusted", &web_chain, &web]);
    assert!(out.contains(": OK"), "{out}");
    // Tokens: the newest active issuer again; not longer than ca.token_max_ttl_secs.
    op.ok(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "reader-sign"]);
    failed(
        &op.run(&["certs", "token", "create"], &["--reader-serial", "R1", "--profile", "reader-sign", "--ttl", "31d"]),
        1,
        &["CreateEnrollmentToken failed: InvalidArgument", "ca.token_max_ttl_secs"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_plans_through_the_cli() {
    let mut setup = Setup::new(DbKind::Sqlite).await;
    setup.plans_required = true;
    let server = setup.start();
    let so = Cli::new(&setup, &server, "security_officer");
    let operator = Cli::new(&setup, &server, "operator");
    let partner = Cli::new(&setup, &server, "issuance_partner");
    create_catalogue(&so);
    let derive_one =
        |asn: &str| partner.run(&["derive"], &["--profile", "mohurd-epurse", "--transport-key", KEK, "--asn", asn]);
    // Without a plan the partner's card is refused (PERMISSION_DENIED).
    let out = derive_one("3301000000000001");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("outside every live production plan"), "{}", text(&out.stderr));

    let created = json_lines(&operator.ok(
        &["plans", "create"],
        &[
            "--tenant",
            "city-3301",
            "--card-profile",
            "mohurd-epurse",
            "--range",
            "3301000000000000-33010000000000FF",
            "--count",
            "2",
            "--valid-until",
            "2030-01-01",
            "--note",
            "order 17",
            "--json",
        ],
    ));
    let id = created[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(created[0]["remaining"], 2);
    assert_eq!(created[0]["ranges"][0], "3301000000000000-33010000000000FF");
    // An empty range is refused with a usage-style message and exit status.
    let bad = operator.run(
        &["plans", "create"],
        &[
            "--tenant",
            "city-3301",
            "--card-profile",
            "mohurd-epurse",
            "--range",
            "0010-0001",
            "--count",
            "1",
            "--valid-until",
            "2030-01-01",
        ],
    );
    assert!(!bad.status.success() && text(&bad.stderr).contains("is empty"), "{}", text(&bad.stderr));

    for asn in ["3301000000000001", "3301000000000002"] {
        let out = derive_one(asn);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = derive_one("3301000000000003");
    assert!(text(&out.stderr).contains("has no cards left (2 of 2 used)"), "{}", text(&out.stderr));

    let listed = json_lines(&partner.ok(&["plans", "list"], &["--json"]));
    assert_eq!(
        (listed.len(), listed[0]["used"].as_u64(), listed[0]["state"].as_str()),
        (1, Some(2), Some("exhausted"))
    );
    let table = operator.ok(&["plans", "get", &id], &[]);
    assert!(table.contains("exhausted") && table.contains(&id), "{table}");
    let revoked = json_lines(&operator.ok(&["plans", "revoke", &id], &["--reason", "order closed", "--json"]));
    assert_eq!(revoked[0]["state"], "revoked");
    assert_eq!(revoked[0]["revocation_reason"], "order closed");
}
