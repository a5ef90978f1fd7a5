//! Key ceremonies, non-interactive, on the module of this run: a complete
//! ceremony (token set-up, master keys in three components, a 2-of-3
//! backup, wipe, restore from the components and from two shares, root CA,
//! issuing CA, CRL), checked with OpenSSL; transcripts verified and
//! tampered with; bad input refused before anything changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use kms_tests::ca::{openssl, openssl_ok};
use kms_tests::ceremony::Rehearsal;
use kms_tests::token::Module;

const TOKEN: &str = "city-3301-offline";

fn keys_toml(dpk_kcv: Option<&str>) -> String {
    let kcv = dpk_kcv.map(|k| format!("kcv = {k:?}\n")).unwrap_or_default();
    format!(
        "[[key]]\nname = \"dpk\"\nlabel = \"city/3301/mohurd/dpk\"\nalgorithm = \"DES2\"\npurpose = \"derivation_master\"\nbackup = true\n{kcv}\n\
         [[key]]\nname = \"mot\"\nlabel = \"city/3301/mot/mk\"\nalgorithm = \"AES128\"\npurpose = \"derivation_master\"\nbackup = true\n\n"
    )
}

/// The 3DES KCV of the XOR of the delivered components, computed by
/// OpenSSL: an independent check of the combination in the HSM or host.
fn kcv_of_components(r: &Rehearsal, key: &str) -> String {
    let mut combined = [0u8; 16];
    for name in kms_tests::ceremony::OFFICERS {
        let text = std::fs::read_to_string(r.deliver.join(format!("component-{key}-{name}"))).unwrap();
        let value: String = text.lines().filter(|l| !l.starts_with('#')).collect::<String>().replace(' ', "");
        for (c, b) in combined.iter_mut().zip(hex::decode(value).unwrap()) {
            *c ^= b;
        }
    }
    des3_kcv(&combined)
}

/// The DES3_ZERO KCV of a 2-key 3DES key, by OpenSSL.
fn des3_kcv(key: &[u8]) -> String {
    let out = std::process::Command::new("openssl")
        .args(["enc", "-des-ede-ecb", "-nopad", "-K", &hex::encode(key)])
        .args(["-provider", "legacy", "-provider", "default"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), &[0u8; 8])?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    hex::encode_upper(&out.stdout[..3])
}

#[test]
fn a_complete_ceremony_restores_the_same_keys_and_its_transcript_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let module = Module::from_env();
    let r = Rehearsal::new(module, tmp.path());
    openssl_ok(
        &r.dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "issuing.key",
            "-subj",
            "/C=CN/O=City 3301 Transit/CN=City 3301 Issuing CA 2026",
            "-out",
            "issuing.csr",
        ],
    );
    let plan1 = format!(
        "{}{}\
[[step]]\ntype = \"token-init\"\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\ncomponents = 3\ncustodians = [\"alice\", \"bob\", \"carol\"]\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"mot\"\n\n\
[[step]]\ntype = \"backup\"\nkeys = [\"dpk\", \"mot\"]\ncustodians = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2\noutput = \"backup.json\"\n\n\
[[step]]\ntype = \"root-ca\"\nlabel = \"city-3301-root\"\nkey_type = \"ec-p384\"\nvalidity_days = 7300\noutput = \"root.pem\"\n\
subject = {{ C = \"CN\", O = \"City 3301 Transit\", CN = \"City 3301 Transit Root CA\" }}\n\n\
[[step]]\ntype = \"sign-csr\"\nroot_label = \"city-3301-root\"\nroot_certificate = \"root.pem\"\ncsr = \"issuing.csr\"\n\
validity_days = 1825\npath_len = 0\npermitted_dns = [\"transit.example\"]\ncrl_url = \"http://crl.transit.example/root.crl\"\noutput = \"issuing.pem\"\n\n\
[[step]]\ntype = \"root-crl\"\nroot_label = \"city-3301-root\"\nroot_certificate = \"root.pem\"\nnumber = 1\nvalidity_days = 30\n\
revoked = [\"0102\"]\noutput = \"root-crl.pem\"\n\n\
[[step]]\ntype = \"handover\"\nkeys = [\"dpk\", \"mot\"]\noutput = \"handover.json\"\n",
        r.head("city-3301-master-keys-2026", TOKEN),
        keys_toml(None)
    );
    r.write("plan1.toml", &plan1);
    let check = r.ceremony(&["check", "plan1.toml"]);
    assert_eq!(check.code, 0, "{}", check.text);
    let run = r.run("plan1.toml", "alice,bob,carol");
    assert_eq!(run.code, 0, "{}", run.text);

    // Components went to their custodians only; the combined key's KCV is
    // the KCV of their XOR (OpenSSL), and each component's KCV is recorded.
    let generated = r.details("plan1.toml", "generate-key", "dpk");
    let dpk_kcv = generated["kcv"]["value"].as_str().unwrap().to_owned();
    assert_eq!(kcv_of_components(&r, "dpk"), dpk_kcv);
    let component_kcvs: Vec<String> = generated["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kcv"]["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(component_kcvs.len(), 3);
    match module {
        Module::HsmSim => assert_eq!(generated["combined"], "in the HSM", "{generated}"),
        Module::SoftHsm => {
            assert!(generated["combined"].as_str().unwrap().starts_with("on the host"), "{generated}");
            assert!(run.text.contains("WARNING: module"), "{}", run.text);
        }
    }
    let mot_kcv = r.details("plan1.toml", "generate-key", "mot")["kcv"]["value"].as_str().unwrap().to_owned();
    for f in std::fs::read_dir(&r.deliver).unwrap() {
        let meta = f.unwrap().metadata().unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    }
    // No secret value is in the transcript or on the screen.
    let transcript = std::fs::read_to_string(r.dir.join("plan1.jsonl")).unwrap();
    for f in std::fs::read_dir(&r.deliver).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let secret = text.lines().find(|l| !l.starts_with('#')).unwrap().to_owned();
        for form in [secret.clone(), secret.replace(' ', "")] {
            assert!(!transcript.contains(&form) && !run.text.contains(&form), "a secret leaked");
        }
    }

    // The root, the issuing CA and the CRL are what OpenSSL expects.
    openssl_ok(&r.dir, &["verify", "-CAfile", "root.pem", "issuing.pem"]);
    let issuing = openssl_ok(&r.dir, &["x509", "-in", "issuing.pem", "-noout", "-text"]);
    assert!(issuing.contains("CA:TRUE, pathlen:0"), "{issuing}");
    assert!(issuing.contains("Permitted:") && issuing.contains("DNS:transit.example"), "{issuing}");
    assert!(issuing.contains("http://crl.transit.example/root.crl"), "{issuing}");
    let crl = openssl_ok(&r.dir, &["crl", "-in", "root-crl.pem", "-CAfile", "root.pem", "-noout", "-text"]);
    assert!(crl.contains("Serial Number: 0102"), "{crl}");
    let (ok, text) = openssl(&r.dir, &["crl", "-in", "root-crl.pem", "-CAfile", "root.pem", "-noout"]);
    assert!(ok && text.contains("verify OK"), "{text}");

    // The transcript verifies against the key named on the summary.
    let summary = std::fs::read_to_string(r.dir.join("plan1.summary.txt")).unwrap();
    let fingerprint =
        summary.lines().find_map(|l| l.strip_prefix("Transcript key SHA-256: ")).unwrap().trim().to_owned();
    assert!(summary.contains(&dpk_kcv) && summary.contains(&mot_kcv), "{summary}");
    // The printable summary is a PDF that poppler reads back.
    let pdf = std::process::Command::new("pdftotext")
        .args(["-layout", "plan1.summary.pdf", "-"])
        .current_dir(&r.dir)
        .output()
        .expect("pdftotext runs (scripts/test installs poppler-utils)");
    let pdf_text = String::from_utf8_lossy(&pdf.stdout);
    assert!(pdf.status.success() && pdf_text.contains(&format!("DES3_ZERO {dpk_kcv}")), "{pdf_text}");
    let verified = r.ceremony(&["transcript", "verify", "plan1.jsonl", "--key", &fingerprint, "--json"]);
    assert_eq!(verified.code, 0, "{}", verified.text);
    let v: serde_json::Value = serde_json::from_str(verified.text.trim()).unwrap();
    assert_eq!(v["closing"], "ceremony-completed");
    let head = v["head"].as_str().unwrap().to_owned();
    assert!(summary.contains(&head), "the summary names the last entry's hash");
    let with_head = r.ceremony(&["transcript", "verify", "plan1.jsonl", "--key", &fingerprint, "--head", &head]);
    assert_eq!(with_head.code, 0, "{}", with_head.text);
    let other_head =
        r.ceremony(&["transcript", "verify", "plan1.jsonl", "--key", &fingerprint, "--head", &"0".repeat(64)]);
    assert!(other_head.code != 0 && other_head.text.contains("last entry's hash"), "{}", other_head.text);
    let started = &r.entries("plan1.toml")[0]["details"];
    assert_eq!(started["mode"], "batch", "a batch run says so in its transcript");

    // Tampering: an edited entry, a removed one, two swapped, a cut tail,
    // and a transcript from another key.
    let lines: Vec<&str> = transcript.lines().collect();
    let edited = lines[2].replacen(&dpk_kcv, "000000", 1);
    assert_ne!(edited, lines[2]);
    let cases = [
        ("edited.jsonl", [&lines[..2], &[edited.as_str()][..], &lines[3..]].concat(), "signature does not verify"),
        ("removed.jsonl", [&lines[..2], &lines[3..]].concat(), "seq is 3, expected 2"),
        ("swapped.jsonl", [&lines[..2], &[lines[3], lines[2]][..], &lines[4..]].concat(), "expected 2"),
        ("cut.jsonl", lines[..lines.len() - 1].to_vec(), "not a closing entry"),
    ];
    for (file, lines, want) in cases {
        r.write(file, &(lines.join("\n") + "\n"));
        let out = r.ceremony(&["transcript", "verify", file, "--key", &fingerprint]);
        assert_ne!(out.code, 0, "{file} verified");
        assert!(out.text.contains(want), "{file}: {}", out.text);
    }
    let other_key = r.ceremony(&["transcript", "verify", "plan1.jsonl", "--key", &"00".repeat(32)]);
    assert!(other_key.code != 0 && other_key.text.contains("not 0000"), "{}", other_key.text);

    // Wipe; restore from the three components.
    r.custodians_bring_back();
    let plan2 = format!(
        "{}{}[[step]]\ntype = \"token-init\"\nwipe = true\n\n\
[[step]]\ntype = \"import-components\"\nkey = \"dpk\"\ncustodians = [\"alice\", \"bob\", \"carol\"]\ncomponent_kcvs = {:?}\n",
        r.head("restore-from-components", TOKEN),
        keys_toml(Some(&dpk_kcv)),
        component_kcvs
    );
    r.write("plan2.toml", &plan2);
    let run = r.run("plan2.toml", "bob,carol");
    assert_eq!(run.code, 0, "{}", run.text);
    assert_eq!(r.details("plan2.toml", "import-components", "dpk")["kcv"]["value"], dpk_kcv.as_str());

    // Wipe; restore from two of the three shares (carol's and alice's).
    let plan3 = format!(
        "{}[[step]]\ntype = \"token-init\"\nwipe = true\n\n\
[[step]]\ntype = \"restore\"\ninput = \"backup.json\"\ncustodians = [\"carol\", \"alice\"]\n",
        r.head("restore-from-shares", TOKEN)
    );
    r.write("plan3.toml", &plan3);
    let run = r.run("plan3.toml", "alice,bob");
    assert_eq!(run.code, 0, "{}", run.text);
    let restored = r.details("plan3.toml", "restore", "");
    let kcvs: Vec<&str> =
        restored["keys"].as_array().unwrap().iter().map(|k| k["kcv"]["value"].as_str().unwrap()).collect();
    assert_eq!(kcvs, [dpk_kcv.as_str(), mot_kcv.as_str()]);
    for plan in ["plan2.jsonl", "plan3.jsonl"] {
        let out = r.verify(plan);
        assert_eq!(out.code, 0, "{}", out.text);
    }
}

#[test]
fn bad_input_stops_before_anything_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Rehearsal::new(Module::from_env(), tmp.path());
    let head = r.head("bad-input", TOKEN);
    let keys = keys_toml(None);

    // Plans that cannot be right are refused by `check` and `run` alike.
    for (steps, want) in [
        ("[[step]]\ntype = \"make-coffee\"\n", "unknown variant `make-coffee`"),
        ("[[step]]\ntype = \"generate-key\"\nkey = \"nope\"\n", "key \"nope\" is not a [[key]]"),
        ("[[step]]\ntype = \"token-init\"\nquorum = 4\n", "needs 4 officers but the plan names only 3"),
        (
            "[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\ncomponents = 3\ncustodians = [\"alice\", \"bob\", \"mallory\"]\n",
            "custodian \"mallory\" is not an [[officer]]",
        ),
    ] {
        r.write("bad.toml", &format!("{head}{keys}{steps}"));
        for args in [&["check", "bad.toml"][..], &["run", "bad.toml", "--batch"][..]] {
            let out = r.ceremony(args);
            assert_eq!(out.code, 2, "{args:?} {steps}: {}", out.text);
            assert!(out.text.contains(want), "{steps}: {}", out.text);
        }
    }

    // Set up a token with one key in components, and a backup of it.
    r.write(
        "setup.toml",
        &format!(
            "{head}{keys}[[step]]\ntype = \"token-init\"\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"mot\"\ncomponents = 2\ncustodians = [\"alice\", \"bob\"]\n\n\
[[step]]\ntype = \"backup\"\nkeys = [\"mot\"]\ncustodians = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2\noutput = \"backup.json\"\n"
        ),
    );
    let out = r.run("setup.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);

    // A token that is not blank is not initialised again without wipe.
    r.write("again.toml", &format!("{head}{keys}[[step]]\ntype = \"token-init\"\n"));
    let out = r.run("again.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("already initialised; set wipe = true"), "{}", out.text);
    assert!(!r.dir.join("again.jsonl").exists(), "nothing was recorded: nothing happened");

    // A quorum that the officers present cannot meet; a wrong passphrase.
    r.write("gen.toml", &format!("{head}{keys}[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\n"));
    let out = r.run("gen.toml", "alice");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("needs 2 officers; --present names only 1"), "{}", out.text);
    assert!(!r.dir.join("gen.jsonl").exists(), "refused before the ceremony began");
    std::fs::write(r.secrets.join("officer-carol"), "not carol's passphrase").unwrap();
    let out = r.run("gen.toml", "carol,alice");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("the passphrase of carol is wrong"), "{}", out.text);
    std::fs::write(r.secrets.join("officer-carol"), "passphrase of carol, long enough").unwrap();

    // A wrong component: refused, the key is not made, the transcript
    // closes with the reason; the label stays free for a correct import.
    r.custodians_bring_back();
    let good = std::fs::read_to_string(r.secrets.join("component-mot-bob")).unwrap();
    let setup_mot = r.details("setup.toml", "generate-key", "mot");
    let mot_kcv = setup_mot["kcv"]["value"].as_str().unwrap().to_owned();
    let ckcvs: Vec<String> = setup_mot["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kcv"]["value"].as_str().unwrap().to_owned())
        .collect();
    let import = |name: &str| {
        format!(
            "{head}[[key]]\nname = \"mot\"\nlabel = \"city/3301/mot/again\"\nalgorithm = \"AES128\"\npurpose = \"derivation_master\"\nkcv = {mot_kcv:?}\n\n\
[[step]]\ntype = \"import-components\"\nkey = \"mot\"\ncustodians = [\"alice\", \"bob\"]\ncomponent_kcvs = {ckcvs:?}\n"
        )
        .replace("bad-input", name)
    };
    let flipped: String = good
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                l.to_owned()
            } else {
                format!("{}{}", if l.starts_with('0') { "1" } else { "0" }, &l[1..])
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(r.secrets.join("component-mot-bob"), flipped).unwrap();
    r.write("wrong.toml", &import("wrong-component"));
    let out = r.run("wrong.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(
        out.text.contains("component 2 has KCV") && out.text.contains(&format!("not the published {}", ckcvs[1])),
        "{}",
        out.text
    );
    let last = r.entries("wrong.toml").pop().unwrap();
    assert_eq!(last["event"], "ceremony-aborted");
    assert_eq!(r.verify("wrong.jsonl").code, 0);
    std::fs::write(r.secrets.join("component-mot-bob"), good).unwrap();
    r.write("right.toml", &import("right-component"));
    let out = r.run("right.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);

    // A share of another backup, a mistyped share: refused, nothing restored.
    let restore = |custodians: &str| {
        format!("{head}[[step]]\ntype = \"restore\"\ninput = \"backup.json\"\ncustodians = [{custodians}]\n")
    };
    r.write(
        "second.toml",
        &format!(
            "{head}{keys}[[step]]\ntype = \"backup\"\nkeys = [\"mot\"]\ncustodians = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2\noutput = \"backup2.json\"\n"
        ),
    );
    let out = r.run("second.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    let carol_first = std::fs::read_to_string(r.secrets.join("share-carol")).unwrap();
    let carol_second = std::fs::read_to_string(r.deliver.join("share-carol")).unwrap();

    // Shares are collected before token-init erases anything: a wrong
    // share (here one of the second backup) leaves the token as it was;
    // a restore into a token that holds keys is refused before any change.
    std::fs::write(r.secrets.join("share-carol"), &carol_second).unwrap();
    r.write(
        "wipe-restore.toml",
        &format!(
            "{head}[[step]]\ntype = \"token-init\"\nwipe = true\n\n{}",
            &restore("\"alice\", \"carol\"")[head.len()..]
        ),
    );
    let out = r.run("wipe-restore.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("this share belongs to backup"), "{}", out.text);
    std::fs::write(r.secrets.join("share-carol"), &carol_first).unwrap();
    r.write("full.toml", &restore("\"alice\", \"carol\""));
    let out = r.run("full.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("restored into an empty token"), "{}", out.text);
    r.write(
        "still.toml",
        &format!("{head}{keys}[[step]]\ntype = \"handover\"\nkeys = [\"mot\"]\noutput = \"still.json\"\n"),
    );
    let out = r.run("still.toml", "alice,bob");
    assert_eq!(out.code, 0, "the token still holds its key: {}", out.text);

    // One officer is one officer, however often named.
    let out = r.run("still.toml", "alice,alice");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("--present names alice twice"), "{}", out.text);

    // A plan whose second step would make a key the token holds stops
    // before its first step: the new key is not made either.
    r.write(
        "two.toml",
        &format!(
            "{head}{keys}[[key]]\nname = \"k2\"\nlabel = \"city/3301/k2\"\nalgorithm = \"AES128\"\npurpose = \"mac\"\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"k2\"\n\n[[step]]\ntype = \"generate-key\"\nkey = \"mot\"\n"
        ),
    );
    let out = r.run("two.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("which the plan would make; nothing was changed"), "{}", out.text);
    assert!(!r.dir.join("two.jsonl").exists());
    r.write(
        "k2.toml",
        &format!(
            "{head}[[key]]\nname = \"k2\"\nlabel = \"city/3301/k2\"\nalgorithm = \"AES128\"\npurpose = \"mac\"\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"k2\"\n"
        ),
    );
    let out = r.run("k2.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);

    r.write("wipe.toml", &format!("{head}[[step]]\ntype = \"token-init\"\nwipe = true\n"));
    let out = r.run("wipe.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    std::fs::write(r.secrets.join("share-carol"), &carol_second).unwrap();
    r.write("other.toml", &restore("\"alice\", \"carol\""));
    let out = r.run("other.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("this share belongs to backup"), "{}", out.text);
    // One hex digit of the value changed.
    let typo: String = carol_first
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                return l.to_owned();
            }
            let mut parts: Vec<String> = l.split('-').map(str::to_owned).collect();
            let digit = if parts[3].starts_with('0') { "1" } else { "0" };
            parts[3].replace_range(0..1, digit);
            parts.join("-")
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(r.secrets.join("share-carol"), typo).unwrap();
    r.write("typo.toml", &restore("\"alice\", \"carol\""));
    let out = r.run("typo.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("check value does not match"), "{}", out.text);
    // Bob's share, entered by carol.
    std::fs::write(r.secrets.join("share-carol"), std::fs::read_to_string(r.secrets.join("share-bob")).unwrap())
        .unwrap();
    r.write("swapped.toml", &restore("\"alice\", \"carol\""));
    let out = r.run("swapped.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("this is share 2, which is bob's; carol holds share 3"), "{}", out.text);
    std::fs::write(r.secrets.join("share-carol"), carol_first).unwrap();
    // Nothing was restored by the refused attempts: the labels are free.
    r.write("ok.toml", &restore("\"carol\", \"bob\""));
    let out = r.run("ok.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    assert_eq!(r.details("ok.toml", "restore", "")["keys"][0]["kcv"]["value"], mot_kcv.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_adopts_the_keys_a_ceremony_hands_over() {
    let setup = kms_tests::server::Setup::new(kms_tests::DbKind::Sqlite).await;
    // The ceremony runs on the service's own token (its module and files).
    let r = Rehearsal::new(setup.token.module, setup.dir.path());
    std::fs::write(r.secrets.join("so-pin"), "so-pin-1234").unwrap();
    std::fs::write(r.secrets.join("user-pin"), &setup.token.pin).unwrap();
    r.write(
        "plan.toml",
        &format!(
            "{}{}[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\n\n[[step]]\ntype = \"generate-key\"\nkey = \"mot\"\n\n\
[[step]]\ntype = \"handover\"\nkeys = [\"dpk\", \"mot\"]\noutput = \"handover.json\"\n",
            r.head("handover", &setup.token.label),
            keys_toml(None)
        ),
    );
    let out = r.run("plan.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    let summary = std::fs::read_to_string(r.dir.join("plan.summary.txt")).unwrap();
    let fingerprint =
        summary.lines().find_map(|l| l.strip_prefix("Transcript key SHA-256: ")).unwrap().trim().to_owned();
    let dpk_kcv = r.details("plan.toml", "generate-key", "dpk")["kcv"]["value"].as_str().unwrap().to_owned();

    let server = setup.start();
    let officer = setup.pki.client("officer-handover", Some("security_officer"), Some("city-3301"));
    r.write(
        "client.toml",
        &format!(
            "endpoint = \"https://127.0.0.1:{}\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            server.grpc_port,
            setup.pki.ca_pem.display().to_string(),
            officer.cert.display().to_string(),
            officer.key.display().to_string()
        ),
    );
    let import = |file: &str, key: &str| {
        r.ceremony(&[
            "handover",
            "import",
            file,
            "--transcript",
            "plan.jsonl",
            "--transcript-key",
            key,
            "--client",
            "client.toml",
            "--json",
        ])
    };
    // A changed file, or the wrong transcript key, registers nothing.
    let original = std::fs::read_to_string(r.dir.join("handover.json")).unwrap();
    r.write("changed.json", &original.replace("derivation_master", "transport_export"));
    let out = import("changed.json", &fingerprint);
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("is not the hand-over file recorded"), "{}", out.text);
    let out = import("handover.json", &"ab".repeat(32));
    assert_ne!(out.code, 0, "{}", out.text);

    let out = import("handover.json", &fingerprint);
    assert_eq!(out.code, 0, "{}", out.text);
    let adopted: serde_json::Value = serde_json::from_str(out.text.trim()).unwrap();
    assert_eq!(adopted[0]["name"], "city/3301/mohurd/dpk");
    assert_eq!(adopted[0]["kcv"], dpk_kcv.as_str());
    assert_eq!(adopted[1]["name"], "city/3301/mot/mk");

    // A key that anyone with the user PIN could wrap out is not adopted.
    setup.token.seed_extractable("plain/extractable", &[0x11; 16]);
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    let refused = so
        .import_key(pb::ImportKeyRequest {
            name: "city/3301/plain".into(),
            algorithm: pb::KeyAlgorithm::Des2 as i32,
            purpose: pb::KeyPurpose::DerivationMaster as i32,
            source: Some(pb::import_key_request::Source::HsmObjectLabel("plain/extractable".into())),
            expected_kcv: Some(pb::KeyCheckValue { method: "DES3_ZERO".into(), value: des3_kcv(&[0x11; 16]) }),
        })
        .await
        .unwrap_err();
    assert!(refused.message().contains("CKA_EXTRACTABLE is true and CKA_WRAP_WITH_TRUSTED is not"), "{refused:?}");
    drop(server);
}

/// Ctrl-C while the HSM works (not at a prompt): the ceremony stops at the
/// next check between operations, closes its transcript and exits 130.
/// hsm-sim's latency fault keeps it busy long enough to be interrupted.
#[test]
fn sigint_between_hsm_operations_closes_the_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Rehearsal::new(Module::HsmSim, tmp.path());
    let slow = r.dir.join("slow");
    let head = r.head("interrupted", TOKEN).replacen(
        "module_env = { ",
        &format!("module_env = {{ HSM_SIM_FAULTS = \"latency_ms=150;latency_file={}\", ", slow.display()),
        1,
    );
    let mut steps = String::from("[[step]]\ntype = \"token-init\"\n\n");
    let mut keys = String::new();
    for i in 0..6 {
        keys.push_str(&format!(
            "[[key]]\nname = \"k{i}\"\nlabel = \"city/3301/k{i}\"\nalgorithm = \"AES128\"\npurpose = \"mac\"\n\n"
        ));
        steps.push_str(&format!("[[step]]\ntype = \"generate-key\"\nkey = \"k{i}\"\n\n"));
    }
    r.write("slow.toml", &format!("{head}{keys}{steps}"));
    let child = std::process::Command::new(kms_tests::ceremony::ceremony_bin())
        .args(["run", "slow.toml", "--batch", "--present", "alice,bob", "--transcript", "slow.jsonl"])
        .arg("--secrets-dir")
        .arg(&r.secrets)
        .current_dir(&r.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !r.dir.join("slow.jsonl").exists() {
        assert!(std::time::Instant::now() < deadline, "the ceremony did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(&slow, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&slow).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: Ctrl-C (SIGINT)"), "{stderr}");
    let last = r.entries("slow.toml").pop().unwrap();
    assert_eq!(last["event"], "ceremony-aborted");
    let v = r.verify("slow.jsonl");
    assert_eq!(v.code, 0, "{}", v.text);
}

/// A key delivered wrapped under a transport key in the token: imported
/// when its KCV is the published one, refused (and not kept) otherwise.
#[test]
fn import_wrapped_checks_the_published_kcv() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Rehearsal::new(Module::from_env(), tmp.path());
    let head = r.head("wrapped-delivery", TOKEN);
    let kek = "[[key]]\nname = \"kek\"\nlabel = \"city/3301/kek/import\"\nalgorithm = \"AES128\"\npurpose = \"transport_import\"\n\n";
    r.write(
        "kek.toml",
        &format!(
            "{head}{kek}[[step]]\ntype = \"token-init\"\n\n\
[[step]]\ntype = \"generate-key\"\nkey = \"kek\"\ncomponents = 2\ncustodians = [\"alice\", \"bob\"]\n"
        ),
    );
    let out = r.run("kek.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    // The transport key's value, as its custodians hold it.
    let mut kek_value = [0u8; 16];
    for name in ["alice", "bob"] {
        let text = std::fs::read_to_string(r.deliver.join(format!("component-kek-{name}"))).unwrap();
        let value: String = text.lines().filter(|l| !l.starts_with('#')).collect::<String>().replace(' ', "");
        for (k, b) in kek_value.iter_mut().zip(hex::decode(value).unwrap()) {
            *k ^= b;
        }
    }
    // VECTORS.md: the PBOC test master key, KCV 08D7B4; wrapped with RFC 3394
    // by an independent implementation (RustCrypto aes-kw).
    let mk = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
    let wrapped = aes_kw::KekAes128::from(kek_value).wrap_vec(&mk).unwrap();
    r.write("dpk.wrapped", &hex::encode_upper(&wrapped));
    let import = |label: &str, kcv: &str| {
        format!(
            "{head}{kek}[[key]]\nname = \"dpk\"\nlabel = {label:?}\nalgorithm = \"DES2\"\npurpose = \"derivation_master\"\nkcv = {kcv:?}\n\n\
[[step]]\ntype = \"import-wrapped\"\nkey = \"dpk\"\ntransport = \"kek\"\nwrapped_file = \"dpk.wrapped\"\n"
        )
    };
    r.write("wrong.toml", &import("city/3301/mohurd/dpk", "123456"));
    let out = r.run("wrong.toml", "alice,bob");
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(out.text.contains("not the published 123456: the key was not kept"), "{}", out.text);
    r.write("right.toml", &import("city/3301/mohurd/dpk", "08D7B4"));
    let out = r.run("right.toml", "alice,bob");
    assert_eq!(out.code, 0, "the label stayed free: {}", out.text);
    let details = r.details("right.toml", "import-wrapped", "dpk");
    assert_eq!(details["kcv"]["value"], "08D7B4");
    assert_eq!(details["format"], "CKM_AES_KEY_WRAP");
}
