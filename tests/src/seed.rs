//! Puts keys of known value into a token before the server starts, as a
//! key ceremony would, so tests can check derivations against published
//! vectors. Test material only: these values are public test vectors.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;

/// A key to create.
pub struct SeedKey<'a> {
    /// CKA_LABEL.
    pub label: &'a str,
    /// AES or DES2.
    pub key_type: KeyType,
    /// Value.
    pub value: &'a [u8],
    /// CKA_WRAP.
    pub wrap: bool,
    /// CKA_UNWRAP.
    pub unwrap: bool,
    /// CKA_DERIVE.
    pub derive: bool,
}

/// Creates `keys` as sensitive, non-extractable token objects in the token
/// labelled `label` of `module`, loading the module in this process.
pub fn seed(module: &str, token_label: &str, pin: &str, keys: &[SeedKey<'_>]) {
    let ctx = Pkcs11::new(module).expect("load module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).expect("C_Initialize");
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|i| i.label().trim_end() == token_label).unwrap_or(false))
        .expect("token");
    let session = ctx.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&SecretString::from(pin.to_owned()))).unwrap();
    for k in keys {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(k.key_type),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Wrap(k.wrap),
                Attribute::Unwrap(k.unwrap),
                Attribute::Derive(k.derive),
                Attribute::Label(k.label.as_bytes().to_vec()),
                Attribute::Value(k.value.to_vec()),
            ])
            .expect("C_CreateObject");
    }
    drop(session);
    ctx.finalize().expect("C_Finalize");
}
