//! On-disk token format (see README.md, "Persistence").
//!
//! A token directory holds `token.toml` (metadata, PIN verifiers, the token
//! master key wrapped under each PIN's KEK) and `objects/<id>.obj`, one file
//! per token object, AES-256-GCM encrypted. Every write goes to a temporary
//! file that is fsynced and renamed over the target, then the directory is
//! fsynced, so a crash leaves either the old or the new file.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::attrs::Attrs;
use crate::error::Res;

/// Format version written into `token.toml`.
pub(crate) const FORMAT: u32 = 1;
const MAGIC: &[u8; 4] = b"HSO1";

/// `token.toml`.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenMeta {
    /// Format version.
    pub format: u32,
    /// Token label (up to 32 bytes).
    pub label: String,
    /// Serial number (16 hex digits).
    pub serial: String,
    /// PBKDF2 iterations used for both PINs.
    pub iterations: u32,
    /// SO PIN: salt, verifier, wrapped token master key (hex).
    pub so: PinRecord,
    /// User PIN, once `C_InitPIN` has run.
    pub user: Option<PinRecord>,
    /// Key for objects without secret material (hex); see README.md.
    pub public_key: String,
    /// Consecutive wrong SO PINs (reset by a correct one).
    #[serde(default)]
    pub so_failures: u32,
    /// Consecutive wrong user PINs (reset by a correct one or `C_InitPIN`).
    #[serde(default)]
    pub user_failures: u32,
}

/// One PIN's record.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinRecord {
    /// PBKDF2 salt (hex).
    pub salt: String,
    /// First 32 bytes of PBKDF2 output (hex).
    pub verifier: String,
    /// Token master key wrapped (RFC 3394) under the last 32 bytes (hex).
    pub wrapped_tmk: String,
}

/// Hex encoding.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex decoding.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn pbkdf(pin: &[u8], salt: &[u8], iters: u32) -> Zeroizing<[u8; 64]> {
    let mut out = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pin, salt, iters, &mut out[..]);
    out
}

/// Random bytes.
pub(crate) fn random(n: usize) -> Zeroizing<Vec<u8>> {
    use rand_core::RngCore;
    let mut v = Zeroizing::new(vec![0u8; n]);
    rand_core::OsRng.fill_bytes(&mut v);
    v
}

impl PinRecord {
    /// A record for `pin` protecting `tmk`.
    pub(crate) fn new(pin: &[u8], tmk: &[u8], iters: u32) -> Res<Self> {
        let salt = random(16);
        let k = pbkdf(pin, &salt, iters);
        let wrapped = crate::sym::aes_kw_wrap(&k[32..], tmk, false)?;
        Ok(Self { salt: hex(&salt), verifier: hex(&k[..32]), wrapped_tmk: hex(&wrapped) })
    }

    /// Checks `pin` and returns the token master key.
    pub(crate) fn open(&self, pin: &[u8], iters: u32) -> Res<Zeroizing<Vec<u8>>> {
        let salt = unhex(&self.salt).ok_or(CKR_GENERAL_ERROR)?;
        let ver = unhex(&self.verifier).ok_or(CKR_GENERAL_ERROR)?;
        let k = pbkdf(pin, &salt, iters);
        if !bool::from(k[..32].ct_eq(&ver)) {
            return Err(CKR_PIN_INCORRECT);
        }
        let w = unhex(&self.wrapped_tmk).ok_or(CKR_GENERAL_ERROR)?;
        Ok(Zeroizing::new(crate::sym::aes_kw_unwrap(&k[32..], &w, false, CKR_GENERAL_ERROR)?))
    }
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Res<()> {
    let dir = path.parent().ok_or(CKR_GENERAL_ERROR)?;
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|_| CKR_DEVICE_ERROR)?;
    }
    let name = path.file_name().ok_or(CKR_GENERAL_ERROR)?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", crate::object::random_u64()));
    let res = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        // Owner-only: token.toml holds PIN verifiers, objects are ciphertext.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return Err(CKR_DEVICE_ERROR);
    }
    Ok(())
}

/// Paths of one token directory.
pub(crate) struct TokenDir(pub PathBuf);

impl TokenDir {
    fn meta_path(&self) -> PathBuf {
        self.0.join("token.toml")
    }

    fn objects(&self) -> PathBuf {
        self.0.join("objects")
    }

    fn obj_path(&self, id: u64) -> PathBuf {
        self.objects().join(format!("{id:016x}.obj"))
    }

    /// Reads `token.toml`; `Ok(None)` if the token was never initialised.
    pub(crate) fn read_meta(&self) -> Result<Option<TokenMeta>, String> {
        let p = self.meta_path();
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let m: TokenMeta = toml::from_str(&s).map_err(|e| format!("{}: {e}", p.display()))?;
                if m.format != FORMAT {
                    return Err(format!("{}: unknown format {}", p.display(), m.format));
                }
                Ok(Some(m))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Writes `token.toml` atomically.
    pub(crate) fn write_meta(&self, m: &TokenMeta) -> Res<()> {
        let s = toml::to_string(m).map_err(|_| CKR_GENERAL_ERROR)?;
        write_atomic(&self.meta_path(), s.as_bytes())
    }

    /// Removes every object file (token re-initialisation).
    pub(crate) fn wipe_objects(&self) -> Res<()> {
        match std::fs::read_dir(self.objects()) {
            Ok(rd) => {
                for e in rd.flatten() {
                    std::fs::remove_file(e.path()).map_err(|_| CKR_DEVICE_ERROR)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(_) => Err(CKR_DEVICE_ERROR),
        }
    }

    /// Stores one object: `HSO1 || kind || nonce(12) || AES-256-GCM(attrs)`
    /// with AAD `HSO1 || kind || id`; kind 1 = under the token master key,
    /// kind 0 = under the public-object key.
    pub(crate) fn write_object(&self, id: u64, secret: bool, key: &[u8], attrs: &Attrs) -> Res<()> {
        let kind = u8::from(secret);
        let nonce = random(12);
        let mut aad = MAGIC.to_vec();
        aad.push(kind);
        aad.extend_from_slice(&id.to_le_bytes());
        let c = Aes256Gcm::new_from_slice(key).map_err(|_| CKR_GENERAL_ERROR)?;
        let plain = attrs.serialize();
        let ct = c
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .map_err(|_| CKR_GENERAL_ERROR)?;
        let mut out = MAGIC.to_vec();
        out.push(kind);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        write_atomic(&self.obj_path(id), &out)
    }

    /// Deletes one object file.
    pub(crate) fn delete_object(&self, id: u64) -> Res<()> {
        match std::fs::remove_file(self.obj_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(_) => Err(CKR_DEVICE_ERROR),
        }
    }

    /// Lists object files: (id, stamp). `None` if the directory is unreadable.
    pub(crate) fn list_objects(&self) -> Vec<(u64, Stamp)> {
        let Ok(rd) = std::fs::read_dir(self.objects()) else { return Vec::new() };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let id = name.strip_suffix(".obj").and_then(|h| u64::from_str_radix(h, 16).ok())?;
                Some((id, stamp(&e.path())?))
            })
            .collect()
    }

    /// Stamp of the objects directory (changes when files are added,
    /// replaced or removed).
    pub(crate) fn objects_stamp(&self) -> Option<Stamp> {
        stamp(&self.objects())
    }

    /// Stamp of one object file.
    pub(crate) fn object_stamp(&self, id: u64) -> Option<Stamp> {
        stamp(&self.obj_path(id))
    }

    /// Reads one object file: `Ok(None)` if it is of the secret kind and no
    /// token master key is available yet; `Err(())` if unreadable or it
    /// fails authentication.
    pub(crate) fn read_object(&self, id: u64, public_key: &[u8], tmk: Option<&[u8]>) -> Result<Option<Attrs>, ()> {
        let data = std::fs::read(self.obj_path(id)).map_err(|_| ())?;
        if data.len() < 17 || &data[..4] != MAGIC {
            return Err(());
        }
        let key = match data[4] {
            0 => public_key,
            1 => match tmk {
                Some(k) => k,
                None => return Ok(None),
            },
            _ => return Err(()),
        };
        let c = Aes256Gcm::new_from_slice(key).map_err(|_| ())?;
        let mut aad = data[..5].to_vec();
        aad.extend_from_slice(&id.to_le_bytes());
        let plain = c
            .decrypt(aes_gcm::Nonce::from_slice(&data[5..17]), Payload { msg: &data[17..], aad: &aad })
            .map_err(|_| ())?;
        Attrs::deserialize(&Zeroizing::new(plain)).map(Some).ok_or(())
    }
}

/// What identifies one version of a file: modification time and length.
pub(crate) type Stamp = (std::time::SystemTime, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
