//! The ceremony's PKCS#11 module and token: loading, token
//! initialisation, logins, the capability probes and the transcript key.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use kms::hsm::Capabilities;
use kms::hsm::pki::{PublicKeyParts, read_public_key};
use secrecy::SecretString;

use crate::error::{CeremonyError, hsm};
use crate::plan::HsmPlan;

/// A loaded module.
pub struct Module {
    ctx: Pkcs11,
    /// The module path, for messages.
    pub name: String,
    plan: HsmPlan,
}

impl Module {
    /// Loads and initialises the module, after setting its environment.
    pub fn load(plan: &HsmPlan) -> Result<Module, CeremonyError> {
        let name = plan.module.display().to_string();
        if !plan.module.is_file() {
            return Err(CeremonyError::Refused(format!("PKCS#11 module {name}: no such file")));
        }
        kms::hsm::raw::apply_module_env_before_threads(&plan.module_env);
        let ctx = Pkcs11::new(&plan.module).map_err(hsm(&name))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(hsm(&name))?;
        Ok(Module { ctx, name, plan: plan.clone() })
    }

    /// The slot whose token carries the plan's label, if any.
    pub fn find_token(&self) -> Result<Option<Slot>, CeremonyError> {
        for slot in self.ctx.get_slots_with_token().map_err(hsm(&self.name))? {
            let info = self.ctx.get_token_info(slot).map_err(hsm(&self.name))?;
            if info.token_initialized() && info.label().trim_end() == self.plan.token {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The first slot whose token is not initialised.
    pub fn find_blank(&self) -> Result<Option<Slot>, CeremonyError> {
        for slot in self.ctx.get_slots_with_token().map_err(hsm(&self.name))? {
            let info = self.ctx.get_token_info(slot).map_err(hsm(&self.name))?;
            if !info.token_initialized() {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The token's slot, or an error saying there is none.
    pub fn token_slot(&self) -> Result<Slot, CeremonyError> {
        self.find_token()?.ok_or_else(|| {
            CeremonyError::Refused(format!(
                "module {} has no initialised token labelled {:?}",
                self.name, self.plan.token
            ))
        })
    }

    /// Initialises the token in `slot` (C_InitToken: erases it) with
    /// `so_pin`, then sets the user PIN.
    pub fn init_token(&self, slot: Slot, so_pin: &SecretString, user_pin: &SecretString) -> Result<(), CeremonyError> {
        self.ctx.init_token(slot, so_pin, &self.plan.token).map_err(hsm(&self.name))?;
        let slot = self.token_slot()?;
        let session = self.ctx.open_rw_session(slot).map_err(hsm(&self.name))?;
        session.login(UserType::So, Some(so_pin)).map_err(hsm(&self.name))?;
        session.init_pin(user_pin).map_err(hsm(&self.name))?;
        session.logout().map_err(hsm(&self.name))?;
        Ok(())
    }

    /// Opens a read-write session on the token and logs the user in.
    pub fn user_session(&self, pin: &SecretString) -> Result<Session, CeremonyError> {
        let slot = self.token_slot()?;
        let session = self.ctx.open_rw_session(slot).map_err(hsm(&self.name))?;
        login(&session, &self.name, UserType::User, pin)?;
        Ok(session)
    }

    /// Probes the module's capabilities through a logged-in session.
    pub fn probe(&self, session: &Session) -> Result<Capabilities, CeremonyError> {
        let slot = self.token_slot()?;
        Ok(Capabilities::probe(&self.ctx, slot, session, &self.name, &self.plan.vendor))
    }
}

/// Logs `session` in as `user`; a wrong PIN is a refusal naming the role.
pub fn login(session: &Session, module: &str, user: UserType, pin: &SecretString) -> Result<(), CeremonyError> {
    session.login(user, Some(pin)).map_err(|e| match e {
        cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::PinIncorrect, _) => CeremonyError::Refused(format!(
            "the {} PIN is wrong",
            if matches!(user, UserType::So) { "security officer (SO)" } else { "user" }
        )),
        e => hsm(module)(e),
    })
}

/// Random bytes from the module's generator.
pub fn random(session: &Session, module: &str, out: &mut [u8]) -> Result<(), CeremonyError> {
    let bytes = zeroize::Zeroizing::new(session.generate_random_vec(out.len() as u32).map_err(hsm(module))?);
    if bytes.len() != out.len() {
        return Err(CeremonyError::Refused(format!(
            "module {module} returned {} random bytes, not {}",
            bytes.len(),
            out.len()
        )));
    }
    out.copy_from_slice(&bytes);
    Ok(())
}

/// Generates the transcript's signing key: an ECDSA P-256 pair of session
/// objects (gone when the session closes), the private key sensitive and
/// not extractable.
pub fn transcript_key(session: &Session, module: &str) -> Result<(ObjectHandle, PublicKeyParts), CeremonyError> {
    let public = [
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::KeyType(KeyType::EC),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::EcParams(kms::hsm::signer::P256_PARAMS.to_vec()),
    ];
    // why: CKA_PRIVATE false keeps the key through the SO login a backup
    // needs (C_Logout destroys private session objects on some modules); a
    // session object is visible to this process only either way.
    let private = [
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
    ];
    let (pub_handle, priv_handle) =
        session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private).map_err(hsm(module))?;
    let parts = read_public_key(session, module, pub_handle)?;
    Ok((priv_handle, parts))
}

/// Whether the token holds any token object at all.
pub fn holds_objects(session: &Session, module: &str) -> Result<bool, CeremonyError> {
    Ok(!session.find_objects(&[Attribute::Token(true)]).map_err(hsm(module))?.is_empty())
}

/// Checks that the module enforces `CKA_WRAP_WITH_TRUSTED` before any key
/// is made to rely on it: a throw-away session key with the flag must not
/// be wrappable under an untrusted key.
pub fn require_trusted_wrap(session: &Session, module: &str) -> Result<(), CeremonyError> {
    let aes = |extra: Vec<Attribute>| {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::ValueLen(16.into()),
            Attribute::Sensitive(true),
        ];
        t.extend(extra);
        session.generate_key(&Mechanism::AesKeyGen, &t).map_err(hsm(module))
    };
    let wrapping = aes(vec![Attribute::Wrap(true), Attribute::Extractable(false)])?;
    let target = match aes(vec![Attribute::Extractable(true), Attribute::WrapWithTrusted(true)]) {
        Ok(t) => t,
        Err(e) => {
            let _ = session.destroy_object(wrapping);
            return Err(e);
        }
    };
    let outcome = session.wrap_key(&Mechanism::AesKeyWrap, wrapping, target);
    let _ = session.destroy_object(wrapping);
    let _ = session.destroy_object(target);
    match outcome {
        Err(_) => Ok(()),
        Ok(_) => Err(CeremonyError::Refused(format!(
            "module {module} wrapped a CKA_WRAP_WITH_TRUSTED key under an untrusted key: it does not enforce the flag, so keys marked backup = true would not be protected"
        ))),
    }
}

/// Whether a token object labelled `label` of any class exists.
pub fn label_exists(session: &Session, module: &str, label: &str) -> Result<bool, CeremonyError> {
    let found = session
        .find_objects(&[Attribute::Token(true), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(hsm(module))?;
    Ok(!found.is_empty())
}

/// The one secret key labelled `label`; an error if none or several.
pub fn secret_key(session: &Session, module: &str, label: &str) -> Result<ObjectHandle, CeremonyError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(hsm(module))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CeremonyError::Refused(format!("the token has no secret key labelled {label:?}"))),
        more => Err(CeremonyError::Refused(format!("the token has {} secret keys labelled {label:?}", more.len()))),
    }
}

/// CKA_ID of an object.
pub fn object_id(session: &Session, module: &str, handle: ObjectHandle) -> Result<Vec<u8>, CeremonyError> {
    let attrs = session.get_attributes(handle, &[AttributeType::Id]).map_err(hsm(module))?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .unwrap_or_default())
}
