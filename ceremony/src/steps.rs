//! Running a plan: the checks made before anything changes, each step,
//! the transcript entries and the witnesses' summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use kms::hsm::Capabilities;
use kms::hsm::keyops::{self, Export, WrapFormat};
use kms::hsm::raw::mechanism_type;
use kms::hsm::signer::HsmSigner;
use kms::keys::{Algorithm, KcvMethod};
use kms_ca::{DistinguishedNameSpec, DnAttribute, Issuer, RevocationReason, RevokedEntry};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use zeroize::Zeroizing;

use crate::backup::{self, BackupFile, BackupKey, KcvJson};
use crate::error::{CeremonyError, hsm};
use crate::io::{Io, write_private};
use crate::plan::{KeyPlan, Plan, Step};
use crate::shamir;
use crate::token::{self, Module};
use crate::transcript::{self, Transcript};

/// Wrong entries of one component or share before the step stops.
pub const MAX_ATTEMPTS: usize = 3;

/// Builds a subject from a plan's `subject` table.
pub fn subject(table: &std::collections::BTreeMap<String, String>) -> Result<DistinguishedNameSpec, String> {
    let mut dn = DistinguishedNameSpec::new();
    for (k, v) in table {
        let attribute = DnAttribute::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(k))
            .ok_or_else(|| format!("subject attribute {k:?} is not one of C, ST, L, O, OU, CN, serialNumber"))?;
        if v.is_empty() || v.len() > 64 {
            return Err(format!("subject {k} must be 1-64 characters"));
        }
        dn.set(attribute, v.clone());
    }
    if dn.get(DnAttribute::CommonName).is_none() {
        return Err("the subject needs a CN".into());
    }
    Ok(dn)
}

/// What the witnesses' summary lists.
#[derive(Default)]
struct Summary {
    officers: BTreeSet<String>,
    steps: Vec<String>,
    keys: Vec<String>,
    certificates: Vec<String>,
    backups: Vec<String>,
    warnings: Vec<String>,
}

/// Options of `ceremony run`.
pub struct RunOptions {
    /// Transcript file to create.
    pub transcript: PathBuf,
    /// Witnesses' summary file to create.
    pub summary: PathBuf,
}

struct Runner<'a> {
    plan: &'a Plan,
    io: &'a mut Io,
    module: &'a Module,
    session: Session,
    caps: Capabilities,
    transcript: Transcript,
    summary: Summary,
    restores: BTreeMap<usize, PreparedRestore>,
    interrupted: crate::interrupt::Interrupted,
}

/// A restore prepared before anything changes: the backup file and its key,
/// combined from shares that were each checked against the file.
struct PreparedRestore {
    file: BackupFile,
    key: Zeroizing<Vec<u8>>,
    shares_from: Vec<String>,
}

/// Runs `plan`. Everything that can be checked without changing the token
/// is checked first (the plan, the files, the officers present, the
/// token's state and labels, and the shares of any restore); then the
/// steps run in order, each confirmed, authorised by the quorum and
/// recorded.
pub fn run(plan: &Plan, io: &mut Io, options: &RunOptions) -> Result<(), CeremonyError> {
    check_present(plan, io)?;
    let backups = preflight(plan, options)?;
    let module = Module::load(&plan.hsm)?;
    // After the module is loaded: its environment is set before any thread.
    let interrupted = crate::interrupt::watch();
    check_token_state(plan, &module)?;

    io.say(&format!(
        "Ceremony {:?}: {} steps on token {:?} of {}",
        plan.name,
        plan.steps.len(),
        plan.hsm.token,
        module.name
    ));
    if !io.is_interactive() {
        io.say("BATCH RUN: secrets come from files, not from the officers at the keyboard (recorded).");
    }
    for (i, step) in plan.steps.iter().enumerate() {
        io.say(&format!("  {}. {} (quorum {})", i + 1, describe(plan, step), plan.quorum_of(step)));
    }
    io.say(&format!("Plan SHA-256: {}", hex::encode(plan.sha256)));
    io.confirm("Begin the ceremony?")?;

    // The shares of a restore are collected and checked before anything
    // changes: before token-init erases the token or, without token-init,
    // once the token's contents were found to fit the plan.
    let mut restores = BTreeMap::new();
    let mut early_officers = BTreeSet::new();
    let mut collect = |io: &mut Io, backups: BTreeMap<usize, BackupFile>| -> Result<(), CeremonyError> {
        for (index, file) in backups {
            let prepared = prepare_restore(plan, io, index, file)?;
            early_officers.extend(prepared.shares_from.iter().cloned());
            restores.insert(index, prepared);
        }
        interrupted.check()
    };

    // Token set-up comes before the transcript can exist: its entry is
    // written as soon as the transcript key is made in the new token.
    let mut pending = None;
    let mut first = 0;
    let session = if let Some(Step::TokenInit { wipe, .. }) = plan.steps.first() {
        collect(io, backups)?;
        let officers = authorise(plan, io, 0)?;
        let slot = if *wipe { module.token_slot()? } else { blank_slot(&module)? };
        let so_pin = if *wipe {
            io.secret("so-pin", "Current SO PIN of the token to erase: ")?
        } else {
            io.new_secret("so-pin", "New SO PIN: ")?
        };
        let user_pin = io.new_secret("user-pin", "New user PIN: ")?;
        check_pin(&so_pin)?;
        check_pin(&user_pin)?;
        interrupted.check()?;
        module.init_token(slot, &so_pin, &user_pin)?;
        io.say(&format!("Token {:?} initialised{}.", plan.hsm.token, if *wipe { " (erased)" } else { "" }));
        pending = Some((officers, json!({ "token": plan.hsm.token, "wiped": wipe })));
        first = 1;
        module.user_session(&user_pin)?
    } else {
        let user_pin = io.secret("user-pin", "User PIN of the token: ")?;
        let session = module.user_session(&user_pin)?;
        check_token_labels(plan, &session, &module.name, &backups)?;
        collect(io, backups)?;
        session
    };
    let caps = module.probe(&session)?;
    if plan.keys.values().any(|k| k.backup) {
        token::require_trusted_wrap(&session, &module.name)?;
    }
    let (key, public) = token::transcript_key(&session, &module.name)?;
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&public.spki_der));
    let transcript = Transcript::create(
        &options.transcript,
        &plan.name,
        &session,
        &module.name,
        key,
        json!({
            "plan": plan.path.display().to_string(),
            "plan_sha256": hex::encode(plan.sha256),
            "module": module.name,
            "token": plan.hsm.token,
            "mode": if io.is_interactive() { "interactive" } else { "batch" },
            "present": io.present(),
            "officers": plan.officers.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
            "transcript_key": {
                "spki": hex::encode(&public.spki_der),
                "ec_point": hex::encode(&public.raw),
                "sha256": fingerprint,
            },
        }),
    )?;
    io.say(&format!(
        "Transcript {} started; its key's SHA-256 fingerprint is {fingerprint}",
        options.transcript.display()
    ));
    let mut runner = Runner {
        plan,
        io,
        module: &module,
        session,
        caps,
        transcript,
        summary: Summary::default(),
        restores,
        interrupted,
    };
    runner.summary.officers.extend(early_officers);
    if !runner.io.is_interactive() {
        runner.summary.warnings.push("batch run: secrets came from files (a rehearsal or test)".into());
    }
    let outcome = match pending {
        Some((officers, details)) => {
            runner.summary.officers.extend(officers.iter().cloned());
            runner.summary.steps.push(format!("1. token-init: authorised by {}", officers.join(", ")));
            runner.transcript.append(&runner.session, "token-init", Some(1), &officers, details)
        }
        None => Ok(()),
    }
    .and_then(|()| (first..plan.steps.len()).try_for_each(|i| runner.step(i)))
    .and_then(|()| runner.interrupted.check());
    match outcome {
        Ok(()) => {
            runner.transcript.append(&runner.session, "ceremony-completed", None, &[], json!({}))?;
            let text = runner.summary_text(&fingerprint, "completed");
            write_private(&options.summary, text.as_bytes())?;
            let pdf = options.summary.with_extension("pdf");
            write_private(&pdf, &crate::pdf::render(&format!("Key ceremony {}", plan.name), &text))?;
            runner.io.say(&text);
            runner.io.say(&format!("Summary written to {} (printable: {})", options.summary.display(), pdf.display()));
            Ok(())
        }
        Err(e) => {
            let event = "ceremony-aborted";
            let reason = e.to_string();
            if let Err(t) = runner.transcript.append(&runner.session, event, None, &[], json!({ "reason": reason })) {
                runner.io.say(&format!("could not record the abort in the transcript: {t}"));
            }
            let text = runner.summary_text(&fingerprint, &format!("ABORTED: {reason}"));
            if write_private(&options.summary, text.as_bytes()).is_ok() {
                runner.io.say(&format!("Summary of the aborted ceremony written to {}", options.summary.display()));
            }
            Err(e)
        }
    }
}

/// Batch runs: officers named once each, enough of them for every step.
fn check_present(plan: &Plan, io: &Io) -> Result<(), CeremonyError> {
    if io.is_interactive() {
        return Ok(());
    }
    let present = io.present();
    for (i, name) in present.iter().enumerate() {
        if present[..i].contains(name) {
            return Err(CeremonyError::Refused(format!("--present names {name} twice: one officer counts once")));
        }
        if plan.officer(name).is_none() {
            return Err(CeremonyError::Refused(format!("--present names {name:?}, who is not an officer of the plan")));
        }
    }
    // Deliveries are named by custodian: two backups in one batch run
    // would give one custodian two files of the same name.
    let mut holders = BTreeSet::new();
    for step in &plan.steps {
        if let Step::Backup { custodians, .. } = step {
            for c in custodians {
                if !holders.insert(c.as_str()) {
                    return Err(CeremonyError::Refused(format!(
                        "{c} holds shares of two backups of this plan; a batch run delivers one share file per custodian"
                    )));
                }
            }
        }
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let needed = plan.quorum_of(step);
        if needed > present.len() {
            return Err(CeremonyError::Refused(format!(
                "step {} needs {needed} officers; --present names only {}",
                i + 1,
                present.len()
            )));
        }
    }
    Ok(())
}

/// Collects and checks the shares of restore step `index`: each custodian
/// authenticates and enters their own share (its number is theirs in the
/// file), each share matches the file's record of it, and the combined
/// key verifies the file's MAC.
fn prepare_restore(plan: &Plan, io: &mut Io, index: usize, file: BackupFile) -> Result<PreparedRestore, CeremonyError> {
    let Some(Step::Restore { custodians, .. }) = plan.steps.get(index) else {
        return Err(CeremonyError::Refused(format!("step {} is not a restore", index + 1)));
    };
    io.say(&format!(
        "Step {} restores backup {} ({} keys): {} share holders, one after the other.",
        index + 1,
        file.backup_id,
        file.keys.len(),
        file.threshold
    ));
    let id = hex::decode(&file.backup_id).map_err(|_| CeremonyError::Refused("bad backup_id".into()))?;
    let mut shares: Vec<backup::Share> = Vec::new();
    let mut shares_from = Vec::new();
    for custodian in custodians.iter().take(file.threshold) {
        io.say(&format!("{custodian}, authenticate to enter your share."));
        authenticate_retrying(plan, io, custodian)?;
        let expected_x = file.custodians.iter().position(|c| c == custodian).map(|p| p + 1).unwrap_or(0);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let text = io.secret(
                &format!("share-{custodian}"),
                &format!("{custodian}, your share of backup {} (not shown): ", file.backup_id),
            )?;
            let problem = match backup::decode_share(text.expose_secret(), &id) {
                Ok(s) if usize::from(s.x) != expected_x => format!(
                    "this is share {}, which is {}'s; {custodian} holds share {expected_x}",
                    s.x,
                    file.custodians.get(usize::from(s.x).wrapping_sub(1)).map(String::as_str).unwrap_or("nobody")
                ),
                Ok(s)
                    if file.share_hashes.get(expected_x - 1).map(String::as_str)
                        != Some(backup::share_hash(&id, s.x, &s.y).as_str()) =>
                {
                    format!("share {} does not match the backup file's record of it", s.x)
                }
                Ok(s) => {
                    io.say(&format!("Share {} of {custodian} accepted.", s.x));
                    shares.push(s);
                    shares_from.push(custodian.clone());
                    break;
                }
                Err(why) => why,
            };
            if !io.is_interactive() || attempt >= MAX_ATTEMPTS {
                return Err(CeremonyError::Refused(format!("{custodian}'s share: {problem}; nothing was changed")));
            }
            io.say(&format!("{problem}. Enter it again ({}).", tries_left(MAX_ATTEMPTS - attempt)));
        }
    }
    let pairs: Vec<(u8, &[u8])> = shares.iter().map(|s| (s.x, s.y.as_slice())).collect();
    let key = shamir::combine(&pairs).map_err(|e| CeremonyError::Refused(e.to_string()))?;
    drop(shares);
    file.check_mac(&key)?;
    Ok(PreparedRestore { file, key, shares_from })
}

fn check_pin(pin: &SecretString) -> Result<(), CeremonyError> {
    let len = pin.expose_secret().len();
    if !(6..=64).contains(&len) {
        return Err(CeremonyError::Refused(format!("a PIN must be 6 to 64 characters, not {len}")));
    }
    Ok(())
}

fn blank_slot(module: &Module) -> Result<cryptoki::slot::Slot, CeremonyError> {
    module.find_blank()?.ok_or_else(|| {
        CeremonyError::Refused(format!("module {} has no slot with an uninitialised token", module.name))
    })
}

/// Checks made before the module is touched: files that must exist do
/// and parse (wrapped keys, CSRs, root certificates, backup files, whose
/// custodians and threshold must fit the plan), files to be written do
/// not. Returns the backup file of each restore step.
fn preflight(plan: &Plan, options: &RunOptions) -> Result<BTreeMap<usize, BackupFile>, CeremonyError> {
    let mut outputs = vec![options.transcript.clone(), options.summary.clone(), options.summary.with_extension("pdf")];
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut backups = BTreeMap::new();
    let refuse = |p: &Path, why: String| CeremonyError::Refused(format!("{}: {why}", p.display()));
    let checks = preflight_inputs(plan, &mut made, &mut backups, &refuse);
    // A file that cannot be read is input refused before anything changed.
    checks.map_err(|e| match e {
        CeremonyError::File { path, source } => CeremonyError::Refused(format!("{}: {source}", path.display())),
        e => e,
    })?;
    for step in &plan.steps {
        match step {
            Step::Backup { output, .. }
            | Step::RootCa { output, .. }
            | Step::SignCsr { output, .. }
            | Step::RootCrl { output, .. }
            | Step::Handover { output, .. } => {
                outputs.push(plan.resolve(output));
                if let Step::Backup { .. } = step {
                    outputs.push(plan.resolve(output).with_extension("partial"));
                }
            }
            _ => {}
        }
    }
    for p in &outputs {
        if p.exists() {
            return Err(CeremonyError::Refused(format!("{} exists; a ceremony never overwrites a file", p.display())));
        }
    }
    for (i, p) in outputs.iter().enumerate() {
        if outputs[..i].contains(p) {
            return Err(CeremonyError::Refused(format!("{} is written by two steps", p.display())));
        }
    }
    Ok(backups)
}

fn preflight_inputs(
    plan: &Plan,
    made: &mut BTreeSet<PathBuf>,
    backups: &mut BTreeMap<usize, BackupFile>,
    refuse: &dyn Fn(&Path, String) -> CeremonyError,
) -> Result<(), CeremonyError> {
    for (index, step) in plan.steps.iter().enumerate() {
        match step {
            Step::ImportWrapped { wrapped_file, .. } => {
                read_wrapped(&plan.resolve(wrapped_file))?;
            }
            Step::Restore { input, custodians, .. } => {
                let path = plan.resolve(input);
                let file = BackupFile::read(&path)?;
                for c in custodians {
                    if !file.custodians.contains(c) {
                        return Err(refuse(
                            &path,
                            format!("{c} holds no share of it (its custodians: {})", file.custodians.join(", ")),
                        ));
                    }
                }
                if custodians.len() < file.threshold {
                    return Err(refuse(
                        &path,
                        format!("{} shares are needed; step {} brings {}", file.threshold, index + 1, custodians.len()),
                    ));
                }
                backups.insert(index, file);
            }
            Step::SignCsr { csr, root_certificate, .. } => {
                let path = plan.resolve(csr);
                let der = read_pem_or_der(&path, "CERTIFICATE REQUEST")?;
                kms_ca::parse_csr(&der).map_err(|e| refuse(&path, e.to_string()))?;
                let root = plan.resolve(root_certificate);
                if !made.contains(&root) {
                    read_pem_or_der(&root, "CERTIFICATE")?;
                }
            }
            Step::RootCrl { root_certificate, .. } => {
                let root = plan.resolve(root_certificate);
                if !made.contains(&root) {
                    read_pem_or_der(&root, "CERTIFICATE")?;
                }
            }
            _ => {}
        }
        match step {
            Step::Backup { output, .. }
            | Step::RootCa { output, .. }
            | Step::SignCsr { output, .. }
            | Step::RootCrl { output, .. }
            | Step::Handover { output, .. } => {
                made.insert(plan.resolve(output));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads a wrapped key file: hex, 8 to 64 bytes.
fn read_wrapped(file: &Path) -> Result<Vec<u8>, CeremonyError> {
    let text = std::fs::read_to_string(file).map_err(CeremonyError::file(file))?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let wrapped = hex::decode(&compact)
        .map_err(|_| CeremonyError::Refused(format!("{}: the wrapped key is not hex", file.display())))?;
    if !(8..=64).contains(&wrapped.len()) {
        return Err(CeremonyError::Refused(format!(
            "{}: {} bytes is not a wrapped key",
            file.display(),
            wrapped.len()
        )));
    }
    Ok(wrapped)
}

/// With no token-init, checks the token's contents against the plan
/// before any step: labels the plan makes are free, keys and roots it
/// uses are there, and a restore finds the token empty.
fn check_token_labels(
    plan: &Plan,
    session: &Session,
    module: &str,
    backups: &BTreeMap<usize, BackupFile>,
) -> Result<(), CeremonyError> {
    let mut created: BTreeSet<String> = backups.values().flat_map(|b| b.keys.iter().map(|k| k.label.clone())).collect();
    for label in plan.created_labels() {
        if token::label_exists(session, module, &label)? {
            return Err(CeremonyError::Refused(format!(
                "the token already holds an object labelled {label:?}, which the plan would make; nothing was changed"
            )));
        }
        created.insert(label);
    }
    let key_label = |name: &String| plan.keys.get(name).map(|k| k.label.clone()).unwrap_or_default();
    for step in &plan.steps {
        let used: Vec<String> = match step {
            Step::Backup { keys, .. } | Step::Handover { keys, .. } => keys.iter().map(key_label).collect(),
            Step::ImportWrapped { transport, .. } => vec![key_label(transport)],
            Step::SignCsr { root_label, .. } | Step::RootCrl { root_label, .. } => vec![root_label.clone()],
            Step::Restore { .. } => {
                if token::holds_objects(session, module)? {
                    return Err(CeremonyError::Refused(
                        "a backup is restored into an empty token, and this one holds objects; nothing was changed"
                            .into(),
                    ));
                }
                vec![]
            }
            _ => vec![],
        };
        for label in used {
            if !created.contains(&label) && !token::label_exists(session, module, &label)? {
                return Err(CeremonyError::Refused(format!(
                    "step {} uses {label:?}, which the token does not hold; nothing was changed",
                    step.kind()
                )));
            }
        }
    }
    Ok(())
}

/// Checks the token's presence against the plan before any change: a
/// token to initialise must be blank (or exist, to wipe), any other plan
/// needs the token.
fn check_token_state(plan: &Plan, module: &Module) -> Result<(), CeremonyError> {
    match plan.steps.first() {
        Some(Step::TokenInit { wipe: false, .. }) => {
            if module.find_token()?.is_some() {
                return Err(CeremonyError::Refused(format!(
                    "token {:?} is already initialised; set wipe = true to erase it (this destroys every key in it)",
                    plan.hsm.token
                )));
            }
            blank_slot(module)?;
        }
        _ => {
            module.token_slot()?;
        }
    }
    Ok(())
}

fn describe(plan: &Plan, step: &Step) -> String {
    let key = |name: &str| plan.keys.get(name).map(|k| format!("{} ({})", k.label, k.algorithm)).unwrap_or_default();
    match step {
        Step::TokenInit { wipe, .. } => {
            format!(
                "token-init: {} token {:?}",
                if *wipe { "erase and initialise" } else { "initialise" },
                plan.hsm.token
            )
        }
        Step::GenerateKey { key: k, components, .. } => {
            format!(
                "generate-key: {}{}",
                key(k),
                if *components > 0 { format!(", {components} components") } else { String::new() }
            )
        }
        Step::ImportComponents { key: k, custodians, .. } => {
            format!("import-components: {} from {} components", key(k), custodians.len())
        }
        Step::ImportWrapped { key: k, transport, .. } => format!("import-wrapped: {} under {}", key(k), key(transport)),
        Step::Backup { keys, custodians, threshold, output, .. } => format!(
            "backup: {} to {}, key split {threshold}-of-{}",
            plural(keys.len(), "key"),
            output.display(),
            custodians.len()
        ),
        Step::Restore { input, .. } => format!("restore: {}", input.display()),
        Step::RootCa { label, key_type, .. } => format!("root-ca: {key_type} key {label:?}, self-signed certificate"),
        Step::SignCsr { csr, .. } => format!("sign-csr: {} with the root", csr.display()),
        Step::RootCrl { number, .. } => format!("root-crl: CRL number {number}"),
        Step::Handover { keys, output, .. } => {
            format!("handover: {} to {}", plural(keys.len(), "key"), output.display())
        }
    }
}

/// "1 key", "2 keys".
fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// "1 try left", "2 tries left".
fn tries_left(n: usize) -> String {
    if n == 1 { "1 try left".into() } else { format!("{n} tries left") }
}

/// Authenticates the step's quorum of officers; returns their names.
fn authorise(plan: &Plan, io: &mut Io, index: usize) -> Result<Vec<String>, CeremonyError> {
    let step = &plan.steps[index];
    let needed = plan.quorum_of(step);
    io.say(&format!("Step {} needs {needed} officer(s) to authorise it.", index + 1));
    let mut names: Vec<String> = Vec::new();
    if io.is_interactive() {
        let mut failures = 0;
        while names.len() < needed {
            let name = io.ask(&format!("Officer {} of {needed}, your name: ", names.len() + 1))?;
            if names.contains(&name) {
                io.say(&format!("{name} has already authorised this step."));
                continue;
            }
            match authenticate(plan, io, &name) {
                Ok(()) => names.push(name),
                Err(CeremonyError::Refused(why)) => {
                    failures += 1;
                    io.say(&why);
                    if failures >= MAX_ATTEMPTS * needed {
                        return Err(CeremonyError::Refused(format!(
                            "step {}: too many failed authentications",
                            index + 1
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    } else {
        let present: Vec<String> = io.present().to_vec();
        for name in present.iter().filter(|n| plan.officer(n).is_some()).take(needed) {
            authenticate(plan, io, name)?;
            names.push(name.clone());
        }
        if names.len() < needed {
            return Err(CeremonyError::Refused(format!(
                "step {} needs {needed} officers; --present names only {} of the plan's",
                index + 1,
                names.len()
            )));
        }
    }
    Ok(names)
}

/// Checks one officer's passphrase; interactively, up to
/// [`MAX_ATTEMPTS`] tries.
fn authenticate_retrying(plan: &Plan, io: &mut Io, name: &str) -> Result<(), CeremonyError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match authenticate(plan, io, name) {
            Err(CeremonyError::Refused(why)) if io.is_interactive() && attempt < MAX_ATTEMPTS => {
                io.say(&format!("{why}. Try again ({}).", tries_left(MAX_ATTEMPTS - attempt)));
            }
            other => return other,
        }
    }
}

/// Creates an object whose template carries a secret `CKA_VALUE`, then
/// zeroizes the template's copy of it.
fn create_secret(session: &Session, module: &str, mut template: Vec<Attribute>) -> Result<ObjectHandle, CeremonyError> {
    let made = session.create_object(&template);
    for a in template.iter_mut() {
        if let Attribute::Value(v) = a {
            zeroize::Zeroize::zeroize(v);
        }
    }
    made.map_err(hsm(module))
}

/// Checks one officer's passphrase.
fn authenticate(plan: &Plan, io: &mut Io, name: &str) -> Result<(), CeremonyError> {
    let officer =
        plan.officer(name).ok_or_else(|| CeremonyError::Refused(format!("{name:?} is not an officer of this plan")))?;
    let passphrase = io.secret(&format!("officer-{name}"), &format!("Passphrase of {name}: "))?;
    if officer.credential.verify(&passphrase) {
        Ok(())
    } else {
        Err(CeremonyError::Refused(format!("the passphrase of {name} is wrong")))
    }
}

/// Parses a hex key component (spaces ignored).
fn parse_component(text: &SecretString, len: usize) -> Result<Zeroizing<Vec<u8>>, String> {
    let compact: Zeroizing<String> =
        Zeroizing::new(text.expose_secret().chars().filter(|c| !c.is_whitespace() && *c != '-').collect());
    let bytes = Zeroizing::new(hex::decode(compact.as_str()).map_err(|_| "a component is hexadecimal".to_owned())?);
    if bytes.len() != len {
        return Err(format!("a component of this key is {len} bytes ({} hex digits), not {}", len * 2, bytes.len()));
    }
    Ok(bytes)
}

fn group4(hex: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for (i, c) in hex.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// DES keys carry odd parity in each byte's low bit.
fn set_odd_parity(bytes: &mut [u8]) {
    for b in bytes {
        let high = *b & 0xFE;
        *b = high | u8::from(high.count_ones() % 2 == 0);
    }
}

fn kcv_json(kcv: &kms::keys::Kcv) -> KcvJson {
    KcvJson { method: kcv.method.to_string(), value: kcv.value.clone() }
}

/// The transcript details of a key made from components.
fn component_details(
    key: &KeyPlan,
    id: &[u8],
    kcv: &kms::keys::Kcv,
    components: Vec<serde_json::Value>,
    in_hsm: bool,
) -> serde_json::Value {
    json!({ "key": key.name, "label": key.label, "id": hex::encode(id), "algorithm": key.algorithm.as_str(),
        "purpose": key.purpose.as_str(), "kcv": kcv_json(kcv), "components": components,
        "combined": if in_hsm { "in the HSM" } else { "on the host (module has no key XOR)" } })
}

fn fresh_id(session: &Session, module: &str) -> Result<Vec<u8>, CeremonyError> {
    let mut id = vec![0u8; 8];
    token::random(session, module, &mut id)?;
    Ok(id)
}

/// Components being combined: each is a session object (for its KCV and,
/// where the module can, the XOR inside it); the host keeps a running XOR
/// only when the module has no key-XOR mechanism. The objects are
/// destroyed by [`Runner::combine`], or with the session if a step fails.
struct Components {
    objects: Vec<ObjectHandle>,
    host_xor: Option<Zeroizing<Vec<u8>>>,
}

impl<'a> Runner<'a> {
    fn step(&mut self, index: usize) -> Result<(), CeremonyError> {
        let step = &self.plan.steps[index];
        let n = index + 1;
        self.io.say("");
        self.interrupted.check()?;
        self.io.say(&format!("=== Step {n} of {}: {}", self.plan.steps.len(), describe(self.plan, step)));
        self.io.confirm(&format!("Run step {n}?"))?;
        let officers = authorise(self.plan, self.io, index)?;
        self.interrupted.check()?;
        self.summary.officers.extend(officers.iter().cloned());
        let details = match step {
            Step::TokenInit { .. } => {
                return Err(CeremonyError::Refused("token-init must be the first step".into()));
            }
            Step::GenerateKey { key, components, custodians, .. } => {
                self.generate_key(self.plan.key(key).map_err(CeremonyError::Refused)?, *components, custodians)?
            }
            Step::ImportComponents { key, custodians, component_kcvs, .. } => {
                self.import_components(self.plan.key(key).map_err(CeremonyError::Refused)?, custodians, component_kcvs)?
            }
            Step::ImportWrapped { key, transport, wrapped_file, .. } => self.import_wrapped(
                self.plan.key(key).map_err(CeremonyError::Refused)?,
                self.plan.key(transport).map_err(CeremonyError::Refused)?,
                &self.plan.resolve(wrapped_file),
            )?,
            Step::Backup { keys, custodians, threshold, output, .. } => {
                self.backup(keys, custodians, *threshold, &self.plan.resolve(output))?
            }
            Step::Restore { input, .. } => {
                let prepared = self.restores.remove(&index).ok_or_else(|| {
                    CeremonyError::Refused(format!("step {n}: the restore's shares were not collected"))
                })?;
                self.restore(&self.plan.resolve(input), prepared)?
            }
            Step::RootCa { label, key_type, subject: s, validity_days, output, .. } => {
                self.root_ca(label, key_type, s, *validity_days, &self.plan.resolve(output))?
            }
            Step::SignCsr {
                root_label,
                root_certificate,
                csr,
                validity_days,
                path_len,
                permitted_dns,
                excluded_dns,
                crl_url,
                output,
                ..
            } => {
                let spec = kms_ca::SubordinateSpec {
                    validity: time::Duration::days(i64::from(*validity_days)),
                    path_len: *path_len,
                    name_constraints: kms_ca::NameConstraintRules {
                        permitted_dns: permitted_dns.clone(),
                        excluded_dns: excluded_dns.clone(),
                    },
                    crl_url: crl_url.clone(),
                };
                self.sign_csr(
                    root_label,
                    &self.plan.resolve(root_certificate),
                    &self.plan.resolve(csr),
                    &spec,
                    &self.plan.resolve(output),
                )?
            }
            Step::RootCrl { root_label, root_certificate, number, validity_days, revoked, output, .. } => self
                .root_crl(
                    root_label,
                    &self.plan.resolve(root_certificate),
                    *number,
                    *validity_days,
                    revoked,
                    &self.plan.resolve(output),
                )?,
            Step::Handover { keys, output, .. } => self.handover(keys, &self.plan.resolve(output))?,
        };
        self.summary.steps.push(format!("{n}. {}: authorised by {}", describe(self.plan, step), officers.join(", ")));
        self.transcript.append(&self.session, step.kind(), Some(n), &officers, details)?;
        self.io.say(&format!("Step {n} done and recorded."));
        Ok(())
    }

    fn module(&self) -> &str {
        &self.module.name
    }

    /// Authenticates a custodian before they see or enter their secret.
    fn custodian(&mut self, name: &str) -> Result<(), CeremonyError> {
        self.io.say(&format!("{name}, authenticate to handle your part."));
        authenticate_retrying(self.plan, self.io, name)?;
        self.summary.officers.insert(name.to_owned());
        Ok(())
    }

    fn require_free_label(&self, label: &str) -> Result<(), CeremonyError> {
        if token::label_exists(&self.session, self.module(), label)? {
            return Err(CeremonyError::Refused(format!(
                "the token already holds an object labelled {label:?}; nothing was changed"
            )));
        }
        Ok(())
    }

    /// A session object holding `value` (a component or backup key).
    fn session_key(
        &self,
        algorithm: Algorithm,
        value: &[u8],
        extra: &[Attribute],
    ) -> Result<ObjectHandle, CeremonyError> {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(keyops::key_type(&self.caps, algorithm)?),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Value(value.to_vec()),
        ];
        t.extend_from_slice(extra);
        create_secret(&self.session, self.module(), t)
    }

    fn new_components(&self, len: usize) -> Components {
        let in_hsm = self.caps.row("key_xor").is_some_and(|r| r.available);
        Components { objects: Vec::new(), host_xor: if in_hsm { None } else { Some(Zeroizing::new(vec![0u8; len])) } }
    }

    /// Adds a component: makes its session object and returns its KCV.
    fn add_component(
        &self,
        set: &mut Components,
        algorithm: Algorithm,
        value: &[u8],
    ) -> Result<kms::keys::Kcv, CeremonyError> {
        let handle = self.session_key(algorithm, value, &[Attribute::Derive(true)])?;
        set.objects.push(handle);
        if let Some(acc) = set.host_xor.as_mut() {
            for (a, v) in acc.iter_mut().zip(value) {
                *a ^= v;
            }
        }
        Ok(keyops::kcv(&self.session, &self.caps, handle, algorithm.default_kcv())?)
    }

    /// Combines the components into the long-term key `key`: inside the
    /// module with its key-XOR mechanism, else on the host (recorded).
    fn combine(&mut self, set: Components, key: &KeyPlan, id: &[u8]) -> Result<(ObjectHandle, bool), CeremonyError> {
        let made = self.combine_objects(&set, key, id);
        for h in set.objects {
            let _ = self.session.destroy_object(h);
        }
        made
    }

    fn combine_objects(
        &mut self,
        set: &Components,
        key: &KeyPlan,
        id: &[u8],
    ) -> Result<(ObjectHandle, bool), CeremonyError> {
        let module = self.module.name.clone();
        let template =
            keyops::long_term_template(&self.caps, key.algorithm, key.purpose, &key.label, id, false, key.export())?;
        if let Some(host) = &set.host_xor {
            let mut value = host.clone();
            if key.algorithm == Algorithm::Des2 {
                set_odd_parity(&mut value);
            }
            let warning = format!(
                "module {module} has no key-XOR mechanism (hsm.vendor.key_xor): the components of {} were combined on this host, in memory zeroized at once",
                key.label
            );
            self.io.say(&format!("WARNING: {warning}"));
            self.summary.warnings.push(warning);
            let mut t = template;
            t.push(Attribute::Value(value.to_vec()));
            let h = create_secret(&self.session, &module, t)?;
            return Ok((h, false));
        }
        let number = self.caps.require("key_xor")?;
        let mut acc = set.objects[0];
        let mut intermediates = Vec::new();
        let count = set.objects.len();
        let result = (|| {
            for (i, other) in set.objects[1..].iter().enumerate() {
                let raw = other.handle();
                let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new(mechanism_type(number), Some(&raw)));
                let last = i + 2 == count;
                let t = if last {
                    template.clone()
                } else {
                    vec![
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(keyops::key_type(&self.caps, key.algorithm)?),
                        Attribute::Token(false),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Derive(true),
                    ]
                };
                acc = self.session.derive_key(&mech, acc, &t).map_err(hsm(&module))?;
                if !last {
                    intermediates.push(acc);
                }
            }
            Ok::<_, CeremonyError>(acc)
        })();
        for h in intermediates {
            let _ = self.session.destroy_object(h);
        }
        Ok((result?, true))
    }

    fn finish_key(
        &mut self,
        handle: ObjectHandle,
        key: &KeyPlan,
        expected: Option<&str>,
    ) -> Result<kms::keys::Kcv, CeremonyError> {
        let kcv = match keyops::kcv(&self.session, &self.caps, handle, key.algorithm.default_kcv()) {
            Ok(k) => k,
            Err(e) => {
                let _ = self.session.destroy_object(handle);
                return Err(e.into());
            }
        };
        if let Some(want) = expected
            && !kcv.value.eq_ignore_ascii_case(want)
        {
            let _ = self.session.destroy_object(handle);
            return Err(CeremonyError::Refused(format!(
                "the combined key's KCV is {}, not the published {want}: the key was not kept",
                kcv.value
            )));
        }
        self.summary.keys.push(format!("{} {} KCV {} {}", key.label, key.algorithm, kcv.method, kcv.value));
        self.io.say(&format!(
            "Key {} ({}) is in the token. KCV ({}) {}: everyone check it.",
            key.label, key.algorithm, kcv.method, kcv.value
        ));
        Ok(kcv)
    }

    fn generate_key(
        &mut self,
        key: &KeyPlan,
        components: usize,
        custodians: &[String],
    ) -> Result<serde_json::Value, CeremonyError> {
        self.require_free_label(&key.label)?;
        let id = fresh_id(&self.session, self.module())?;
        if components == 0 {
            let h =
                keyops::generate(&self.session, &self.caps, key.algorithm, key.purpose, &key.label, &id, key.export())?;
            let kcv = self.finish_key(h, key, None)?;
            return Ok(
                json!({ "key": key.name, "label": key.label, "id": hex::encode(&id), "algorithm": key.algorithm.as_str(),
                "purpose": key.purpose.as_str(), "kcv": kcv_json(&kcv), "components": 0 }),
            );
        }
        let len = key.algorithm.key_len();
        // First make and check every component, then show them: an HSM
        // failure half-way must not leave custodians with useless parts.
        let mut set = self.new_components(len);
        let mut parts = Vec::new();
        for _ in 0..components {
            let mut value = Zeroizing::new(vec![0u8; len]);
            token::random(&self.session, self.module(), &mut value)?;
            if key.algorithm == Algorithm::Des2 {
                set_odd_parity(&mut value);
            }
            let kcv = self.add_component(&mut set, key.algorithm, &value)?;
            parts.push((value, kcv));
        }
        // Every custodian authenticates before any component is shown.
        for custodian in custodians {
            self.custodian(custodian)?;
        }
        self.interrupted.check()?;
        let mut component_kcvs = Vec::new();
        for (i, ((value, kcv), custodian)) in parts.iter().zip(custodians).enumerate() {
            let info = [
                format!("Key {} ({}), component {} of {components}", key.label, key.algorithm, i + 1),
                format!("Component KCV ({}): {}", kcv.method, kcv.value),
            ];
            let value = group4(&Zeroizing::new(hex::encode_upper(value.as_slice())));
            self.io.show_private(custodian, &info, &value, &format!("component-{}-{custodian}", key.name))?;
            component_kcvs.push(json!({ "custodian": custodian, "kcv": kcv_json(kcv) }));
            self.io.say(&format!("Component {} ({custodian}) KCV: {}", i + 1, kcv.value));
        }
        drop(parts);
        let (h, in_hsm) = self.combine(set, key, &id)?;
        let kcv = self.finish_key(h, key, None)?;
        Ok(component_details(key, &id, &kcv, component_kcvs, in_hsm))
    }

    fn import_components(
        &mut self,
        key: &KeyPlan,
        custodians: &[String],
        component_kcvs: &[String],
    ) -> Result<serde_json::Value, CeremonyError> {
        self.require_free_label(&key.label)?;
        let id = fresh_id(&self.session, self.module())?;
        let len = key.algorithm.key_len();
        let mut set = self.new_components(len);
        let mut entered = Vec::new();
        for (i, (custodian, want)) in custodians.iter().zip(component_kcvs).enumerate() {
            self.custodian(custodian)?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let text = self.io.secret(
                    &format!("component-{}-{custodian}", key.name),
                    &format!(
                        "{custodian}, component {} of {} for {} (hex, not shown): ",
                        i + 1,
                        custodians.len(),
                        key.label
                    ),
                )?;
                let problem = match parse_component(&text, len) {
                    Err(why) => why,
                    Ok(value) => {
                        // Check the KCV on a throw-away object first, so a
                        // wrong component never joins the set.
                        let probe = self.session_key(key.algorithm, &value, &[])?;
                        let kcv = keyops::kcv(&self.session, &self.caps, probe, key.algorithm.default_kcv());
                        let _ = self.session.destroy_object(probe);
                        let kcv = kcv?;
                        if kcv.value.eq_ignore_ascii_case(want) {
                            self.add_component(&mut set, key.algorithm, &value)?;
                            self.io.say(&format!("Component {} KCV {} matches.", i + 1, kcv.value));
                            entered.push(json!({ "custodian": custodian, "kcv": kcv_json(&kcv) }));
                            break;
                        }
                        format!("component {} has KCV {}, not the published {want}", i + 1, kcv.value)
                    }
                };
                if !self.io.is_interactive() || attempt >= MAX_ATTEMPTS {
                    return Err(CeremonyError::Refused(format!("{problem}; nothing was changed")));
                }
                self.io.say(&format!("{problem}. Enter it again ({}).", tries_left(MAX_ATTEMPTS - attempt)));
            }
        }
        let (h, in_hsm) = self.combine(set, key, &id)?;
        let kcv = self.finish_key(h, key, key.kcv.as_deref())?;
        Ok(component_details(key, &id, &kcv, entered, in_hsm))
    }

    fn import_wrapped(
        &mut self,
        key: &KeyPlan,
        transport: &KeyPlan,
        file: &Path,
    ) -> Result<serde_json::Value, CeremonyError> {
        self.require_free_label(&key.label)?;
        let wrapped = read_wrapped(file)?;
        let tk = token::secret_key(&self.session, self.module(), &transport.label)?;
        let format = WrapFormat::default_for(transport.algorithm);
        let id = fresh_id(&self.session, self.module())?;
        let h = keyops::unwrap(
            &self.session,
            &self.caps,
            tk,
            format,
            &wrapped,
            key.algorithm,
            key.purpose,
            &key.label,
            &id,
            key.export(),
        )
        .map_err(|e| CeremonyError::Refused(format!("the module would not unwrap {}: {e}", file.display())))?;
        let kcv = self.finish_key(h, key, key.kcv.as_deref())?;
        Ok(json!({ "key": key.name, "label": key.label, "id": hex::encode(&id), "algorithm": key.algorithm.as_str(),
            "purpose": key.purpose.as_str(), "kcv": kcv_json(&kcv), "transport": transport.label,
            "format": format.probe_name(), "wrapped_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wrapped)) }))
    }

    /// Creates the backup key as a trusted session object: only the SO
    /// may set CKA_TRUSTED, so this logs the SO in and the user back. A
    /// failed SO logout is fatal (the session must not stay SO).
    fn trusted_backup_key(&mut self, value: &[u8]) -> Result<ObjectHandle, CeremonyError> {
        let so_pin = self.io.secret("so-pin", "SO PIN (to make the trusted backup key): ")?;
        let module = self.module.name.clone();
        self.session.logout().map_err(hsm(&module))?;
        let made = token::login(&self.session, &module, UserType::So, &so_pin).and_then(|()| {
            let t = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Trusted(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(false),
                Attribute::Encrypt(true),
                Attribute::Value(value.to_vec()),
            ];
            let h = create_secret(&self.session, &module, t);
            self.session.logout().map_err(hsm(&module))?;
            h
        });
        // Log the user back in whatever happened, with retries.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let user_pin = self.io.secret("user-pin", "User PIN (to log back in): ")?;
            match token::login(&self.session, &module, UserType::User, &user_pin) {
                Ok(()) => break,
                Err(CeremonyError::Refused(why)) if self.io.is_interactive() && attempt < MAX_ATTEMPTS => {
                    self.io.say(&format!("{why}. Try again ({}).", tries_left(MAX_ATTEMPTS - attempt)));
                }
                Err(e) => {
                    if let Ok(h) = made {
                        let _ = self.session.destroy_object(h);
                    }
                    return Err(e);
                }
            }
        }
        made
    }

    fn backup(
        &mut self,
        keys: &[String],
        custodians: &[String],
        threshold: usize,
        output: &Path,
    ) -> Result<serde_json::Value, CeremonyError> {
        let module = self.module.name.clone();
        let find = |r: &Self| {
            keys.iter()
                .map(|name| {
                    let k = r.plan.key(name).map_err(CeremonyError::Refused)?.clone();
                    let h = token::secret_key(&r.session, &module, &k.label)?;
                    r.caps.require_wrap("AES", "CKM_AES_KEY_WRAP", k.algorithm.family())?;
                    Ok((k, h))
                })
                .collect::<Result<Vec<_>, CeremonyError>>()
        };
        // Every key is there and wrappable, and every custodian is here,
        // before anything is made.
        find(self)?;
        for custodian in custodians {
            self.custodian(custodian)?;
        }
        self.interrupted.check()?;
        let mut backup_key = Zeroizing::new(vec![0u8; backup::BACKUP_KEY_LEN]);
        token::random(&self.session, &module, &mut backup_key)?;
        let mut backup_id = [0u8; 8];
        token::random(&self.session, &module, &mut backup_id)?;
        let bk = self.trusted_backup_key(&backup_key)?;
        let result = (|| {
            // why: handles of private objects may change across the SO
            // login (PKCS#11 v2.40 §5.6, C_Logout), so they are found again.
            let handles = find(self)?;
            let bk_kcv = keyops::kcv(&self.session, &self.caps, bk, KcvMethod::AesZero)?;
            let mut entries = Vec::new();
            for (k, h) in &handles {
                let wrapped = self.session.wrap_key(&Mechanism::AesKeyWrap, bk, *h).map_err(hsm(&module))?;
                let kcv = keyops::kcv(&self.session, &self.caps, *h, k.algorithm.default_kcv())?;
                entries.push(BackupKey {
                    name: k.name.clone(),
                    label: k.label.clone(),
                    id: hex::encode(token::object_id(&self.session, &module, *h)?),
                    algorithm: k.algorithm.as_str().into(),
                    purpose: k.purpose.as_str().into(),
                    kcv: kcv_json(&kcv),
                    wrapped: hex::encode(wrapped),
                });
            }
            Ok::<_, CeremonyError>((bk_kcv, entries))
        })();
        let _ = self.session.destroy_object(bk);
        let (bk_kcv, entries) = result?;
        let mut file = BackupFile {
            format: backup::FORMAT.into(),
            backup_id: hex::encode_upper(backup_id),
            ceremony: self.plan.name.clone(),
            created: transcript::now(),
            threshold,
            custodians: custodians.to_vec(),
            backup_key_kcv: kcv_json(&bk_kcv),
            share_hashes: Vec::new(),
            mechanism: "CKM_AES_KEY_WRAP".into(),
            keys: entries,
            mac: None,
        };
        let session = &self.session;
        let shares =
            shamir::split(&backup_key, threshold, custodians.len(), &mut |buf| token::random(session, &module, buf))?;
        file.share_hashes = shares.iter().map(|(x, y)| backup::share_hash(&backup_id, *x, y)).collect();
        file.seal(&backup_key)?;
        drop(backup_key);
        // The file is written (under a temporary name) before any share is
        // shown, and takes its name only after the last one: a ceremony
        // stopped half-way leaves no backup file some shares are missing for.
        let json = serde_json::to_vec_pretty(&file).map_err(|e| CeremonyError::Refused(e.to_string()))?;
        let partial = output.with_extension("partial");
        write_private(&partial, &json)?;
        for ((x, y), custodian) in shares.iter().zip(custodians) {
            self.interrupted.check()?;
            let info = [format!(
                "Backup {} of ceremony {:?}: share {x} of {} ({threshold} needed)",
                file.backup_id,
                self.plan.name,
                custodians.len()
            )];
            let value = backup::encode_share(&backup_id, *x, y);
            self.io.show_private(custodian, &info, &value, &format!("share-{custodian}"))?;
        }
        drop(shares);
        std::fs::hard_link(&partial, output).map_err(CeremonyError::file(output))?;
        std::fs::remove_file(&partial).map_err(CeremonyError::file(&partial))?;
        let file_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
        self.summary.backups.push(format!(
            "{} backup {} ({} keys, {threshold}-of-{}: {}) SHA-256 {file_sha}",
            output.display(),
            file.backup_id,
            file.keys.len(),
            custodians.len(),
            custodians.join(", ")
        ));
        for k in &file.keys {
            self.io.say(&format!("  backed up {} KCV {}", k.label, k.kcv.value));
        }
        Ok(json!({ "output": output.display().to_string(), "sha256": file_sha, "backup_id": file.backup_id,
            "threshold": threshold, "custodians": custodians, "backup_key_kcv": file.backup_key_kcv,
            "keys": file.keys.iter().map(|k| json!({ "label": k.label, "kcv": k.kcv })).collect::<Vec<_>>() }))
    }

    fn restore(&mut self, input: &Path, prepared: PreparedRestore) -> Result<serde_json::Value, CeremonyError> {
        let PreparedRestore { file, key: backup_key, shares_from } = prepared;
        if token::holds_objects(&self.session, self.module())? {
            return Err(CeremonyError::Refused(
                "a backup is restored into an empty token, and this one holds objects; nothing was changed".into(),
            ));
        }
        let bk = self.session_key(Algorithm::Aes256, &backup_key, &[Attribute::Unwrap(true)])?;
        drop(backup_key);
        let mut made: Vec<ObjectHandle> = Vec::new();
        let result = (|| {
            let bk_kcv = keyops::kcv(&self.session, &self.caps, bk, KcvMethod::AesZero)?;
            if bk_kcv.value != file.backup_key_kcv.value {
                return Err(CeremonyError::Refused("the combined backup key's KCV differs from the file's".into()));
            }
            let mut restored = Vec::new();
            for k in &file.keys {
                let algorithm = Algorithm::from_stored(&k.algorithm)
                    .map_err(|_| CeremonyError::Refused(format!("{}: unknown algorithm {}", k.label, k.algorithm)))?;
                let purpose = kms::keys::Purpose::from_stored(&k.purpose)
                    .map_err(|_| CeremonyError::Refused(format!("{}: unknown purpose {}", k.label, k.purpose)))?;
                let wrapped = hex::decode(&k.wrapped)
                    .map_err(|_| CeremonyError::Refused(format!("{}: wrapped key is not hex", k.label)))?;
                let id =
                    hex::decode(&k.id).map_err(|_| CeremonyError::Refused(format!("{}: id is not hex", k.label)))?;
                let h = keyops::unwrap(
                    &self.session,
                    &self.caps,
                    bk,
                    WrapFormat::AesKeyWrap,
                    &wrapped,
                    algorithm,
                    purpose,
                    &k.label,
                    &id,
                    Export::TrustedWrapOnly,
                )?;
                made.push(h);
                self.interrupted.check()?;
                let kcv = keyops::kcv(&self.session, &self.caps, h, algorithm.default_kcv())?;
                if kcv.value != k.kcv.value {
                    return Err(CeremonyError::Refused(format!(
                        "{} restored with KCV {}, not the backup's {}",
                        k.label, kcv.value, k.kcv.value
                    )));
                }
                restored.push((k.label.clone(), k.algorithm.clone(), kcv));
            }
            Ok(restored)
        })();
        let _ = self.session.destroy_object(bk);
        let restored = match result {
            Ok(r) => r,
            Err(e) => {
                for h in made {
                    let _ = self.session.destroy_object(h);
                }
                return Err(e);
            }
        };
        for (label, algorithm, kcv) in &restored {
            self.summary.keys.push(format!("{label} {algorithm} KCV {} {} (restored)", kcv.method, kcv.value));
            self.io.say(&format!("Restored {label} ({algorithm}), KCV {}: everyone check it.", kcv.value));
        }
        Ok(json!({ "input": input.display().to_string(), "backup_id": file.backup_id, "shares_from": shares_from,
            "keys": restored.iter().map(|(l, a, k)| json!({ "label": l, "algorithm": a, "kcv": kcv_json(k) })).collect::<Vec<_>>() }))
    }

    fn root_ca(
        &mut self,
        label: &str,
        key_type: &str,
        subject_table: &std::collections::BTreeMap<String, String>,
        validity_days: u32,
        output: &Path,
    ) -> Result<serde_json::Value, CeremonyError> {
        let module = self.module.name.clone();
        self.require_free_label(label)?;
        let key_type: kms_ca::KeyType =
            key_type.parse().map_err(|_| CeremonyError::Refused(format!("key type {key_type:?} is not known")))?;
        let dn = subject(subject_table).map_err(CeremonyError::Refused)?;
        let id = fresh_id(&self.session, &module)?;
        self.io.say(&format!("Generating the root's {key_type} key pair in the token..."));
        kms::hsm::pki::generate_signing_key_pair(&self.session, &self.caps, &module, key_type, label, &id)?;
        let made = (|| {
            let signer = HsmSigner::find_by_id(&self.session, &module, &id, &self.plan.hsm.token)?;
            let cert = kms_ca::make_root(&signer, &dn, time::Duration::days(i64::from(validity_days)))?;
            write_private(output, cert.pem.as_bytes())?;
            Ok::<_, CeremonyError>(cert)
        })();
        let cert = match made {
            Ok(c) => c,
            Err(e) => {
                let _ = kms::hsm::pki::destroy_key_pair(&self.session, &module, &id);
                return Err(e);
            }
        };
        let fp = hex::encode_upper(cert.sha256_fingerprint);
        self.summary.certificates.push(format!("root {} SHA-256 {fp} -> {}", cert.subject, output.display()));
        self.io.say(&format!(
            "Root certificate {}\n  SHA-256 fingerprint {fp}\n  written to {}",
            cert.subject,
            output.display()
        ));
        Ok(json!({ "label": label, "id": hex::encode(&id), "key_type": key_type.name(), "subject": cert.subject,
            "serial": hex::encode(&cert.serial), "not_after": cert.not_after.to_string(), "sha256": fp,
            "output": output.display().to_string() }))
    }

    fn root_signer(&self, label: &str, cert_path: &Path) -> Result<(HsmSigner<'_>, Vec<u8>), CeremonyError> {
        let signer = HsmSigner::find(&self.session, self.module(), label, &self.plan.hsm.token)?;
        let der = read_pem_or_der(cert_path, "CERTIFICATE")?;
        Ok((signer, der))
    }

    fn sign_csr(
        &mut self,
        root_label: &str,
        root_cert: &Path,
        csr_path: &Path,
        spec: &kms_ca::SubordinateSpec,
        output: &Path,
    ) -> Result<serde_json::Value, CeremonyError> {
        let csr = read_pem_or_der(csr_path, "CERTIFICATE REQUEST")?;
        let parsed =
            kms_ca::parse_csr(&csr).map_err(|e| CeremonyError::Refused(format!("{}: {e}", csr_path.display())))?;
        let csr_sha = hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(&csr));
        let subject = parsed
            .subject()
            .iter()
            .map(|e| {
                let name = e.attribute.map(|a| a.name().to_owned()).unwrap_or_else(|| e.oid.to_string());
                format!("{name}={}", e.value)
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.io.say(&format!("CSR {}\n  subject {subject}\n  SHA-256 of the CSR {csr_sha}", csr_path.display()));
        self.io.confirm("Does the CSR's SHA-256 match the one the issuing CA's operators brought?")?;
        let cert = {
            let (signer, root_der) = self.root_signer(root_label, root_cert)?;
            let issuer = Issuer { signer: &signer, certificate_der: &root_der };
            kms_ca::sign_subordinate(&issuer, &csr, spec)?
        };
        write_private(output, cert.pem.as_bytes())?;
        let fp = hex::encode_upper(cert.sha256_fingerprint);
        self.summary.certificates.push(format!("issuing CA {} SHA-256 {fp} -> {}", cert.subject, output.display()));
        self.io.say(&format!(
            "Issuing CA certificate {}\n  SHA-256 fingerprint {fp}\n  written to {}",
            cert.subject,
            output.display()
        ));
        Ok(json!({ "csr_sha256": csr_sha, "subject": cert.subject, "serial": hex::encode(&cert.serial),
            "not_after": cert.not_after.to_string(), "path_len": spec.path_len, "permitted_dns": spec.name_constraints.permitted_dns,
            "excluded_dns": spec.name_constraints.excluded_dns, "sha256": fp, "output": output.display().to_string() }))
    }

    fn root_crl(
        &mut self,
        root_label: &str,
        root_cert: &Path,
        number: u64,
        validity_days: u32,
        revoked: &[String],
        output: &Path,
    ) -> Result<serde_json::Value, CeremonyError> {
        let now = time::OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let entries: Vec<RevokedEntry> = revoked
            .iter()
            .map(|s| {
                hex::decode(s)
                    .map(|serial| RevokedEntry { serial, revoked_at: now, reason: RevocationReason::Unspecified })
                    .map_err(|_| CeremonyError::Refused(format!("serial {s:?} is not hex")))
            })
            .collect::<Result<_, _>>()?;
        let der = {
            let (signer, root_der) = self.root_signer(root_label, root_cert)?;
            let issuer = Issuer { signer: &signer, certificate_der: &root_der };
            kms_ca::build_crl(&issuer, number, now, now + time::Duration::days(i64::from(validity_days)), &entries)?
        };
        write_private(output, kms_ca::pem("X509 CRL", &der).as_bytes())?;
        let fp = hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(&der));
        self.summary.certificates.push(format!("root CRL number {number} SHA-256 {fp} -> {}", output.display()));
        self.io.say(&format!(
            "Root CRL number {number} ({}), next update in {validity_days} days\n  SHA-256 {fp}\n  written to {}",
            plural(revoked.len(), "revoked serial"),
            output.display()
        ));
        Ok(json!({ "number": number, "revoked": revoked, "sha256": fp, "output": output.display().to_string() }))
    }

    fn handover(&mut self, keys: &[String], output: &Path) -> Result<serde_json::Value, CeremonyError> {
        let module = self.module.name.clone();
        let mut list = Vec::new();
        for name in keys {
            let k = self.plan.key(name).map_err(CeremonyError::Refused)?;
            let h = token::secret_key(&self.session, &module, &k.label)?;
            let kcv = keyops::kcv(&self.session, &self.caps, h, k.algorithm.default_kcv())?;
            self.summary
                .keys
                .push(format!("{} {} KCV {} {} (handed over)", k.label, k.algorithm, kcv.method, kcv.value));
            self.io.say(&format!("  {} ({}) KCV {}", k.label, k.algorithm, kcv.value));
            list.push(json!({ "name": k.label, "label": k.label, "algorithm": k.algorithm.as_str(),
                "purpose": k.purpose.as_str(), "kcv": kcv_json(&kcv) }));
        }
        let body = json!({ "format": "kms-ceremony-handover/1", "ceremony": self.plan.name, "token": self.plan.hsm.token,
            "created": transcript::now(), "keys": list });
        let text = serde_json::to_string_pretty(&body).map_err(|e| CeremonyError::Refused(e.to_string()))? + "\n";
        write_private(output, text.as_bytes())?;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
        // why: the file is bound to the ceremony by this transcript entry
        // (signed by the ceremony key), which names the file's SHA-256;
        // `ceremony handover import` checks both before registering.
        self.io.say(&format!("Hand-over file {} (SHA-256 {sha}) written.", output.display()));
        Ok(json!({ "output": output.display().to_string(), "sha256": sha, "keys": list }))
    }

    fn summary_text(&self, fingerprint: &str, outcome: &str) -> String {
        let s = &self.summary;
        let mut t = String::new();
        let line = |t: &mut String, l: String| {
            t.push_str(&l);
            t.push('\n');
        };
        line(&mut t, format!("KEY CEREMONY SUMMARY: {}", self.plan.name));
        line(&mut t, format!("Date (UTC):         {}", transcript::now()));
        line(&mut t, format!("Outcome:            {outcome}"));
        line(&mut t, format!("Module / token:     {} / {}", self.module.name, self.plan.hsm.token));
        line(&mut t, format!("Plan SHA-256:       {}", hex::encode(self.plan.sha256)));
        line(
            &mut t,
            format!("Officers who authenticated: {}", s.officers.iter().cloned().collect::<Vec<_>>().join(", ")),
        );
        line(&mut t, String::new());
        // Steps and keys are always listed (even empty); the rest only when
        // the ceremony had some.
        for (title, items, always) in [
            ("Steps:", &s.steps, true),
            ("Keys and check values:", &s.keys, true),
            ("Certificates and CRLs:", &s.certificates, false),
            ("Backups:", &s.backups, false),
            ("Warnings:", &s.warnings, false),
        ] {
            if always || !items.is_empty() {
                line(&mut t, title.into());
                for x in items {
                    line(&mut t, format!("  {x}"));
                }
            }
        }
        line(&mut t, String::new());
        line(&mut t, format!("Transcript:          {}", self.transcript.path().display()));
        line(&mut t, format!("Transcript key SHA-256: {fingerprint}"));
        line(&mut t, format!("Transcript entries:  {}", self.transcript.len()));
        line(&mut t, format!("Last entry SHA-256:  {}", self.transcript.head()));
        line(&mut t, "Check with: ceremony transcript verify <transcript> --key <fingerprint above>".into());
        line(&mut t, String::new());
        for name in s.officers.iter() {
            line(&mut t, format!("Signed: {name:<20} ______________________  date ________"));
        }
        line(&mut t, "Witness: ____________________  ______________________  date ________".into());
        t
    }
}

/// Reads a PEM block labelled `label`, or DER.
pub fn read_pem_or_der(path: &Path, label: &str) -> Result<Vec<u8>, CeremonyError> {
    let bytes = std::fs::read(path).map_err(CeremonyError::file(path))?;
    if bytes.len() > 1 << 20 {
        return Err(CeremonyError::Refused(format!("{}: too large", path.display())));
    }
    if bytes.starts_with(b"-----BEGIN") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
            let pem = pem.map_err(|e| CeremonyError::Refused(format!("{}: {e}", path.display())))?;
            if pem.label == label {
                return Ok(pem.contents);
            }
        }
        return Err(CeremonyError::Refused(format!("{}: no PEM block {label:?}", path.display())));
    }
    Ok(bytes)
}
