//! Objects and the template rules of PKCS#11 v2.40 §4: which attributes a
//! class takes, secure defaults, read-only and sensitive attributes.

use std::sync::{Arc, OnceLock};

use cryptoki_sys::*;

use crate::asym::{Curve, PrivKey, PubKey};
use crate::attrs::Attrs;
use crate::error::Res;
use crate::sym::{self, Family};
use crate::vendor::VendorIds;

/// A key type known to the module.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kt {
    /// Single DES.
    Des,
    /// Two-key 3DES.
    Des2,
    /// Three-key 3DES.
    Des3,
    /// AES.
    Aes,
    /// SM4 (vendor key type).
    Sm4,
    /// Generic secret.
    Generic,
    /// EC (P-256/P-384).
    Ec,
    /// SM2 (vendor key type).
    Sm2,
    /// RSA.
    Rsa,
}

impl Kt {
    /// From a `CKK_*` value.
    pub(crate) fn from_ckk(v: &VendorIds, ckk: CK_KEY_TYPE) -> Res<Self> {
        Ok(match ckk {
            CKK_DES => Kt::Des,
            CKK_DES2 => Kt::Des2,
            CKK_DES3 => Kt::Des3,
            CKK_AES => Kt::Aes,
            CKK_GENERIC_SECRET => Kt::Generic,
            CKK_EC => Kt::Ec,
            CKK_RSA => Kt::Rsa,
            x if x == v.ckk_sm4 => Kt::Sm4,
            x if x == v.ckk_sm2 => Kt::Sm2,
            _ => return Err(CKR_TEMPLATE_INCONSISTENT),
        })
    }

    /// To a `CKK_*` value.
    pub(crate) fn ckk(self, v: &VendorIds) -> CK_KEY_TYPE {
        match self {
            Kt::Des => CKK_DES,
            Kt::Des2 => CKK_DES2,
            Kt::Des3 => CKK_DES3,
            Kt::Aes => CKK_AES,
            Kt::Generic => CKK_GENERIC_SECRET,
            Kt::Ec => CKK_EC,
            Kt::Rsa => CKK_RSA,
            Kt::Sm4 => v.ckk_sm4,
            Kt::Sm2 => v.ckk_sm2,
        }
    }

    /// Cipher family of a block-cipher key.
    pub(crate) fn family(self) -> Option<Family> {
        match self {
            Kt::Des => Some(Family::Des),
            Kt::Des2 | Kt::Des3 => Some(Family::Tdes),
            Kt::Aes => Some(Family::Aes),
            Kt::Sm4 => Some(Family::Sm4),
            _ => None,
        }
    }

    /// Whether this is a secret-key type.
    pub(crate) fn is_secret(self) -> bool {
        matches!(self, Kt::Des | Kt::Des2 | Kt::Des3 | Kt::Aes | Kt::Sm4 | Kt::Generic)
    }

    /// Checks (and for DES, normalises parity of) a secret key value.
    pub(crate) fn check_value_len(self, len: usize) -> Res<()> {
        let ok = match self {
            Kt::Des => len == 8,
            Kt::Des2 => len == 16,
            Kt::Des3 => len == 24,
            Kt::Aes => matches!(len, 16 | 24 | 32),
            Kt::Sm4 => len == 16,
            Kt::Generic => (1..=512).contains(&len),
            _ => false,
        };
        if ok { Ok(()) } else { Err(CKR_KEY_SIZE_RANGE) }
    }

    /// The fixed length of a secret key type, if it has one.
    pub(crate) fn fixed_len(self) -> Option<usize> {
        match self {
            Kt::Des => Some(8),
            Kt::Des2 | Kt::Sm4 => Some(16),
            Kt::Des3 => Some(24),
            _ => None,
        }
    }
}

/// Parsed key material cached on an object (built on first use).
pub(crate) enum Parsed {
    /// A private key.
    Priv(PrivKey),
    /// A public key.
    Pub(PubKey),
}

/// One object. Immutable once shared: `C_SetAttributeValue` replaces it.
pub(crate) struct Object {
    /// All attributes, key values included.
    pub attrs: Attrs,
    /// `CKA_CLASS`.
    pub class: CK_OBJECT_CLASS,
    /// Key type for keys.
    pub kt: Option<Kt>,
    /// Owning session for session objects.
    pub session: Option<CK_SESSION_HANDLE>,
    /// Storage id for token objects.
    pub file_id: Option<u64>,
    /// Parsed key material.
    pub parsed: OnceLock<Parsed>,
}

impl Object {
    /// Wraps attributes already checked by the template rules.
    pub(crate) fn new(attrs: Attrs, v: &VendorIds, session: Option<CK_SESSION_HANDLE>) -> Res<Arc<Self>> {
        let class = attrs.ulong_opt(CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        let kt = match attrs.ulong_opt(CKA_KEY_TYPE)? {
            Some(k) if is_key(class) => Some(Kt::from_ckk(v, k)?),
            _ => None,
        };
        let file_id = if attrs.flag(CKA_TOKEN) { Some(random_u64()) } else { None };
        Ok(Arc::new(Self { attrs, class, kt, session, file_id, parsed: OnceLock::new() }))
    }

    /// Rebuilds an object loaded from storage.
    pub(crate) fn loaded(attrs: Attrs, v: &VendorIds, file_id: u64) -> Res<Arc<Self>> {
        let class = attrs.ulong_opt(CKA_CLASS)?.ok_or(CKR_GENERAL_ERROR)?;
        let kt = match attrs.ulong_opt(CKA_KEY_TYPE)? {
            Some(k) if is_key(class) => Some(Kt::from_ckk(v, k)?),
            _ => None,
        };
        Ok(Arc::new(Self { attrs, class, kt, session: None, file_id: Some(file_id), parsed: OnceLock::new() }))
    }

    /// A modified copy keeping identity (session, file id).
    pub(crate) fn with_attrs(&self, attrs: Attrs) -> Arc<Self> {
        Arc::new(Self {
            attrs,
            class: self.class,
            kt: self.kt,
            session: self.session,
            file_id: self.file_id,
            parsed: OnceLock::new(),
        })
    }

    /// `CKA_TOKEN`.
    pub(crate) fn is_token(&self) -> bool {
        self.attrs.flag(CKA_TOKEN)
    }

    /// `CKA_PRIVATE`.
    pub(crate) fn is_private(&self) -> bool {
        self.attrs.flag(CKA_PRIVATE)
    }

    /// Whether the object holds secret material (encrypted under the token key).
    pub(crate) fn has_secret(&self) -> bool {
        matches!(self.class, CKO_SECRET_KEY | CKO_PRIVATE_KEY)
    }

    /// The key value of a secret key.
    pub(crate) fn value(&self) -> Res<&[u8]> {
        self.attrs.get(CKA_VALUE).ok_or(CKR_KEY_HANDLE_INVALID)
    }

    /// The EC curve of an EC/SM2 key.
    pub(crate) fn curve(&self) -> Res<Curve> {
        Curve::from_params(self.attrs.get(CKA_EC_PARAMS).ok_or(CKR_KEY_HANDLE_INVALID)?)
    }

    /// The parsed private key.
    pub(crate) fn private_key(&self) -> Res<&PrivKey> {
        if self.class != CKO_PRIVATE_KEY {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if self.parsed.get().is_none() {
            let k = match self.kt {
                Some(Kt::Ec | Kt::Sm2) => PrivKey::ec(self.curve()?, self.value()?)?,
                Some(Kt::Rsa) => {
                    let g = |t| self.attrs.get(t).ok_or(CKR_KEY_HANDLE_INVALID);
                    PrivKey::rsa(
                        g(CKA_MODULUS)?,
                        g(CKA_PUBLIC_EXPONENT)?,
                        g(CKA_PRIVATE_EXPONENT)?,
                        g(CKA_PRIME_1)?,
                        g(CKA_PRIME_2)?,
                    )?
                }
                _ => return Err(CKR_KEY_TYPE_INCONSISTENT),
            };
            let _ = self.parsed.set(Parsed::Priv(k));
        }
        match self.parsed.get() {
            Some(Parsed::Priv(k)) => Ok(k),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }

    /// The parsed public key.
    pub(crate) fn public_key(&self) -> Res<&PubKey> {
        if self.class != CKO_PUBLIC_KEY {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if self.parsed.get().is_none() {
            let k = match self.kt {
                Some(Kt::Ec | Kt::Sm2) => {
                    let c = self.curve()?;
                    let p = self.attrs.get(CKA_EC_POINT).ok_or(CKR_KEY_HANDLE_INVALID)?;
                    PubKey::ec(c, &crate::asym::raw_point(c, p)?)?
                }
                Some(Kt::Rsa) => {
                    let g = |t| self.attrs.get(t).ok_or(CKR_KEY_HANDLE_INVALID);
                    PubKey::rsa(g(CKA_MODULUS)?, g(CKA_PUBLIC_EXPONENT)?)?
                }
                _ => return Err(CKR_KEY_TYPE_INCONSISTENT),
            };
            let _ = self.parsed.set(Parsed::Pub(k));
        }
        match self.parsed.get() {
            Some(Parsed::Pub(k)) => Ok(k),
            _ => Err(CKR_GENERAL_ERROR),
        }
    }

    /// Whether an attribute may not be revealed (`CKR_ATTRIBUTE_SENSITIVE`).
    pub(crate) fn is_sensitive_attr(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        let hidden = self.attrs.flag(CKA_SENSITIVE) || !self.attrs.flag(CKA_EXTRACTABLE);
        match self.class {
            CKO_SECRET_KEY => hidden && t == CKA_VALUE,
            CKO_PRIVATE_KEY => {
                hidden
                    && matches!(
                        t,
                        CKA_VALUE
                            | CKA_PRIVATE_EXPONENT
                            | CKA_PRIME_1
                            | CKA_PRIME_2
                            | CKA_EXPONENT_1
                            | CKA_EXPONENT_2
                            | CKA_COEFFICIENT
                    )
            }
            _ => false,
        }
    }
}

/// Whether a class is a key class.
pub(crate) fn is_key(class: CK_OBJECT_CLASS) -> bool {
    matches!(class, CKO_SECRET_KEY | CKO_PUBLIC_KEY | CKO_PRIVATE_KEY)
}

/// A random 64-bit id.
pub(crate) fn random_u64() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

const COMMON: &[CK_ATTRIBUTE_TYPE] =
    &[CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE, CKA_LABEL, CKA_COPYABLE, CKA_DESTROYABLE];
const KEY: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALLOWED_MECHANISMS,
];
const SECRET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_CHECK_VALUE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_TRUSTED,
    CKA_VALUE,
    CKA_VALUE_LEN,
];
const PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_TRUSTED,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
];
const PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_SUBJECT,
    CKA_SENSITIVE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_VALUE,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];
const DATA: &[CK_ATTRIBUTE_TYPE] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE];
const CERT: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
];

const BOOLS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_TRUSTED,
    CKA_SIGN_RECOVER,
    CKA_VERIFY_RECOVER,
    CKA_ALWAYS_AUTHENTICATE,
];
const ULONGS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_VALUE_LEN,
    CKA_MODULUS_BITS,
    CKA_CERTIFICATE_TYPE,
    CKA_CERTIFICATE_CATEGORY,
    CKA_KEY_GEN_MECHANISM,
];

/// Attributes a template may never set (the module maintains them).
const MODULE_SET: &[CK_ATTRIBUTE_TYPE] =
    &[CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_KEY_GEN_MECHANISM];

/// Checks that every attribute of `t` is valid for `class` and well-formed.
pub(crate) fn check_template(class: CK_OBJECT_CLASS, t: &Attrs) -> Res<()> {
    let allowed: &[&[CK_ATTRIBUTE_TYPE]] = match class {
        CKO_SECRET_KEY => &[COMMON, KEY, SECRET],
        CKO_PUBLIC_KEY => &[COMMON, KEY, PUBLIC],
        CKO_PRIVATE_KEY => &[COMMON, KEY, PRIVATE],
        CKO_DATA => &[COMMON, DATA],
        CKO_CERTIFICATE => &[COMMON, CERT],
        _ => return Err(CKR_TEMPLATE_INCONSISTENT),
    };
    for (ty, v) in t.iter() {
        if !allowed.iter().any(|s| s.contains(&ty)) {
            return Err(CKR_ATTRIBUTE_TYPE_INVALID);
        }
        if BOOLS.contains(&ty) && v.len() != 1 {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        if ULONGS.contains(&ty) && v.len() != std::mem::size_of::<CK_ULONG>() {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        if MODULE_SET.contains(&ty) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        if ty == CKA_ALLOWED_MECHANISMS && v.len() % std::mem::size_of::<CK_MECHANISM_TYPE>() != 0 {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
    }
    Ok(())
}

/// How a key came to be, for `CKA_LOCAL` and the sensitivity history.
pub(crate) enum Origin {
    /// Generated inside the module by this mechanism.
    Generated(CK_MECHANISM_TYPE),
    /// Imported in the clear (`C_CreateObject`).
    Imported,
    /// Derived from (or unwrapped with) a base key: whether the base was
    /// always sensitive and never extractable.
    Derived {
        /// Base key's `CKA_ALWAYS_SENSITIVE`.
        always_sensitive: bool,
        /// Base key's `CKA_NEVER_EXTRACTABLE`.
        never_extractable: bool,
    },
    /// Unwrapped (never "always sensitive" per PKCS#11).
    Unwrapped,
}

/// Fills the common defaults for any object.
fn common_defaults(a: &mut Attrs, private_default: bool) {
    a.default_bool(CKA_TOKEN, false);
    a.default_bool(CKA_PRIVATE, private_default);
    a.default_bool(CKA_MODIFIABLE, true);
    a.default_bool(CKA_COPYABLE, true);
    a.default_bool(CKA_DESTROYABLE, true);
    a.default_bytes(CKA_LABEL, b"");
}

fn key_defaults(a: &mut Attrs, origin: &Origin) {
    a.default_bytes(CKA_ID, b"");
    a.default_bytes(CKA_START_DATE, b"");
    a.default_bytes(CKA_END_DATE, b"");
    a.default_bool(CKA_DERIVE, false);
    match origin {
        Origin::Generated(m) => {
            a.set_bool(CKA_LOCAL, true);
            a.set_ulong(CKA_KEY_GEN_MECHANISM, *m);
        }
        _ => {
            a.set_bool(CKA_LOCAL, false);
            a.set_ulong(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
        }
    }
}

/// Secure defaults and history for a key holding secret material.
fn sensitivity(a: &mut Attrs, origin: &Origin) {
    // why: DESIGN.md invariant 1 — long-term keys are sensitive and
    // non-extractable unless the template says otherwise.
    a.default_bool(CKA_SENSITIVE, true);
    a.default_bool(CKA_EXTRACTABLE, false);
    a.default_bool(CKA_WRAP_WITH_TRUSTED, false);
    let s = a.flag(CKA_SENSITIVE);
    let x = a.flag(CKA_EXTRACTABLE);
    let (as_, ne) = match origin {
        Origin::Generated(_) => (s, !x),
        Origin::Imported | Origin::Unwrapped => (false, false),
        Origin::Derived { always_sensitive, never_extractable } => (*always_sensitive && s, *never_extractable && !x),
    };
    a.set_bool(CKA_ALWAYS_SENSITIVE, as_);
    a.set_bool(CKA_NEVER_EXTRACTABLE, ne);
}

/// Builds a secret key object's attributes from a (checked) template, a key
/// type and a value. DES values get odd parity; `CKA_CHECK_VALUE` is computed
/// (a template value must match it).
pub(crate) fn build_secret(
    mut a: Attrs,
    v: &VendorIds,
    kt: Kt,
    mut value: zeroize::Zeroizing<Vec<u8>>,
    origin: Origin,
) -> Res<Attrs> {
    kt.check_value_len(value.len())?;
    if matches!(kt, Kt::Des | Kt::Des2 | Kt::Des3) {
        sym::set_odd_parity(&mut value);
    }
    if let Some(l) = a.ulong_opt(CKA_VALUE_LEN)?
        && l as usize != value.len()
    {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    a.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    a.set_ulong(CKA_KEY_TYPE, kt.ckk(v));
    common_defaults(&mut a, true);
    key_defaults(&mut a, &origin);
    for f in [CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY, CKA_WRAP, CKA_UNWRAP] {
        a.default_bool(f, true);
    }
    a.default_bool(CKA_TRUSTED, false);
    sensitivity(&mut a, &origin);
    if let Some(f) = kt.family() {
        let kcv = sym::kcv(f, &value)?;
        if let Some(given) = a.get(CKA_CHECK_VALUE)
            && !given.is_empty()
            && given != &kcv[..given.len().min(3)]
        {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        a.set(CKA_CHECK_VALUE, kcv);
    }
    a.set_ulong(CKA_VALUE_LEN, value.len() as CK_ULONG);
    a.set(CKA_VALUE, value.to_vec());
    Ok(a)
}

/// Fills defaults of a public key template.
pub(crate) fn public_defaults(a: &mut Attrs, origin: &Origin) {
    a.set_ulong(CKA_CLASS, CKO_PUBLIC_KEY);
    common_defaults(a, false);
    key_defaults(a, origin);
    a.default_bytes(CKA_SUBJECT, b"");
    for f in [CKA_ENCRYPT, CKA_VERIFY, CKA_WRAP] {
        a.default_bool(f, true);
    }
    a.default_bool(CKA_VERIFY_RECOVER, false);
    a.default_bool(CKA_TRUSTED, false);
}

/// Fills defaults of a private key template.
pub(crate) fn private_defaults(a: &mut Attrs, origin: &Origin) {
    a.set_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    common_defaults(a, true);
    key_defaults(a, origin);
    a.default_bytes(CKA_SUBJECT, b"");
    for f in [CKA_DECRYPT, CKA_SIGN, CKA_UNWRAP] {
        a.default_bool(f, true);
    }
    a.default_bool(CKA_SIGN_RECOVER, false);
    a.default_bool(CKA_ALWAYS_AUTHENTICATE, false);
    sensitivity(a, origin);
}

/// Builds an object from a `C_CreateObject` template.
pub(crate) fn build_created(mut a: Attrs, v: &VendorIds) -> Res<Attrs> {
    let class = a.ulong_opt(CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    check_template(class, &a)?;
    match class {
        CKO_SECRET_KEY => {
            let kt = Kt::from_ckk(v, a.ulong_opt(CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
            if !kt.is_secret() {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            let value = zeroize::Zeroizing::new(a.get(CKA_VALUE).ok_or(CKR_TEMPLATE_INCOMPLETE)?.to_vec());
            a.remove(CKA_VALUE);
            if a.has(CKA_VALUE_LEN) {
                return Err(CKR_ATTRIBUTE_READ_ONLY);
            }
            kt.check_value_len(value.len()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            build_secret(a, v, kt, value, Origin::Imported)
        }
        CKO_PUBLIC_KEY => {
            let kt = Kt::from_ckk(v, a.ulong_opt(CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
            match kt {
                Kt::Ec | Kt::Sm2 => {
                    let c = Curve::from_params(a.get(CKA_EC_PARAMS).ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
                    let p = a.get(CKA_EC_POINT).ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let raw = crate::asym::raw_point(c, p)?;
                    PubKey::ec(c, &raw).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    a.set(CKA_EC_POINT, crate::asym::der_octet_string(&raw));
                }
                Kt::Rsa => {
                    let n = a.get(CKA_MODULUS).ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let e = a.get(CKA_PUBLIC_EXPONENT).ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    PubKey::rsa(n, e).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                    if a.has(CKA_MODULUS_BITS) {
                        return Err(CKR_ATTRIBUTE_READ_ONLY);
                    }
                    a.set_ulong(CKA_MODULUS_BITS, bits as CK_ULONG);
                }
                _ => return Err(CKR_TEMPLATE_INCONSISTENT),
            }
            public_defaults(&mut a, &Origin::Imported);
            Ok(a)
        }
        CKO_PRIVATE_KEY => {
            let kt = Kt::from_ckk(v, a.ulong_opt(CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
            match kt {
                Kt::Ec | Kt::Sm2 => {
                    let c = Curve::from_params(a.get(CKA_EC_PARAMS).ok_or(CKR_TEMPLATE_INCOMPLETE)?)?;
                    let d = a.get(CKA_VALUE).ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    crate::asym::ec_public_from_private(c, d)?;
                }
                Kt::Rsa => {
                    for t in [CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2] {
                        if !a.has(t) {
                            return Err(CKR_TEMPLATE_INCOMPLETE);
                        }
                    }
                    let g = |t| a.get(t).unwrap_or_default();
                    PrivKey::rsa(
                        g(CKA_MODULUS),
                        g(CKA_PUBLIC_EXPONENT),
                        g(CKA_PRIVATE_EXPONENT),
                        g(CKA_PRIME_1),
                        g(CKA_PRIME_2),
                    )
                    .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                }
                _ => return Err(CKR_TEMPLATE_INCONSISTENT),
            }
            private_defaults(&mut a, &Origin::Imported);
            Ok(a)
        }
        _ => {
            common_defaults(&mut a, false);
            if class == CKO_DATA {
                a.default_bytes(CKA_APPLICATION, b"");
                a.default_bytes(CKA_VALUE, b"");
            }
            Ok(a)
        }
    }
}

/// Attributes `C_SetAttributeValue` may never change.
const NEVER_SET: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_KEY_TYPE,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
    CKA_CHECK_VALUE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_CERTIFICATE_TYPE,
];

/// Applies `C_SetAttributeValue` changes under the standard's restrictions
/// and returns the new attribute map.
pub(crate) fn apply_changes(obj: &Object, changes: &Attrs, is_so: bool) -> Res<Attrs> {
    if !obj.attrs.flag(CKA_MODIFIABLE) {
        return Err(CKR_ACTION_PROHIBITED);
    }
    check_template(obj.class, changes)
        .map_err(|e| if e == CKR_ATTRIBUTE_READ_ONLY { CKR_ATTRIBUTE_READ_ONLY } else { e })?;
    let mut a = obj.attrs.duplicate();
    for (t, v) in changes.iter() {
        let same = obj.attrs.get(t) == Some(v);
        if same {
            continue;
        }
        let new_true = v.first().copied().unwrap_or(0) != 0;
        match t {
            _ if NEVER_SET.contains(&t) => return Err(CKR_ATTRIBUTE_READ_ONLY),
            // PKCS#11 v2.40 §4.9: SENSITIVE may only go false -> true.
            CKA_SENSITIVE if !new_true => return Err(CKR_ATTRIBUTE_READ_ONLY),
            // EXTRACTABLE may only go true -> false.
            CKA_EXTRACTABLE if new_true => return Err(CKR_ATTRIBUTE_READ_ONLY),
            // WRAP_WITH_TRUSTED cannot be cleared once set.
            CKA_WRAP_WITH_TRUSTED if !new_true => return Err(CKR_ATTRIBUTE_READ_ONLY),
            // Only the SO may set TRUSTED.
            CKA_TRUSTED if new_true && !is_so => return Err(CKR_ATTRIBUTE_READ_ONLY),
            CKA_COPYABLE if new_true => return Err(CKR_ATTRIBUTE_READ_ONLY),
            CKA_DESTROYABLE if new_true => return Err(CKR_ATTRIBUTE_READ_ONLY),
            _ => {}
        }
        a.set(t, v.to_vec());
    }
    Ok(a)
}
