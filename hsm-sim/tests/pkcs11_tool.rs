//! Interop with OpenSC's `pkcs11-tool`: `--test`, plus key generation,
//! signing, encryption and wrapping round trips. Skipped when the tool is
//! missing unless `HSM_SIM_REQUIRE_TOOLS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;

use common::lib_path;

struct Tool {
    module: String,
    env: Vec<(String, String)>,
}

impl Tool {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&self.module)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .expect("pkcs11-tool");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "pkcs11-tool {args:?} failed:\n{text}");
        text
    }
}

fn tool_present() -> bool {
    let found = Command::new("pkcs11-tool").arg("--help").output().is_ok();
    if !found && std::env::var("HSM_SIM_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("pkcs11-tool is missing and HSM_SIM_REQUIRE_TOOLS=1");
    }
    found
}

#[test]
fn pkcs11_tool_interop() {
    if !tool_present() {
        eprintln!("skipping: pkcs11-tool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("hsm-sim.toml");
    std::fs::write(&conf, "[module]\npin_kdf_iterations = 1000\n[[slot]]\nid = 0\ndir = \"tok\"\n").unwrap();
    let t = Tool {
        module: lib_path().display().to_string(),
        env: vec![("HSM_SIM_CONF".into(), conf.display().to_string())],
    };
    t.run(&["--init-token", "--label", "interop", "--so-pin", "87654321"]);
    t.run(&["--init-pin", "--login", "--so-pin", "87654321", "--pin", "123456"]);
    let pin = ["--login", "--pin", "123456"];
    let with_pin = |extra: &[&str]| {
        let mut a: Vec<&str> = pin.to_vec();
        a.extend_from_slice(extra);
        t.run(&a)
    };
    with_pin(&["--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "rsa"]);
    with_pin(&["--keypairgen", "--key-type", "EC:prime256v1", "--id", "02", "--label", "ec"]);
    with_pin(&["--keygen", "--key-type", "AES:32", "--id", "03", "--label", "aes", "--extractable"]);
    with_pin(&["--keygen", "--key-type", "AES:16", "--id", "04", "--label", "kek"]);
    let out = with_pin(&["--test"]);
    assert!(out.contains("No errors"), "pkcs11-tool --test:\n{out}");
    // A forked child calls C_Initialize again (PKCS#11 v2.40 §6.7.1).
    // (`--test-threads` is left out: pkcs11-tool 0.23 itself sometimes waits
    // 30 s for its own threads after they have finished.)
    t.run(&["--test-fork"]);

    let data = dir.path().join("data.bin");
    std::fs::write(&data, b"hsm-sim interop test data 0123456789abcdef").unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let d = data.display().to_string();
    // ECDSA sign + verify.
    with_pin(&["--sign", "--id", "02", "-m", "ECDSA-SHA256", "-i", &d, "-o", &p("ec.sig")]);
    with_pin(&["--verify", "--id", "02", "-m", "ECDSA-SHA256", "-i", &d, "--signature-file", &p("ec.sig")]);
    // RSA sign + verify (RSA decryption is covered by `--test`; this
    // pkcs11-tool encrypts with secret keys only).
    with_pin(&["--sign", "--id", "01", "-m", "SHA256-RSA-PKCS", "-i", &d, "-o", &p("rsa.sig")]);
    with_pin(&["--verify", "--id", "01", "-m", "SHA256-RSA-PKCS", "-i", &d, "--signature-file", &p("rsa.sig")]);
    // AES-CBC-PAD encrypt + decrypt.
    let iv = "000102030405060708090a0b0c0d0e0f";
    with_pin(&["--encrypt", "--id", "03", "-m", "AES-CBC-PAD", "--iv", iv, "-i", &d, "-o", &p("aes.enc")]);
    with_pin(&["--decrypt", "--id", "03", "-m", "AES-CBC-PAD", "--iv", iv, "-i", &p("aes.enc"), "-o", &p("aes.dec")]);
    assert_eq!(std::fs::read(p("aes.dec")).unwrap(), std::fs::read(&data).unwrap());
    // A long input: pkcs11-tool streams through C_EncryptUpdate with a
    // fixed-size output buffer.
    let big = dir.path().join("big.bin");
    let big_data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &big_data).unwrap();
    let b = big.display().to_string();
    with_pin(&["--encrypt", "--id", "03", "-m", "AES-CBC-PAD", "--iv", iv, "-i", &b, "-o", &p("big.enc")]);
    with_pin(&["--decrypt", "--id", "03", "-m", "AES-CBC-PAD", "--iv", iv, "-i", &p("big.enc"), "-o", &p("big.dec")]);
    assert_eq!(std::fs::read(p("big.dec")).unwrap(), big_data);
    // Wrap the extractable AES key under the KEK (RFC 3394) and unwrap it.
    with_pin(&["--wrap", "--id", "04", "--application-id", "03", "-m", "AES-KEY-WRAP", "-o", &p("wrapped.bin")]);
    assert_eq!(std::fs::metadata(p("wrapped.bin")).unwrap().len(), 40);
    with_pin(&[
        "--unwrap",
        "--id",
        "04",
        "-m",
        "AES-KEY-WRAP",
        "-i",
        &p("wrapped.bin"),
        "--key-type",
        "AES:",
        "--application-id",
        "05",
        "--application-label",
        "unwrapped",
    ]);
    let list = with_pin(&["--list-objects", "--type", "secrkey"]);
    assert!(list.contains("unwrapped"), "{list}");
}
