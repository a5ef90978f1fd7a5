//! How the ceremony talks to people: screens, confirmations, no-echo
//! prompts, and showing a component or share to one custodian alone.
//!
//! Interactively, secrets are typed at prompts that echo nothing (the
//! terminal in raw mode) and Ctrl-C at any prompt cancels the ceremony
//! cleanly. For tests and rehearsals ([`Io::batch`]) secrets come from a
//! directory of files or from `NAME=VALUE` lines on a file descriptor, and
//! what would be shown to a custodian is written to a file only they read.
//! Secrets never come from the command line or the environment.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use console::{Key, Term};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::CeremonyError;

/// Longest secret or answer read.
pub const MAX_INPUT: usize = 512;

/// Where non-interactive secrets come from.
#[derive(Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
    lines: BTreeMap<String, SecretString>,
}

impl Secrets {
    /// Secrets as files named after them in `dir`.
    pub fn from_dir(dir: &Path) -> Secrets {
        Secrets { dir: Some(dir.to_owned()), lines: BTreeMap::new() }
    }

    /// Adds `NAME=VALUE` lines read from `reader` (a file descriptor).
    pub fn read_lines(&mut self, reader: impl BufRead) -> Result<(), CeremonyError> {
        for (n, line) in reader.lines().enumerate() {
            let line = Zeroizing::new(line.map_err(CeremonyError::file("secrets descriptor"))?);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(CeremonyError::Refused(format!("secrets descriptor line {}: expected NAME=VALUE", n + 1)));
            };
            self.lines.insert(name.trim().to_owned(), SecretString::from(value.trim().to_owned()));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<SecretString, CeremonyError> {
        if let Some(s) = self.lines.get(id) {
            return Ok(s.clone());
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(id);
            if path.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_err(CeremonyError::file(&path))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(CeremonyError::Refused(format!(
                        "{} can be read by others (mode {:o}); a secret file must be 0600",
                        path.display(),
                        mode & 0o777
                    )));
                }
                let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(CeremonyError::file(&path))?);
                if text.len() > MAX_INPUT * 4 {
                    return Err(CeremonyError::Refused(format!("{}: too long for a secret", path.display())));
                }
                // `#` lines are notes (what a custodian's delivery file
                // says about its secret); the rest is the secret.
                let mut value = Zeroizing::new(String::with_capacity(text.len()));
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    if !value.is_empty() {
                        value.push('\n');
                    }
                    value.push_str(line);
                }
                return Ok(SecretString::from(value.trim().to_owned()));
            }
        }
        Err(CeremonyError::MissingSecret {
            id: id.to_owned(),
            hint: match &self.dir {
                Some(d) => format!("no line {id}=... on the descriptor and no file {}", d.join(id).display()),
                None => format!("no line {id}=... on the secrets descriptor"),
            },
        })
    }
}

enum Mode {
    Interactive(Term),
    Batch { secrets: Secrets, deliver: Option<PathBuf>, present: Vec<String> },
}

/// The ceremony's console.
pub struct Io {
    mode: Mode,
    out: Term,
}

impl Io {
    /// Interactive: prompts on the terminal.
    pub fn interactive() -> Result<Io, CeremonyError> {
        let term = Term::stdout();
        if !term.is_term() {
            return Err(CeremonyError::Refused(
                "an interactive ceremony needs a terminal; use --batch with --secrets for rehearsals".into(),
            ));
        }
        Ok(Io { mode: Mode::Interactive(term), out: Term::stdout() })
    }

    /// Non-interactive: secrets from `secrets`, officers in the order of
    /// `present`, custodians' screens written to files in `deliver`.
    pub fn batch(secrets: Secrets, deliver: Option<PathBuf>, present: Vec<String>) -> Io {
        Io { mode: Mode::Batch { secrets, deliver, present }, out: Term::stdout() }
    }

    /// Whether a person answers the prompts.
    pub fn is_interactive(&self) -> bool {
        matches!(self.mode, Mode::Interactive(_))
    }

    /// Officers present, in order (batch runs).
    pub fn present(&self) -> &[String] {
        match &self.mode {
            Mode::Batch { present, .. } => present,
            Mode::Interactive(_) => &[],
        }
    }

    /// Prints a line for everyone in the room.
    pub fn say(&self, text: &str) {
        let _ = self.out.write_line(text);
    }

    /// Asks a yes/no question; "no" or Ctrl-C stop the ceremony. Batch
    /// runs answer yes (the plan is the confirmation).
    pub fn confirm(&mut self, question: &str) -> Result<(), CeremonyError> {
        let Mode::Interactive(term) = &self.mode else {
            self.say(&format!("{question} [yes: batch run]"));
            return Ok(());
        };
        loop {
            let answer = read_line(term, &format!("{question} Type yes or no: "), true)?;
            match answer.trim() {
                "yes" => return Ok(()),
                "no" => return Err(CeremonyError::Interrupted(format!("declined: {question}"))),
                _ => {}
            }
        }
    }

    /// Asks for a public answer (an officer's name), echoed.
    pub fn ask(&mut self, prompt: &str) -> Result<String, CeremonyError> {
        match &self.mode {
            Mode::Interactive(term) => Ok(read_line(term, prompt, true)?.trim().to_owned()),
            Mode::Batch { .. } => Err(CeremonyError::Refused(format!("{prompt}: no answer in a batch run"))),
        }
    }

    /// Asks for a secret named `id`, with no echo.
    pub fn secret(&mut self, id: &str, prompt: &str) -> Result<SecretString, CeremonyError> {
        match &self.mode {
            Mode::Interactive(term) => {
                let line = read_line(term, prompt, false)?;
                Ok(SecretString::from(line.trim().to_owned()))
            }
            Mode::Batch { secrets, .. } => secrets.get(id),
        }
    }

    /// Asks for a new secret twice (interactively) until both agree.
    pub fn new_secret(&mut self, id: &str, prompt: &str) -> Result<SecretString, CeremonyError> {
        if !self.is_interactive() {
            return self.secret(id, prompt);
        }
        loop {
            let first = self.secret(id, prompt)?;
            let again = self.secret(id, "Again, to confirm: ")?;
            if first.expose_secret() == again.expose_secret() && !first.expose_secret().is_empty() {
                return Ok(first);
            }
            self.say("The two entries differ (or are empty); once more.");
        }
    }

    /// Shows a secret `value` (with public `info` lines) to `custodian`
    /// alone. Interactively: the screen is cleared, the custodian confirms
    /// they alone are looking, the secret is shown until they press Enter,
    /// then cleared with the scroll-back. Batch: written to
    /// `<deliver>/<file>` (mode 0600), `info` as `#` lines and the value on
    /// its own line, so the file can serve as the secret's input later.
    pub fn show_private(
        &mut self,
        custodian: &str,
        info: &[String],
        value: &str,
        file: &str,
    ) -> Result<(), CeremonyError> {
        match &self.mode {
            Mode::Interactive(term) => {
                clear(term);
                let _ = term.write_line(&format!(
                    "Only {custodian} may look at the screen now. Everyone else, look away.\n{custodian}: press Enter when you alone are watching."
                ));
                wait_enter(term)?;
                let _ = term.write_line("");
                for l in info {
                    let _ = term.write_line(l);
                }
                let shown = Zeroizing::new(format!("\n    {value}\n"));
                let _ = term.write_line(&shown);
                let _ = term.write_line("Write it on your form, check it, then press Enter to clear the screen.");
                let waited = wait_enter(term);
                clear(term);
                waited?;
                let _ = term.write_line(&format!("{custodian} has seen their secret; the screen is cleared."));
                Ok(())
            }
            Mode::Batch { deliver, .. } => {
                let title = info.first().map(String::as_str).unwrap_or("secret");
                let Some(dir) = deliver else {
                    return Err(CeremonyError::Refused(format!(
                        "{title} for {custodian}: a batch run needs --deliver DIR for what custodians are shown"
                    )));
                };
                let path = dir.join(file);
                let mut text = Zeroizing::new(String::new());
                for l in info {
                    text.push_str("# ");
                    text.push_str(l);
                    text.push('\n');
                }
                text.push_str(value);
                text.push('\n');
                write_private(&path, text.as_bytes())?;
                let _ = self.out.write_line(&format!("{title}: for {custodian}, written to {}", path.display()));
                Ok(())
            }
        }
    }
}

/// Writes a file only its owner can read, refusing to replace one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CeremonyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(CeremonyError::file(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(CeremonyError::file(path))
}

fn clear(term: &Term) {
    let _ = term.clear_screen();
    // why: clear_screen leaves the scroll-back; ESC[3J erases it, so a
    // component cannot be scrolled back to.
    let _ = term.write_str("\x1b[3J");
}

fn wait_enter(term: &Term) -> Result<(), CeremonyError> {
    loop {
        match term.read_key_raw() {
            Ok(Key::Enter) => return Ok(()),
            Ok(Key::CtrlC) => return Err(CeremonyError::Interrupted("Ctrl-C".into())),
            Ok(_) => {}
            Err(e) => return Err(CeremonyError::file("terminal")(e)),
        }
    }
}

/// Reads a line key by key in raw mode: nothing is echoed unless `echo`,
/// Backspace edits, Enter ends, Ctrl-C interrupts.
fn read_line(term: &Term, prompt: &str, echo: bool) -> Result<Zeroizing<String>, CeremonyError> {
    let _ = term.write_str(prompt);
    let _ = term.flush();
    // why: reserved up front so the buffer never reallocates, leaving an
    // unzeroized copy of a secret behind.
    let mut line = Zeroizing::new(String::with_capacity(MAX_INPUT * 4));
    loop {
        let key = term.read_key_raw().map_err(CeremonyError::file("terminal"))?;
        match key {
            Key::Enter => {
                let _ = term.write_line("");
                return Ok(line);
            }
            Key::CtrlC => {
                let _ = term.write_line("^C");
                return Err(CeremonyError::Interrupted("Ctrl-C".into()));
            }
            Key::Backspace if line.pop().is_some() && echo => {
                let _ = term.clear_chars(1);
            }
            Key::Char(c) if !c.is_control() && line.len() < MAX_INPUT => {
                line.push(c);
                if echo {
                    let _ = term.write_str(&c.to_string());
                }
            }
            _ => {}
        }
    }
}
