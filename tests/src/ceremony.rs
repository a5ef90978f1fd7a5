//! Rehearsals of key ceremonies: the real `ceremony` binary against a real
//! module, in batch mode, with officers, secrets and plans in a test
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::token::{Module, module_env};

/// The officers of every rehearsal.
pub const OFFICERS: [&str; 3] = ["alice", "bob", "carol"];
/// SO PIN of rehearsal tokens.
pub const SO_PIN: &str = "so-pin-246810";
/// User PIN of rehearsal tokens.
pub const USER_PIN: &str = "user-pin-13579";

/// The `ceremony` binary: `$CEREMONY_BIN`, else built once with cargo.
pub fn ceremony_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| crate::server::workspace_bin("CEREMONY_BIN", "ceremony", "ceremony")).clone()
}

/// A rehearsal directory: module environment, officers' credentials,
/// a secrets directory and a delivery directory.
pub struct Rehearsal {
    /// The directory (plans, outputs, transcripts).
    pub dir: PathBuf,
    /// The module.
    pub module: Module,
    /// The module's environment (for the plan's `module_env`).
    pub env: Vec<(String, String)>,
    /// `[[officer]]` tables.
    pub officers_toml: String,
    /// Secrets for `--secrets-dir`.
    pub secrets: PathBuf,
    /// Custodians' deliveries (`--deliver`).
    pub deliver: PathBuf,
}

/// The result of one `ceremony` run.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout + stderr.
    pub text: String,
}

impl Rehearsal {
    /// Sets up `dir` for `module` with the three officers (credentials made
    /// by `ceremony officer credential`, passphrases in the secrets dir).
    pub fn new(module: Module, dir: &Path) -> Rehearsal {
        let env = module_env(module, dir);
        let secrets = dir.join("secrets");
        let deliver = dir.join("deliver");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::create_dir_all(&deliver).unwrap();
        let private = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        };
        private(secrets.join("so-pin"), SO_PIN);
        private(secrets.join("user-pin"), USER_PIN);
        let mut officers_toml = String::new();
        for name in OFFICERS {
            let passphrase = format!("passphrase of {name}, long enough");
            private(secrets.join(format!("officer-{name}")), &passphrase);
            let mut child = Command::new(ceremony_bin())
                .args(["officer", "credential", name, "--iterations", "100000", "--passphrase-fd", "0"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{passphrase}\n").as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            officers_toml.push_str(&String::from_utf8(out.stdout).unwrap());
        }
        Rehearsal { dir: dir.to_owned(), module, env, officers_toml, secrets, deliver }
    }

    /// The `[ceremony]`, `[hsm]` and `[[officer]]` part of a plan.
    pub fn head(&self, name: &str, token: &str) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        format!(
            "[ceremony]\nname = {name:?}\nquorum = 2\n\n[hsm]\nmodule = {:?}\ntoken = {token:?}\nmodule_env = {{ {} }}\n{}\n\n{}\n",
            self.module.path().display().to_string(),
            env.join(", "),
            self.module.vendor_toml(),
            self.officers_toml
        )
    }

    /// Writes `file` in the directory.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.dir.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `ceremony ARGS` in the directory.
    pub fn ceremony(&self, args: &[&str]) -> Run {
        let out: Output = Command::new(ceremony_bin()).args(args).current_dir(&self.dir).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            text: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Runs `plan` in batch mode with `present` officers; the transcript
    /// is `<plan stem>.jsonl`.
    pub fn run(&self, plan: &str, present: &str) -> Run {
        let transcript = format!("{}.jsonl", plan.trim_end_matches(".toml"));
        self.ceremony(&[
            "run",
            plan,
            "--batch",
            "--secrets-dir",
            self.secrets.to_str().unwrap(),
            "--present",
            present,
            "--deliver",
            self.deliver.to_str().unwrap(),
            "--transcript",
            &transcript,
        ])
    }

    /// The transcript entries of `plan`'s run.
    pub fn entries(&self, plan: &str) -> Vec<serde_json::Value> {
        let t = self.dir.join(format!("{}.jsonl", plan.trim_end_matches(".toml")));
        std::fs::read_to_string(t).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The details of the first entry of `event` in `plan`'s transcript
    /// whose `details.key` is `key` (any, if `key` is empty).
    pub fn details(&self, plan: &str, event: &str, key: &str) -> serde_json::Value {
        self.entries(plan)
            .into_iter()
            .find(|e| e["event"] == event && (key.is_empty() || e["details"]["key"] == key))
            .unwrap_or_else(|| panic!("no {event} entry for {key:?} in {plan}"))["details"]
            .clone()
    }

    /// The transcript key fingerprint on the witnesses' summary of the run
    /// whose transcript is `transcript` (`x.jsonl` → `x.summary.txt`).
    pub fn summary_key(&self, transcript: &str) -> String {
        let summary = self.dir.join(transcript.replace(".jsonl", ".summary.txt"));
        let text = std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{}: {e}", summary.display()));
        text.lines().find_map(|l| l.strip_prefix("Transcript key SHA-256: ")).unwrap().trim().to_owned()
    }

    /// `ceremony transcript verify` of `transcript` against the key on its
    /// summary.
    pub fn verify(&self, transcript: &str) -> Run {
        let key = self.summary_key(transcript);
        self.ceremony(&["transcript", "verify", transcript, "--key", &key])
    }

    /// Moves what custodians were shown into the secrets directory, as
    /// they would bring it back on their forms.
    pub fn custodians_bring_back(&self) {
        for e in std::fs::read_dir(&self.deliver).unwrap() {
            let e = e.unwrap();
            std::fs::rename(e.path(), self.secrets.join(e.file_name())).unwrap();
        }
    }
}
