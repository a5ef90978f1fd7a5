//! `test-token`: initialises a token and seeds keys of known value into it,
//! for the end-to-end tests. Reads one JSON request on stdin; the module's
//! environment (SOFTHSM2_CONF, HSM_SIM_CONF) comes from the caller.
//! Test material only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;

fn main() {
    let req: serde_json::Value = serde_json::from_reader(std::io::stdin()).expect("JSON request on stdin");
    let module = req["module"].as_str().expect("module");
    let label = req["label"].as_str().expect("label");
    let pin = SecretString::from(req["pin"].as_str().expect("pin").to_owned());
    let ctx = Pkcs11::new(module).expect("load module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).expect("C_Initialize");
    let find = |want_label: Option<&str>| {
        ctx.get_slots_with_token().unwrap().into_iter().find(|s| {
            let info = ctx.get_token_info(*s).unwrap();
            match want_label {
                Some(l) => info.token_initialized() && info.label().trim_end() == l,
                None => !info.token_initialized(),
            }
        })
    };
    if let Some(so_pin) = req["init_so_pin"].as_str() {
        let so_pin = SecretString::from(so_pin.to_owned());
        let slot = find(None).expect("a slot with an uninitialised token");
        ctx.init_token(slot, &so_pin, label).expect("C_InitToken");
        let slot = find(Some(label)).expect("the new token");
        let so = ctx.open_rw_session(slot).unwrap();
        so.login(UserType::So, Some(&so_pin)).expect("SO login");
        so.init_pin(&pin).expect("C_InitPIN");
    }
    let slot = find(Some(label)).expect("token");
    let session = ctx.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&pin)).expect("user login");
    for k in req["keys"].as_array().cloned().unwrap_or_default() {
        let key_type = match k["key_type"].as_str().unwrap() {
            "AES" => KeyType::AES,
            "DES2" => KeyType::DES2,
            other => panic!("key type {other}"),
        };
        session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(k["extractable"].as_bool().unwrap_or(false)),
                Attribute::Encrypt(true),
                Attribute::Wrap(k["wrap"].as_bool().unwrap_or(false)),
                Attribute::Unwrap(k["unwrap"].as_bool().unwrap_or(false)),
                Attribute::Derive(k["derive"].as_bool().unwrap_or(false)),
                Attribute::Label(k["label"].as_str().unwrap().as_bytes().to_vec()),
                Attribute::Value(hex::decode(k["value"].as_str().unwrap()).unwrap()),
            ])
            .expect("C_CreateObject");
    }
    drop(session);
    ctx.finalize().expect("C_Finalize");
}
