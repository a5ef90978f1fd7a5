//! `kms plans ...` (partners' production plans) and `kms policy ...`
//! (check a decision offline, reload the server's set).

use std::path::PathBuf;

use clap::Args;
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use serde_json::{Value, json};

use super::certs::{parse_instant, rfc3339};
use super::{ClientError, ClientOptions, call_error, table};
use crate::authz::{ContextValue, PolicyEngine, Resource};
use crate::identity::Principal;

/// `kms plans create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The partner: the tenant of its client certificates.
    #[arg(long)]
    pub tenant: String,
    /// Card profile, e.g. mohurd-epurse.
    #[arg(long)]
    pub card_profile: String,
    /// Card identifier range FIRST-LAST (the ASN for PBOC/MOT profiles,
    /// else KDD, PAN or UID), inclusive, both ends the same length;
    /// repeat for several ranges.
    #[arg(long = "range", value_name = "FIRST-LAST", required = true, value_parser = parse_range)]
    pub ranges: Vec<(String, String)>,
    /// Cards the plan allows.
    #[arg(long)]
    pub count: u64,
    /// Start: YYYY-MM-DD or RFC 3339 (default: now).
    #[arg(long, value_parser = parse_instant)]
    pub valid_from: Option<i64>,
    /// End (exclusive): YYYY-MM-DD or RFC 3339.
    #[arg(long, value_parser = parse_instant)]
    pub valid_until: i64,
    /// Free text: order number, contract.
    #[arg(long, default_value = "")]
    pub note: String,
}

fn parse_context(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    Ok((k.trim().to_owned(), v.to_owned()))
}

fn parse_range(s: &str) -> Result<(String, String), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    Ok((a.trim().to_owned(), b.trim().to_owned()))
}

/// `kms plans list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this tenant's plans.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this card profile's.
    #[arg(long)]
    pub card_profile: Option<String>,
    /// Only plans in this state: active, not_yet_valid, expired, exhausted, revoked.
    #[arg(long)]
    pub state: Option<String>,
}

/// What `kms plans` does.
#[derive(Debug, Clone)]
pub enum PlansCall {
    /// Create.
    Create(CreateArgs),
    /// Show one.
    Get(String),
    /// List.
    List(ListArgs),
    /// Revoke with a reason.
    Revoke(String, String),
}

fn plan_json(p: &pb::ProductionPlan) -> Value {
    json!({
        "id": p.id, "tenant": p.tenant, "profile": p.profile,
        "ranges": p.ranges.iter().map(|r| format!("{}-{}", r.first_asn, r.last_asn)).collect::<Vec<_>>(),
        "count": p.count, "used": p.used, "remaining": p.count.saturating_sub(p.used), "state": p.state,
        "valid_from": rfc3339(p.valid_from), "valid_until": rfc3339(p.valid_until),
        "created_by": p.created_by, "created_at": rfc3339(p.created_at), "note": p.note,
        "revocation_reason": p.revocation_reason,
    })
}

fn show(plans: &[pb::ProductionPlan], json: bool) -> String {
    if json {
        return plans.iter().map(|p| format!("{}\n", plan_json(p))).collect();
    }
    let mut rows =
        vec![["ID", "TENANT", "PROFILE", "STATE", "USED", "COUNT", "VALID UNTIL", "RANGES"].map(String::from).to_vec()];
    for p in plans {
        rows.push(vec![
            p.id.clone(),
            p.tenant.clone(),
            p.profile.clone(),
            p.state.clone(),
            p.used.to_string(),
            p.count.to_string(),
            rfc3339(p.valid_until),
            p.ranges.iter().map(|r| format!("{}-{}", r.first_asn, r.last_asn)).collect::<Vec<_>>().join(" "),
        ]);
    }
    table(&rows)
}

/// Runs `kms plans ...`.
pub async fn run(opts: &ClientOptions, json: bool, call: PlansCall) -> Result<String, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    match call {
        PlansCall::Create(a) => {
            let plan = client
                .create_production_plan(pb::CreateProductionPlanRequest {
                    tenant: a.tenant,
                    profile: a.card_profile,
                    ranges: a.ranges.into_iter().map(|(f, l)| pb::CardRange { first_asn: f, last_asn: l }).collect(),
                    count: a.count,
                    valid_from: a.valid_from.unwrap_or(0),
                    valid_until: a.valid_until,
                    note: a.note,
                })
                .await
                .map_err(|e| call_error("CreateProductionPlan", e))?
                .into_inner();
            Ok(show(&[plan], json))
        }
        PlansCall::Get(id) => {
            let plan = client
                .get_production_plan(pb::GetProductionPlanRequest { id })
                .await
                .map_err(|e| call_error("GetProductionPlan", e))?
                .into_inner();
            Ok(show(&[plan], json))
        }
        PlansCall::List(a) => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_production_plans(pb::ListProductionPlansRequest {
                        tenant: a.tenant.clone().unwrap_or_default(),
                        profile: a.card_profile.clone().unwrap_or_default(),
                        state: a.state.clone().unwrap_or_default(),
                        page_size: 500,
                        page_token: token,
                    })
                    .await
                    .map_err(|e| call_error("ListProductionPlans", e))?
                    .into_inner();
                all.extend(page.plans);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            Ok(show(&all, json))
        }
        PlansCall::Revoke(id, reason) => {
            let plan = client
                .revoke_production_plan(pb::RevokeProductionPlanRequest { id, reason })
                .await
                .map_err(|e| call_error("RevokeProductionPlan", e))?
                .into_inner();
            Ok(show(&[plan], json))
        }
    }
}

/// `kms policy check`: a decision from a policy directory, offline.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Policy directory (schema.cedarschema and *.cedar).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))]
    pub policy_dir: PathBuf,
    /// The principal's name (certificate common name).
    #[arg(long, default_value = "someone")]
    pub principal: String,
    /// The principal's role, e.g. issuance_partner.
    #[arg(long)]
    pub role: String,
    /// The principal's tenant.
    #[arg(long)]
    pub tenant: String,
    /// The action, e.g. keys.DeriveCardKeys.
    #[arg(long)]
    pub action: String,
    /// The resource as KIND:NAME: service:AdminService, key:NAME,
    /// card-profile:NAME, issuer:NAME, cert-profile:NAME.
    #[arg(long)]
    pub resource: String,
    /// A request-context attribute NAME=VALUE (an integer, true/false, a
    /// "quoted" string, else a string); repeat. `now` and `hour_utc`
    /// default to the clock; a derivation also has `batch` and
    /// `transport_key`.
    #[arg(long = "context", value_name = "NAME=VALUE", value_parser = parse_context)]
    pub context: Vec<(String, String)>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kms policy check`; the second value is whether it was allowed.
pub fn check(a: &CheckArgs) -> Result<(String, bool), ClientError> {
    let engine = PolicyEngine::load(&a.policy_dir).map_err(|e| ClientError::Usage(e.to_string()))?;
    let resource = Resource::parse(&a.resource).map_err(ClientError::Usage)?;
    let principal = Principal {
        name: a.principal.clone(),
        role: a.role.clone(),
        tenant: a.tenant.clone(),
        certificate_serial: String::new(),
    };
    let context: Vec<(&str, ContextValue)> =
        a.context.iter().map(|(k, v)| (k.as_str(), ContextValue::parse(v))).collect();
    let d = engine.decide(&principal, &a.action, &resource, &context).map_err(ClientError::Usage)?;
    let out = if a.json {
        format!(
            "{}\n",
            json!({ "allowed": d.allowed, "policies": d.policies, "errors": d.errors, "digest": engine.digest() })
        )
    } else {
        let verdict = if d.allowed { "ALLOW" } else { "DENY" };
        let why = match (d.allowed, d.policies.is_empty(), d.errors.is_empty()) {
            (true, _, _) => format!("permitted by {}", d.policies.join(", ")),
            (false, false, _) => format!("forbidden by {}", d.policies.join(", ")),
            (false, true, false) => format!("evaluation errors (deny): {}", d.errors.join("; ")),
            (false, true, true) => "no policy permits it (default deny)".into(),
        };
        format!(
            "{verdict}: {} (role {}, tenant {}) {} on {}: {why}\n",
            a.principal, a.role, a.tenant, a.action, a.resource
        )
    };
    Ok((out, d.allowed))
}

/// `kms policy reload`: asks the server to reload its policies.
pub async fn reload(opts: &ClientOptions, json: bool) -> Result<String, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    let r = client
        .reload_policies(pb::ReloadPoliciesRequest {})
        .await
        .map_err(|e| call_error("ReloadPolicies", e))?
        .into_inner();
    Ok(if json {
        format!("{}\n", json!({ "policies": r.policies, "digest": r.digest }))
    } else {
        format!("policies reloaded: {} policies, digest {}\n", r.policies, r.digest)
    })
}
