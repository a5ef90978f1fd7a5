//! Card profiles: data files that name the key roles of a card application
//! and how each role's key is derived from which master key.
//!
//! A profile file (`profiles/cards/<name>.toml`) looks like:
//!
//! ```toml
//! name = "mohurd-epurse"
//! description = "..."
//!
//! [[role]]
//! name = "dpk"
//! description = "purchase key (DPK)"
//! master_key = "city/3301/mohurd/dpk"
//! method = "pboc-3des"
//! factors = ["asn"]
//! ```
//!
//! A malformed file, an unknown method, identifier or field, a duplicate
//! role or a bad key name is rejected with the file, line and field, and the
//! service refuses to start (or to reload) with it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::keys::{Algorithm, KeyName};

/// Why a profile was refused.
#[derive(Debug, thiserror::Error)]
#[error("card profile {path}{}: {message}", .line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct ProfileError {
    /// The file.
    pub path: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
}

/// How a role's key is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// PBOC / MOHURD: `DK = 3DES(MK, D) || 3DES(MK, ~D)`, one level per factor.
    Pboc3Des,
    /// JT/T 978: `DK = SM4(MK, D || ~D)`, one level per factor.
    Sm4Jtt978,
    /// EMV Book 2 A1.4.1 Option A over PAN || PSN.
    EmvOptionA,
    /// EMV Book 2 A1.4.2 Option B (SHA-1 for PANs over 16 digits).
    EmvOptionB,
    /// GlobalPlatform SCP02 card keys, template `emv` (from the KDD).
    GpEmv,
    /// GlobalPlatform SCP02 card keys, template `visa2` (from the KDD).
    GpVisa2,
    /// GlobalPlatform SCP03 card keys, template `kdf3`: NIST SP 800-108
    /// counter KDF with AES-CMAC over `00 00 00 c 00 || KDD` (8-bit counter
    /// first), as GlobalPlatformPro defines it.
    GpKdf3,
    /// NXP AN10922 AES-128 diversification (UID || AID || system id).
    An10922Aes128,
    /// NXP AN10922 2K3DES diversification (UID || AID || system id).
    An10922Des2,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "pboc-3des" => Method::Pboc3Des,
            "sm4-jtt978" => Method::Sm4Jtt978,
            "emv-option-a" => Method::EmvOptionA,
            "emv-option-b" => Method::EmvOptionB,
            "gp-emv" => Method::GpEmv,
            "gp-visa2" => Method::GpVisa2,
            "gp-kdf3" => Method::GpKdf3,
            "an10922-aes128" => Method::An10922Aes128,
            "an10922-2k3des" => Method::An10922Des2,
            _ => return None,
        })
    }

    /// The method's name in profile files.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Pboc3Des => "pboc-3des",
            Method::Sm4Jtt978 => "sm4-jtt978",
            Method::EmvOptionA => "emv-option-a",
            Method::EmvOptionB => "emv-option-b",
            Method::GpEmv => "gp-emv",
            Method::GpVisa2 => "gp-visa2",
            Method::GpKdf3 => "gp-kdf3",
            Method::An10922Aes128 => "an10922-aes128",
            Method::An10922Des2 => "an10922-2k3des",
        }
    }

    /// Algorithm of the master key and of the derived key.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Method::Pboc3Des
            | Method::EmvOptionA
            | Method::EmvOptionB
            | Method::GpEmv
            | Method::GpVisa2
            | Method::An10922Des2 => Algorithm::Des2,
            Method::Sm4Jtt978 => Algorithm::Sm4,
            Method::An10922Aes128 | Method::GpKdf3 => Algorithm::Aes128,
        }
    }

    fn uses_factors(self) -> bool {
        matches!(self, Method::Pboc3Des | Method::Sm4Jtt978)
    }

    fn uses_gp_key(self) -> bool {
        matches!(self, Method::GpEmv | Method::GpVisa2 | Method::GpKdf3)
    }

    /// Card identifiers the method reads (besides its factors).
    fn identifiers(self) -> &'static [Identifier] {
        match self {
            Method::Pboc3Des | Method::Sm4Jtt978 => &[],
            Method::EmvOptionA | Method::EmvOptionB => &[Identifier::Pan],
            Method::GpEmv | Method::GpVisa2 | Method::GpKdf3 => &[Identifier::Kdd],
            Method::An10922Aes128 | Method::An10922Des2 => &[Identifier::Uid],
        }
    }
}

/// A card identifier a profile may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identifier {
    /// Application serial number.
    Asn,
    /// City (issuer) factor.
    City,
    /// PAN (and PSN).
    Pan,
    /// GlobalPlatform key diversification data.
    Kdd,
    /// Card UID.
    Uid,
    /// AN10922 application id (and system identifier), optional.
    Aid,
}

impl Identifier {
    fn parse_factor(s: &str) -> Option<Identifier> {
        match s {
            "asn" => Some(Identifier::Asn),
            "city" => Some(Identifier::City),
            _ => None,
        }
    }

    /// The request field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Identifier::Asn => "asn",
            Identifier::City => "city",
            Identifier::Pan => "pan",
            Identifier::Kdd => "kdd",
            Identifier::Uid => "uid",
            Identifier::Aid => "aid",
        }
    }
}

/// A GlobalPlatform card key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpKey {
    /// S-ENC, derivation constant 01.
    Enc,
    /// S-MAC, derivation constant 02.
    Mac,
    /// DEK, derivation constant 03.
    Dek,
}

impl GpKey {
    /// The SCP02 template derivation constant.
    pub fn constant(self) -> u8 {
        match self {
            GpKey::Enc => 1,
            GpKey::Mac => 2,
            GpKey::Dek => 3,
        }
    }
}

/// One key role of a profile.
#[derive(Debug, Clone)]
pub struct Role {
    /// Role name, e.g. `dpk`.
    pub name: String,
    /// Description.
    pub description: String,
    /// Master key name.
    pub master_key: KeyName,
    /// Method.
    pub method: Method,
    /// Diversification factors, level by level (PBOC, SM4).
    pub factors: Vec<Identifier>,
    /// GlobalPlatform key slot (gp-* methods).
    pub gp_key: Option<GpKey>,
}

/// A loaded, checked card profile.
#[derive(Debug, Clone)]
pub struct CardProfile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Roles, in file order.
    pub roles: Vec<Role>,
    /// Every identifier a card must supply.
    pub identifiers: BTreeSet<Identifier>,
    /// The file it came from.
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    role: Vec<Spanned<RawRole>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    master_key: Spanned<String>,
    method: Spanned<String>,
    #[serde(default)]
    factors: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    gp_key: Option<Spanned<String>>,
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// Parses and checks one profile file's text.
pub fn parse(path: &Path, text: &str) -> Result<CardProfile, ProfileError> {
    let fail = |span: Option<Range<usize>>, message: String| ProfileError {
        path: path.to_owned(),
        line: span.map(|s| line_of(text, s)),
        message,
    };
    let raw: RawProfile = toml::from_str(text).map_err(|e| fail(e.span(), e.message().to_owned()))?;
    let name = raw.name.get_ref().clone();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if name != stem {
        return Err(fail(Some(raw.name.span()), format!("name {name:?} must match the file name {stem:?}")));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || name.is_empty() {
        return Err(fail(Some(raw.name.span()), format!("name {name:?}: use [a-z0-9-]")));
    }
    if raw.role.is_empty() {
        return Err(fail(None, "role: a profile needs at least one [[role]]".into()));
    }
    let mut roles = Vec::new();
    let mut seen = BTreeMap::new();
    let mut identifiers = BTreeSet::new();
    for spanned in raw.role {
        let role_span = spanned.span();
        let r = spanned.into_inner();
        let role_name = r.name.get_ref().clone();
        if let Some(first) = seen.insert(role_name.clone(), line_of(text, r.name.span())) {
            return Err(fail(Some(r.name.span()), format!("role.name {role_name:?} repeats the role on line {first}")));
        }
        let method = Method::parse(r.method.get_ref()).ok_or_else(|| {
            fail(
                Some(r.method.span()),
                format!(
                    "role {role_name:?}: unknown method {:?} (pboc-3des, sm4-jtt978, emv-option-a, emv-option-b, gp-emv, gp-visa2, gp-kdf3, an10922-aes128, an10922-2k3des)",
                    r.method.get_ref()
                ),
            )
        })?;
        let master_key = KeyName::parse("master_key", r.master_key.get_ref())
            .map_err(|e| fail(Some(r.master_key.span()), format!("role {role_name:?}: {e}")))?;
        let mut factors = Vec::new();
        match (&r.factors, method.uses_factors()) {
            (Some(f), true) => {
                if f.get_ref().is_empty() || f.get_ref().len() > 3 {
                    return Err(fail(Some(f.span()), format!("role {role_name:?}: factors must list 1 to 3 levels")));
                }
                for name in f.get_ref() {
                    let id = Identifier::parse_factor(name).ok_or_else(|| {
                        fail(Some(f.span()), format!("role {role_name:?}: unknown factor {name:?} (asn, city)"))
                    })?;
                    factors.push(id);
                    identifiers.insert(id);
                }
            }
            (None, true) => {
                return Err(fail(
                    Some(role_span),
                    format!("role {role_name:?}: method {} needs factors", method.as_str()),
                ));
            }
            (Some(f), false) => {
                return Err(fail(
                    Some(f.span()),
                    format!("role {role_name:?}: method {} takes no factors", method.as_str()),
                ));
            }
            (None, false) => {}
        }
        let gp_key = match (&r.gp_key, method.uses_gp_key()) {
            (Some(k), true) => Some(match k.get_ref().as_str() {
                "enc" => GpKey::Enc,
                "mac" => GpKey::Mac,
                "dek" => GpKey::Dek,
                other => {
                    return Err(fail(
                        Some(k.span()),
                        format!("role {role_name:?}: unknown gp_key {other:?} (enc, mac, dek)"),
                    ));
                }
            }),
            (None, true) => {
                return Err(fail(
                    Some(role_span),
                    format!("role {role_name:?}: method {} needs gp_key", method.as_str()),
                ));
            }
            (Some(k), false) => {
                return Err(fail(
                    Some(k.span()),
                    format!("role {role_name:?}: method {} takes no gp_key", method.as_str()),
                ));
            }
            (None, false) => None,
        };
        identifiers.extend(method.identifiers().iter().copied());
        roles.push(Role { name: role_name, description: r.description, master_key, method, factors, gp_key });
    }
    Ok(CardProfile { name, description: raw.description, roles, identifiers, path: path.to_owned() })
}

/// Every profile in `dir/cards`, by name.
#[derive(Debug, Clone, Default)]
pub struct CardProfiles {
    by_name: BTreeMap<String, std::sync::Arc<CardProfile>>,
}

impl CardProfiles {
    /// Loads `dir/cards/*.toml`; any bad file rejects the whole set.
    pub fn load(dir: &Path) -> Result<CardProfiles, ProfileError> {
        let cards = dir.join("cards");
        let entries = std::fs::read_dir(&cards).map_err(|e| ProfileError {
            path: cards.clone(),
            line: None,
            message: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut by_name = BTreeMap::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| ProfileError {
                path: path.clone(),
                line: None,
                message: e.to_string(),
            })?;
            let profile = parse(&path, &text)?;
            by_name.insert(profile.name.clone(), std::sync::Arc::new(profile));
        }
        Ok(CardProfiles { by_name })
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<std::sync::Arc<CardProfile>> {
        self.by_name.get(name).cloned()
    }

    /// All profiles, by name.
    pub fn all(&self) -> impl Iterator<Item = &std::sync::Arc<CardProfile>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<CardProfile, ProfileError> {
        parse(Path::new("/x/demo.toml"), text)
    }

    const GOOD: &str = r#"
name = "demo"
[[role]]
name = "dpk"
master_key = "city/1/dpk"
method = "pboc-3des"
factors = ["city", "asn"]
[[role]]
name = "enc"
master_key = "city/1/ssd"
method = "gp-emv"
gp_key = "enc"
"#;

    #[test]
    fn good_profile_loads() {
        let prof = p(GOOD).map_err(|e| e.to_string());
        let prof = prof.as_ref().map_err(|e| e.as_str());
        assert!(prof.is_ok(), "{prof:?}");
        if let Ok(prof) = prof {
            assert_eq!(prof.roles.len(), 2);
            assert_eq!(prof.roles[0].factors, vec![Identifier::City, Identifier::Asn]);
            assert!(prof.identifiers.contains(&Identifier::Kdd));
        }
    }

    fn err(text: &str) -> String {
        p(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err(&GOOD.replace("pboc-3des", "pboc-4des"));
        assert!(e.contains("/x/demo.toml") && e.contains("line 6") && e.contains("pboc-4des"), "{e}");
        let e = err(&GOOD.replace("factors = [\"city\", \"asn\"]", "factors = [\"pan\"]"));
        assert!(e.contains("unknown factor \"pan\"") && e.contains("line 7"), "{e}");
        let e = err(&GOOD.replace("gp_key = \"enc\"", "gp_key = \"kek\""));
        assert!(e.contains("gp_key") && e.contains("line 12"), "{e}");
        let e = err(&GOOD.replace("name = \"enc\"", "name = \"dpk\""));
        assert!(e.contains("repeats the role on line 4"), "{e}");
        let e = err(&GOOD.replace("city/1/dpk", "City/1"));
        assert!(e.contains("master_key") && e.contains("line 5"), "{e}");
        let e = err(&format!("{GOOD}\nsurprise = 1\n"));
        assert!(e.contains("surprise"), "{e}");
        let e = err(&GOOD.replace("name = \"demo\"", "name = \"other\""));
        assert!(e.contains("must match the file name"), "{e}");
        let e = err(&GOOD.replace("factors = [\"city\", \"asn\"]\n", ""));
        assert!(e.contains("needs factors"), "{e}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// Every profile shipped in `profiles/cards` loads.
    #[test]
    fn shipped_profiles_load() -> Result<(), ProfileError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let all = CardProfiles::load(&dir)?;
        for name in [
            "mohurd-epurse",
            "mohurd-epurse-2level",
            "mot-epurse",
            "emv-icc",
            "emv-icc-option-b",
            "gp-ssd-scp02",
            "gp-ssd-scp02-visa2",
            "desfire-an10922",
        ] {
            assert!(all.get(name).is_some(), "{name} missing");
        }
        assert_eq!(all.get("mohurd-epurse").map(|p| p.roles.len()), Some(11));
        Ok(())
    }
}
