//! SoftHSM tokens for tests: each gets its own token directory and
//! configuration file, initialised with the real `softhsm2-util`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian installs the module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM token in a directory of its own.
pub struct SoftHsmToken {
    /// The `SOFTHSM2_CONF` file.
    pub conf: PathBuf,
    /// Token label.
    pub label: String,
    /// User PIN (test value).
    pub pin: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
}

impl SoftHsmToken {
    /// Creates a token in the token directory of the `SOFTHSM2_CONF` this
    /// process was started with (for tests that load the module in-process,
    /// where the environment cannot be changed safely).
    pub fn in_process(dir: &Path, label: &str) -> SoftHsmToken {
        let conf = PathBuf::from(std::env::var("SOFTHSM2_CONF").expect(
            "SOFTHSM2_CONF is not set: in-process HSM tests need it before start; run the suite through scripts/test",
        ));
        let pin = format!("pin-{}", crate::unique(4));
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label, "--pin", &pin, "--so-pin", "so-pin-1234"])
            .output()
            .expect("softhsm2-util");
        assert!(out.status.success(), "softhsm2-util failed: {}", String::from_utf8_lossy(&out.stderr));
        let pin_file = dir.join("user.pin");
        std::fs::write(&pin_file, &pin).unwrap();
        SoftHsmToken { conf, label: label.to_owned(), pin, pin_file }
    }
}
