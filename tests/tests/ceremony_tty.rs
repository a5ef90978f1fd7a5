//! An interactive ceremony driven through a real terminal (tmux): secrets
//! typed at prompts never appear on the screen, a component with the wrong
//! KCV is asked for again, and Ctrl-C at a prompt leaves the token and the
//! transcript consistent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use kms_tests::ceremony::{Rehearsal, USER_PIN};
use kms_tests::token::Module;

/// A tmux session on a private server socket.
struct Tty {
    socket: String,
    screen_log: String,
}

impl Tty {
    fn start(dir: &std::path::Path, command: &str) -> Tty {
        let tty = Tty { socket: format!("kms-ceremony-{}", kms_tests::unique(6)), screen_log: String::new() };
        let status = Command::new("tmux")
            .args(["-L", &tty.socket, "new-session", "-d", "-x", "220", "-y", "60", "-c"])
            .arg(dir)
            .arg(format!("{command}; echo EXIT=$?; sleep 600"))
            .status()
            .expect("tmux runs (scripts/test installs it)");
        assert!(status.success());
        tty
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-S", "-1000", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` `count` times in all.
    fn wait_for_n(&mut self, text: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.matches(text).count() >= count {
                self.screen_log.push_str(&s);
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {text:?}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&mut self, text: &str) -> String {
        self.wait_for_n(text, 1)
    }

    fn type_line(&self, text: &str) {
        let ok = Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "0", "-l", text]).status().unwrap();
        assert!(ok.success());
        self.key("Enter");
    }

    fn key(&self, key: &str) {
        let ok = Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "0", key]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn an_interactive_ceremony_hides_secrets_asks_again_and_survives_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Rehearsal::new(Module::from_env(), tmp.path());
    let secret = |name: &str| std::fs::read_to_string(r.secrets.join(name)).unwrap().trim().to_owned();
    let head = r.head("tty", "city-3301-tty");
    // Set up (batch): a token and an AES key in two components.
    r.write(
        "setup.toml",
        &format!(
            "{head}[[key]]\nname = \"mot\"\nlabel = \"city/3301/mot/mk\"\nalgorithm = \"AES128\"\npurpose = \"derivation_master\"\n\n\
[[step]]\ntype = \"token-init\"\n\n[[step]]\ntype = \"generate-key\"\nkey = \"mot\"\ncomponents = 2\ncustodians = [\"alice\", \"bob\"]\n"
        ),
    );
    let out = r.run("setup.toml", "alice,bob");
    assert_eq!(out.code, 0, "{}", out.text);
    let made = r.details("setup.toml", "generate-key", "mot");
    let kcv = made["kcv"]["value"].as_str().unwrap().to_owned();
    let ckcvs: Vec<String> =
        made["components"].as_array().unwrap().iter().map(|c| c["kcv"]["value"].as_str().unwrap().to_owned()).collect();
    r.custodians_bring_back();
    let component = |who: &str| {
        let t = secret(&format!("component-mot-{who}"));
        t.lines().find(|l| !l.starts_with('#')).unwrap().to_owned()
    };
    let (c_alice, c_bob) = (component("alice"), component("bob"));
    let import = |label: &str| {
        format!(
            "{head}[[key]]\nname = \"mot\"\nlabel = {label:?}\nalgorithm = \"AES128\"\npurpose = \"derivation_master\"\nkcv = {kcv:?}\n\n\
[[step]]\ntype = \"import-components\"\nkey = \"mot\"\ncustodians = [\"alice\", \"bob\"]\ncomponent_kcvs = {ckcvs:?}\n"
        )
    };
    let bin = kms_tests::ceremony::ceremony_bin();
    let secrets_typed =
        [USER_PIN.to_owned(), secret("officer-alice"), secret("officer-bob"), c_alice.clone(), c_bob.clone()];

    // 1. Interactive import: one wrong component, asked again, then right.
    r.write("import.toml", &import("city/3301/mot/tty"));
    let mut tty = Tty::start(&r.dir, &format!("{} run import.toml --transcript import.jsonl", bin.display()));
    tty.wait_for("Begin the ceremony? Type yes or no:");
    tty.type_line("yes");
    tty.wait_for("User PIN of the token:");
    tty.type_line(USER_PIN);
    tty.wait_for("Run step 1? Type yes or no:");
    tty.type_line("yes");
    tty.wait_for("Officer 1 of 2, your name:");
    tty.type_line("alice");
    tty.wait_for("Passphrase of alice:");
    tty.type_line(&secret("officer-alice"));
    tty.wait_for("Officer 2 of 2, your name:");
    tty.type_line("bob");
    tty.wait_for("Passphrase of bob:");
    tty.type_line(&secret("officer-bob"));
    // Custodian alice authenticates, then types a component of bob's.
    tty.wait_for_n("Passphrase of alice:", 2);
    tty.type_line(&secret("officer-alice"));
    tty.wait_for("alice, component 1 of 2");
    tty.type_line(&c_bob);
    let s = tty.wait_for("Enter it again (2 tries left)");
    assert!(s.contains(&format!("not the published {}", ckcvs[0])), "{s}");
    tty.type_line(&c_alice);
    tty.wait_for(&format!("Component 1 KCV {} matches.", ckcvs[0]));
    tty.wait_for_n("Passphrase of bob:", 2);
    tty.type_line(&secret("officer-bob"));
    tty.wait_for("bob, component 2 of 2");
    tty.type_line(&c_bob);
    let s = tty.wait_for("EXIT=");
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(s.contains(&format!("KCV (AES_ZERO) {kcv}")), "{s}");
    for typed in &secrets_typed {
        assert!(!tty.screen_log.contains(typed.as_str()), "a secret was echoed: {typed}");
        assert!(!tty.screen_log.contains(&typed.replace(' ', "")), "a secret was echoed");
    }
    drop(tty);
    assert_eq!(r.verify("import.jsonl").code, 0);

    // 2. Ctrl-C at the second custodian's component prompt: the ceremony
    // stops (exit 130), the transcript closes with ceremony-aborted and
    // verifies, and the key was not made (the same import then succeeds).
    r.write("abort.toml", &import("city/3301/mot/abort"));
    let mut tty = Tty::start(&r.dir, &format!("{} run abort.toml --transcript abort.jsonl", bin.display()));
    tty.wait_for("Begin the ceremony? Type yes or no:");
    tty.type_line("yes");
    tty.wait_for("User PIN of the token:");
    tty.type_line(USER_PIN);
    tty.wait_for("Run step 1? Type yes or no:");
    tty.type_line("yes");
    for (n, who) in [(1, "alice"), (2, "bob")] {
        tty.wait_for(&format!("Officer {n} of 2, your name:"));
        tty.type_line(who);
        tty.wait_for(&format!("Passphrase of {who}:"));
        tty.type_line(&secret(&format!("officer-{who}")));
    }
    tty.wait_for_n("Passphrase of alice:", 2);
    tty.type_line(&secret("officer-alice"));
    tty.wait_for("alice, component 1 of 2");
    tty.type_line(&c_alice);
    tty.wait_for_n("Passphrase of bob:", 2);
    tty.type_line(&secret("officer-bob"));
    tty.wait_for("bob, component 2 of 2");
    tty.key("C-c");
    let s = tty.wait_for("EXIT=");
    assert!(s.contains("EXIT=130"), "{s}");
    drop(tty);
    let key = r.summary_key("abort.jsonl");
    let v = r.ceremony(&["transcript", "verify", "abort.jsonl", "--key", &key, "--json"]);
    assert_eq!(v.code, 0, "{}", v.text);
    assert!(v.text.contains("\"closing\":\"ceremony-aborted\""), "{}", v.text);
    let out = r.run("abort.toml", "alice,bob");
    assert_ne!(out.code, 0, "the transcript file exists: a second run must not overwrite it");
    let out = r.ceremony(&[
        "run",
        "abort.toml",
        "--batch",
        "--secrets-dir",
        r.secrets.to_str().unwrap(),
        "--present",
        "alice,bob",
        "--transcript",
        "abort-again.jsonl",
    ]);
    assert_eq!(out.code, 0, "the label stayed free: {}", out.text);
}
