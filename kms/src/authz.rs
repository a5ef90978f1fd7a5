//! Authorization with Cedar. Default deny: a call is allowed only when a
//! `permit` policy matches and no `forbid` does.
//!
//! Policies and their schema live in `policies/` (`schema.cedarschema` and
//! `*.cedar`). Every file is parsed and the whole set is validated against
//! the schema; any error rejects the whole set, naming the file.
//!
//! A decision is a value: [`PolicyEngine::authorize`] returns an
//! [`Authorized<A>`] for action `A`, which only this module can construct
//! and which the core operation for `A` takes as an argument, so an
//! operation cannot be called without the policy check having allowed it.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::identity::Principal;

/// Why a policy set was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read policy file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file does not parse.
    #[error("policy file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cedar's message, with line and column.
        reason: String,
    },
    /// The set does not validate against the schema.
    #[error("policies in {dir} do not validate against the schema: {reason}")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// Every validation error.
        reason: String,
    },
}

/// An action a principal may be allowed to take. Each gRPC method has one.
pub trait Action {
    /// The Cedar action id, e.g. `admin.GetStatus`.
    const NAME: &'static str;
}

macro_rules! actions {
    ($($(#[$doc:meta])* $ty:ident => $name:literal),* $(,)?) => {
        $( $(#[$doc])* #[derive(Debug)] pub struct $ty; impl Action for $ty { const NAME: &'static str = $name; } )*
        /// Every action the schema must declare.
        pub const ALL_ACTIONS: &[&str] = &[$($name),*];
    };
}

actions! {
    /// `AdminService.WhoAmI`.
    WhoAmI => "admin.WhoAmI",
    /// `AdminService.GetStatus`.
    GetStatus => "admin.GetStatus",
    /// `AdminService.GetCapabilities`.
    GetCapabilities => "admin.GetCapabilities",
    /// `AdminService.ReloadPolicies`.
    ReloadPolicies => "admin.ReloadPolicies",
    /// `AdminService.CreateProductionPlan` and `RevokeProductionPlan`.
    ManageProductionPlans => "admin.ManageProductionPlans",
    /// `AdminService.GetProductionPlan` and `ListProductionPlans` (a
    /// partner sees its own tenant's plans only).
    ReadProductionPlans => "admin.ReadProductionPlans",
    /// `AdminService.QueryAudit`, `VerifyAudit` and `ExportAudit`.
    ReadAudit => "admin.ReadAudit",
    /// `KeyService.CreateKey`.
    CreateKey => "keys.CreateKey",
    /// `KeyService.ImportKey` from a wrapped delivery.
    ImportKey => "keys.ImportKey",
    /// `KeyService.ImportKey` adopting an existing token object.
    AdoptKey => "keys.AdoptKey",
    /// `KeyService.GetKey`.
    GetKey => "keys.GetKey",
    /// `KeyService.ListKeys`.
    ListKeys => "keys.ListKeys",
    /// `KeyService.RotateKey`.
    RotateKey => "keys.RotateKey",
    /// `KeyService.SetKeyState`.
    SetKeyState => "keys.SetKeyState",
    /// `KeyService.DestroyKey`.
    DestroyKey => "keys.DestroyKey",
    /// `KeyService.ListCardProfiles`.
    ListCardProfiles => "keys.ListCardProfiles",
    /// `KeyService.DeriveCardKeys` and `DeriveCardKeysBatch`.
    DeriveCardKeys => "keys.DeriveCardKeys",
    /// `CertificateService.CreateIssuer`.
    CreateIssuer => "certs.CreateIssuer",
    /// `CertificateService.ActivateIssuer`.
    ActivateIssuer => "certs.ActivateIssuer",
    /// `CertificateService.RetireIssuer`.
    RetireIssuer => "certs.RetireIssuer",
    /// `CertificateService.ListIssuers`.
    ListIssuers => "certs.ListIssuers",
    /// `CertificateService.ListCertificateProfiles`.
    ListCertificateProfiles => "certs.ListCertificateProfiles",
    /// `CertificateService.CreateEnrollmentToken`, once per profile the token names.
    CreateEnrollmentToken => "certs.CreateEnrollmentToken",
    /// `CertificateService.EnrollReader`, by the principal an enrollment
    /// token or external certificate stands for.
    EnrollReader => "certs.EnrollReader",
    /// `CertificateService.RenewCertificate` of the caller's own certificate.
    RenewCertificate => "certs.RenewCertificate",
    /// `CertificateService.IssueServerCertificate`.
    IssueCertificate => "certs.IssueCertificate",
    /// `CertificateService.RevokeCertificate`.
    RevokeCertificate => "certs.RevokeCertificate",
    /// `CertificateService.GetCertificate` and `ListCertificates`.
    ReadCertificates => "certs.ReadCertificates",
    /// `CertificateService.GetCaChain` and `GetCrl`: public material.
    GetCaMaterial => "certs.GetCaMaterial",
}

/// What an action is taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A whole gRPC service, e.g. `AdminService`.
    Service(&'static str),
    /// A catalogue key, by name (all versions).
    Key(String),
    /// A card profile, by name.
    CardProfile(String),
    /// An issuing CA, by name.
    Issuer(String),
    /// A certificate profile, by name.
    CertProfile(String),
}

impl Resource {
    fn uid(&self) -> Result<EntityUid, String> {
        match self {
            Resource::Service(name) => uid("Kms::Service", name),
            Resource::Key(name) => uid("Kms::Key", name),
            Resource::CardProfile(name) => uid("Kms::CardProfile", name),
            Resource::Issuer(name) => uid("Kms::Issuer", name),
            Resource::CertProfile(name) => uid("Kms::CertificateProfile", name),
        }
    }

    fn entity(&self) -> Result<Entity, String> {
        let uid = self.uid()?;
        match self {
            Resource::Service(_) => Ok(Entity::new_no_attrs(uid, HashSet::new())),
            Resource::Key(name)
            | Resource::CardProfile(name)
            | Resource::Issuer(name)
            | Resource::CertProfile(name) => {
                let attrs = HashMap::from([("name".to_owned(), RestrictedExpression::new_string(name.clone()))]);
                Entity::new(uid, attrs, HashSet::new()).map_err(|e| e.to_string())
            }
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Service(name) => write!(f, "Kms::Service::{name:?}"),
            Resource::Key(name) => write!(f, "Kms::Key::{name:?}"),
            Resource::CardProfile(name) => write!(f, "Kms::CardProfile::{name:?}"),
            Resource::Issuer(name) => write!(f, "Kms::Issuer::{name:?}"),
            Resource::CertProfile(name) => write!(f, "Kms::CertificateProfile::{name:?}"),
        }
    }
}

/// Proof that the policy engine allowed `principal` to take action `A`.
#[derive(Debug)]
pub struct Authorized<A: Action> {
    principal: Principal,
    policies: Vec<String>,
    _action: PhantomData<A>,
}

impl<A: Action> Authorized<A> {
    /// Who was allowed.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// The ids of the policies that allowed it.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The action refused.
    pub action: &'static str,
    /// Why: no permitting policy, a forbid policy by id, or an evaluation
    /// error (which also denies: fail closed).
    pub reason: String,
}

struct Loaded {
    schema: Schema,
    policies: PolicySet,
    policy_count: usize,
    digest: String,
}

/// The policy engine. Reloadable: a new set replaces the old only if it
/// loads and validates whole.
pub struct PolicyEngine {
    dir: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    authorizer: Authorizer,
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn load_dir(dir: &Path) -> Result<Loaded, PolicyError> {
    let schema_path = dir.join("schema.cedarschema");
    let schema_text = std::fs::read_to_string(&schema_path)
        .map_err(|e| PolicyError::Read { path: schema_path.clone(), reason: e.to_string() })?;
    let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text)
        .map_err(|e| PolicyError::Parse { path: schema_path.clone(), reason: diagnostic(&e, &schema_text) })?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PolicyError::Read { path: dir.to_owned(), reason: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::Read { path: dir.to_owned(), reason: "no *.cedar policy files".into() });
    }
    let mut policies = PolicySet::new();
    let mut count = 0;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, b"schema.cedarschema\0");
    sha2::Digest::update(&mut hasher, schema_text.as_bytes());
    for path in &files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { path: path.clone(), reason: e.to_string() })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        sha2::Digest::update(&mut hasher, format!("\0{name}\0").as_bytes());
        sha2::Digest::update(&mut hasher, text.as_bytes());
        let parsed = PolicySet::from_str(&text)
            .map_err(|e| PolicyError::Parse { path: path.clone(), reason: diagnostic(&e, &text) })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for (i, policy) in parsed.policies().enumerate() {
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{stem}#{i}"),
            };
            policies
                .add(policy.new_id(PolicyId::new(&id)))
                .map_err(|e| PolicyError::Parse { path: path.clone(), reason: format!("policy {id}: {e}") })?;
            count += 1;
        }
    }
    let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    if !result.validation_passed() {
        let errors: Vec<String> = result.validation_errors().map(|e| format!("{}: {e}", e.policy_id())).collect();
        return Err(PolicyError::Invalid { dir: dir.to_owned(), reason: errors.join("; ") });
    }
    for action in ALL_ACTIONS {
        let declared = uid("Kms::Action", action).ok().is_some_and(|u| schema.actions().any(|a| *a == u));
        if !declared {
            return Err(PolicyError::Invalid {
                dir: dir.to_owned(),
                reason: format!("schema does not declare action {action:?}"),
            });
        }
    }
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    Ok(Loaded { schema, policies, policy_count: count, digest })
}

/// Formats a Cedar diagnostic with line:column of its first label.
fn diagnostic<E: miette::Diagnostic + std::fmt::Display>(e: &E, text: &str) -> String {
    let position = e.labels().and_then(|mut l| l.next()).map(|label| {
        let offset = label.offset().min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        format!("line {line}, column {column}: ")
    });
    let help = e.help().map(|h| format!(" ({h})")).unwrap_or_default();
    format!("{}{e}{help}", position.unwrap_or_default())
}

impl PolicyEngine {
    /// Loads and validates the policies in `dir`.
    pub fn load(dir: &Path) -> Result<PolicyEngine, PolicyError> {
        let loaded = load_dir(dir)?;
        Ok(PolicyEngine { dir: dir.to_owned(), loaded: RwLock::new(Arc::new(loaded)), authorizer: Authorizer::new() })
    }

    /// Reads and validates the directory again without putting the set in
    /// force: [`PolicyEngine::install`] does, once the reload is recorded.
    pub fn load_candidate(&self) -> Result<Candidate, PolicyError> {
        Ok(Candidate(load_dir(&self.dir)?))
    }

    /// Puts a validated set in force.
    pub fn install(&self, candidate: Candidate) {
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(candidate.0);
    }

    /// Reloads from disk; on any error the old set stays in force.
    /// Returns the number of policies and the set's digest.
    pub fn reload(&self) -> Result<(usize, String), PolicyError> {
        let candidate = self.load_candidate()?;
        let n = (candidate.policy_count(), candidate.digest().to_owned());
        self.install(candidate);
        Ok(n)
    }

    /// SHA-256 (hex) of the schema and policy files in force, in name order.
    pub fn digest(&self) -> String {
        self.current().digest.clone()
    }

    /// Number of policies in force.
    pub fn policy_count(&self) -> usize {
        self.current().policy_count
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks whether `principal` may take action `A` on `resource`, with
    /// the request context every action has (the time).
    pub fn authorize<A: Action>(&self, principal: &Principal, resource: &Resource) -> Result<Authorized<A>, Denied> {
        self.authorize_in::<A>(principal, resource, &[])
    }

    /// As [`PolicyEngine::authorize`], with `extra` context attributes
    /// (those of the action's context type beyond the time).
    pub fn authorize_in<A: Action>(
        &self,
        principal: &Principal,
        resource: &Resource,
        extra: &[(&str, ContextValue)],
    ) -> Result<Authorized<A>, Denied> {
        let deny = |reason: String| Denied { action: A::NAME, reason };
        let d = self.decide(principal, A::NAME, resource, extra).map_err(deny)?;
        if d.allowed {
            return Ok(Authorized { principal: principal.clone(), policies: d.policies, _action: PhantomData });
        }
        if !d.policies.is_empty() {
            return Err(deny(format!("forbidden by policy {}", d.policies.join(", "))));
        }
        if !d.errors.is_empty() {
            return Err(deny(format!("policy evaluation error: {}", d.errors.join("; "))));
        }
        Err(deny(format!("no policy permits role {:?}", principal.role)))
    }

    /// The decision on `action` (a name from [`ALL_ACTIONS`]) for
    /// `principal` on `resource`, with the policies that determined it:
    /// what `kms policy check` prints. The context holds `now` and
    /// `hour_utc` (from the clock unless `extra` gives them) and `extra`.
    pub fn decide(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        extra: &[(&str, ContextValue)],
    ) -> Result<Decided, String> {
        if !ALL_ACTIONS.contains(&action) {
            return Err(format!("unknown action {action:?}; actions are {}", ALL_ACTIONS.join(", ")));
        }
        let loaded = self.current();
        let principal_uid = uid("Kms::Principal", &principal.name)?;
        let action_uid = uid("Kms::Action", action)?;
        let resource_uid = resource.uid()?;
        let attrs = HashMap::from([
            ("role".to_owned(), RestrictedExpression::new_string(principal.role.clone())),
            ("tenant".to_owned(), RestrictedExpression::new_string(principal.tenant.clone())),
        ]);
        let principal_entity = Entity::new(principal_uid.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;
        let resource_entity = resource.entity()?;
        let entities = Entities::from_entities([principal_entity, resource_entity], Some(&loaded.schema))
            .map_err(|e| format!("entities: {e}"))?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut pairs: Vec<(String, RestrictedExpression)> = Vec::new();
        if !extra.iter().any(|(k, _)| *k == "now") {
            pairs.push(("now".into(), RestrictedExpression::new_long(now)));
        }
        if !extra.iter().any(|(k, _)| *k == "hour_utc") {
            pairs.push(("hour_utc".into(), RestrictedExpression::new_long(now.rem_euclid(86_400) / 3600)));
        }
        for (k, v) in extra {
            pairs.push(((*k).to_owned(), v.expression()));
        }
        let context = Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal_uid, action_uid, resource_uid, context, Some(&loaded.schema))
            .map_err(|e| format!("request: {e}"))?;
        let response = self.authorizer.is_authorized(&request, &loaded.policies, &entities);
        Ok(Decided {
            allowed: response.decision() == Decision::Allow,
            policies: response.diagnostics().reason().map(|p| p.to_string()).collect(),
            errors: response.diagnostics().errors().map(|e| e.to_string()).collect(),
        })
    }
}

/// A value of a request-context attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    /// A Cedar `Long`.
    Long(i64),
    /// A Cedar `Bool`.
    Bool(bool),
    /// A Cedar `String`.
    Str(String),
}

impl ContextValue {
    fn expression(&self) -> RestrictedExpression {
        match self {
            ContextValue::Long(n) => RestrictedExpression::new_long(*n),
            ContextValue::Bool(b) => RestrictedExpression::new_bool(*b),
            ContextValue::Str(s) => RestrictedExpression::new_string(s.clone()),
        }
    }

    /// Parses a command-line value: `"..."` a string, an integer,
    /// `true`/`false`, else a string.
    pub fn parse(s: &str) -> ContextValue {
        if let Some(inner) = s.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return ContextValue::Str(inner.to_owned());
        }
        match s {
            "true" => ContextValue::Bool(true),
            "false" => ContextValue::Bool(false),
            _ => s.parse().map(ContextValue::Long).unwrap_or_else(|_| ContextValue::Str(s.to_owned())),
        }
    }
}

/// A policy set that loaded and validated, not yet in force.
pub struct Candidate(Loaded);

impl Candidate {
    /// Number of policies.
    pub fn policy_count(&self) -> usize {
        self.0.policy_count
    }

    /// SHA-256 (hex) of the schema and policy files.
    pub fn digest(&self) -> &str {
        &self.0.digest
    }
}

/// A decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decided {
    /// Allowed.
    pub allowed: bool,
    /// The policies that determined it (permits when allowed, forbids when
    /// denied by one; none when no policy applied).
    pub policies: Vec<String>,
    /// Evaluation errors (which deny: fail closed).
    pub errors: Vec<String>,
}

impl Resource {
    /// Parses `kind:name` as `kms policy check` takes it: `service:`,
    /// `key:`, `card-profile:`, `issuer:`, `cert-profile:`.
    pub fn parse(s: &str) -> Result<Resource, String> {
        let (kind, name) =
            s.split_once(':').ok_or_else(|| format!("{s:?}: expected KIND:NAME, e.g. key:city/3301/mohurd/dpk"))?;
        if name.is_empty() {
            return Err(format!("{s:?}: the name is empty"));
        }
        Ok(match kind {
            "service" => match name {
                "AdminService" => Resource::Service("AdminService"),
                "KeyService" => Resource::Service("KeyService"),
                "CertificateService" => Resource::Service("CertificateService"),
                other => return Err(format!("no service {other:?}")),
            },
            "key" => Resource::Key(name.to_owned()),
            "card-profile" => Resource::CardProfile(name.to_owned()),
            "issuer" => Resource::Issuer(name.to_owned()),
            "cert-profile" => Resource::CertProfile(name.to_owned()),
            other => {
                return Err(format!(
                    "resource kind {other:?} is not one of service, key, card-profile, issuer, cert-profile"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PolicyEngine {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        match PolicyEngine::load(&dir) {
            Ok(e) => e,
            Err(e) => unreachable!("shipped policies must load: {e}"),
        }
    }

    fn who(role: &str) -> Principal {
        Principal {
            name: format!("{role}-1"),
            role: role.into(),
            tenant: "3301".into(),
            certificate_serial: "01".into(),
        }
    }

    fn allowed<A: Action>(e: &PolicyEngine, role: &str, r: Resource) -> bool {
        e.authorize::<A>(&who(role), &r).is_ok()
    }

    #[test]
    fn shipped_certificate_policies_decide_as_documented() {
        let e = shipped();
        let profile = |n: &str| Resource::CertProfile(n.into());
        let issuer = || Resource::Issuer("city-3301".into());
        assert!(allowed::<CreateIssuer>(&e, "security_officer", issuer()));
        assert!(!allowed::<CreateIssuer>(&e, "operator", issuer()));
        assert!(allowed::<CreateEnrollmentToken>(&e, "operator", profile("reader-sign")));
        assert!(!allowed::<CreateEnrollmentToken>(&e, "operator", profile("client-tls")));
        assert!(!allowed::<CreateEnrollmentToken>(&e, "issuance_partner", profile("reader-sign")));
        assert!(allowed::<EnrollReader>(&e, "enrollee", profile("reader-encrypt")));
        assert!(!allowed::<EnrollReader>(&e, "enrollee", profile("server-tls")));
        assert!(!allowed::<EnrollReader>(&e, "operator", profile("reader-sign")));
        assert!(allowed::<IssueCertificate>(&e, "operator", profile("client-tls")));
        assert!(!allowed::<IssueCertificate>(&e, "operator", profile("sub-ca")));
        assert!(allowed::<IssueCertificate>(&e, "security_officer", profile("sub-ca")));
        assert!(!allowed::<IssueCertificate>(&e, "enrollee", profile("server-tls")));
        assert!(allowed::<RevokeCertificate>(&e, "operator", issuer()));
        assert!(!allowed::<RevokeCertificate>(&e, "auditor", issuer()));
        assert!(allowed::<ReadCertificates>(&e, "auditor", issuer()));
        assert!(!allowed::<ReadCertificates>(&e, "reader", issuer()));
        assert!(allowed::<GetCaMaterial>(&e, "reader", issuer()));
        assert!(allowed::<RenewCertificate>(&e, "reader", profile("reader-sign")));
    }
}
