//! The operator CLI (`kms keys ...`, `kms derive`) as an operator runs it:
//! the real binary against the real server over mutual TLS, SoftHSM behind
//! it. Output is parsed as JSON, exit codes are checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kms_tests::DbKind;
use kms_tests::server::{Server, Setup, kms_bin};
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
        Cli {
            endpoint: format!("https://127.0.0.1:{}", server.grpc_port),
            ca: setup.pki.ca_pem.clone(),
            cert: c.cert,
            key: c.key,
        }
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
