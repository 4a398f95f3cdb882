//! Provisioning the gateway's actions into Genesys Cloud (SPEC §3.6): `genesys-gateway actions
//! publish [--dry-run]` and `POST /admin/v1/actions/publish[?dryRun=true]`.
//!
//! Publishing makes Genesys call the gateway, idempotently:
//! 1. one `custom-rest-actions` integration named [`INTEGRATION_NAME`], found by name or created,
//!    and enabled;
//! 2. its `basicAuth` credential, from `[data_actions.auth]` (basic). Genesys never shows a
//!    credential's password back, so the credential's **name** carries a fingerprint of the user
//!    and password (a truncated HMAC keyed with the password): the credential is replaced only
//!    when the fingerprint differs. With `[data_actions.auth] type = "none"` no credential is
//!    set; a `header` credential cannot be expressed as a Genesys Basic credential and is
//!    refused;
//! 3. one Genesys data action per gateway action, named like it, category [`CATEGORY`]: `POST
//!    <public_url>/v1/actions/<name>` with `requestTemplate ${input.rawRequest}`, `timeoutSeconds`
//!    = `timeout_ms` / 1000 rounded up, an empty `translationMap`, `successTemplate
//!    ${rawResult}`, and the input/output schemas (or `{"type": "object"}`) as contract. An
//!    action is `created`, `updated` (its configuration patched; a changed contract, which
//!    Genesys does not let a published action change, means deleting and recreating it — with a
//!    new id) or `unchanged` (nothing written);
//! 4. each action with an `example_input` is tested with `POST
//!    /api/v2/integrations/actions/{id}/test`, under a circuit breaker: after
//!    [`TEST_FAILURE_THRESHOLD`] failed tests in a row the remaining ones are not run (Genesys
//!    evidently cannot reach the gateway).
//!
//! A dry run reads only: it reports what would change (`genesysActionId` null for actions not
//! created yet), writes nothing and runs no tests. Actions in the integration that the gateway
//! no longer has are left alone (and logged). Every created or updated action is audited
//! (`action.published`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;

use super::action::DataAction;
use crate::config::{
    CircuitBreakerSettings, DataActionsSettings, InboundAuthSettings, Problem, Settings,
};
use crate::error::{ApiError, ErrorDetail};
use crate::genesys::models::{
    Action, ActionConfig, ActionContract, ActionRequestConfig, ActionResponseConfig, ContractInput,
    ContractOutput, CreateIntegrationRequest, Credential, CredentialRef, CredentialType, EntityRef,
    Integration, IntegrationPatch, Page, PostActionInput, UpdateActionInput,
};
use crate::genesys::{GenesysClient, GenesysError};
use crate::store::{AuditRecord, Store};
use crate::telemetry::Metrics;
use crate::upstream::{CircuitBreaker, GenesysEndpoints, Upstreams};

/// Name of the integration the actions live in.
pub const INTEGRATION_NAME: &str = "genesys-gateway";
/// Category of the published actions.
pub const CATEGORY: &str = "genesys-gateway";
/// Integration type of a Web Services Data Actions integration.
const INTEGRATION_TYPE: &str = "custom-rest-actions";
/// The credential role of a `custom-rest-actions` integration.
const CREDENTIAL_ROLE: &str = "basicAuth";
/// Consecutive failed tests after which the remaining tests are not run.
pub const TEST_FAILURE_THRESHOLD: u32 = 3;
/// Entities per listing page.
const PAGE_SIZE: u32 = 100;

/// Whether a publication writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Create, update and test.
    Apply,
    /// Report what would change; write nothing, test nothing.
    DryRun,
}

/// What changed for one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The Genesys action was (or would be) created.
    Created,
    /// The Genesys action was (or would be) updated.
    Updated,
    /// The Genesys action already matches.
    Unchanged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// The test of one published action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionTest {
    /// Whether Genesys ran the action successfully.
    pub success: bool,
    /// How long the test took, as seen by the gateway.
    pub latency_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// The outcome for one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedAction {
    /// The gateway action's (and Genesys action's) name.
    pub name: String,
    /// The Genesys action id (`null` in a dry run for an action not created yet).
    pub genesys_action_id: Option<String>,
    /// What changed.
    pub change: Change,
    /// The test, when the action has an `example_input` and this was not a dry run.
    pub test: Option<ActionTest>,
}

/// The answer of a publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishReport {
    /// One entry per gateway action, in configuration order.
    pub actions: Vec<PublishedAction>,
}

/// Why a publication could not run.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The configuration lacks what publishing needs.
    #[error("the configuration cannot be published: {}", .0.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
    Config(Vec<Problem>),
    /// Genesys refused a call or could not be reached.
    #[error("Genesys call failed: {0}")]
    Genesys(#[from] GenesysError),
}

impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::Config(problems) => ApiError::invalid_input(
                "The configuration lacks what publishing needs.",
                problems
                    .into_iter()
                    .map(|p| ErrorDetail::new(p.path, "invalid", p.message))
                    .collect(),
            ),
            PublishError::Genesys(err) => err.into(),
        }
    }
}

/// One publication's inputs.
pub struct Publication<'a> {
    /// The Genesys client (on the built-in `genesys` upstream).
    pub client: &'a GenesysClient,
    /// `[data_actions]`: `public_url` and the credential Genesys must present.
    pub settings: &'a DataActionsSettings,
    /// The actions to publish, in order.
    pub actions: Vec<&'a DataAction>,
    /// Apply or dry run.
    pub mode: PublishMode,
    /// Where `action.published` records go, and who published (`admin`, `cli`).
    pub audit: Option<(&'a Store, &'a str)>,
}

/// Publishes the actions (see the module docs).
///
/// # Errors
/// [`PublishError::Config`] when `public_url` is missing or the inbound credential is a header;
/// [`PublishError::Genesys`] when a Genesys call fails (what was done before stays done: a
/// second run picks up from there).
pub async fn publish(p: Publication<'_>) -> Result<PublishReport, PublishError> {
    let public_url = check_settings(p.settings)?;
    let client = p.client;
    let apply = p.mode == PublishMode::Apply;

    let integration = match find_integration(client).await? {
        Some(i) => Some(i),
        None if apply => Some(create_integration(client).await?),
        None => None,
    };
    if apply && let Some(integration) = &integration {
        if integration.intended_state.as_deref() != Some("ENABLED") {
            client
                .patch_integration(
                    &integration.id,
                    &IntegrationPatch {
                        intended_state: Some("ENABLED".to_owned()),
                        ..IntegrationPatch::default()
                    },
                )
                .await?;
        }
        ensure_credential(client, &integration.id, &p.settings.auth).await?;
    }

    let existing = match &integration {
        Some(i) => existing_actions(client, &i.id).await?,
        None => HashMap::new(),
    };
    let mut report = PublishReport {
        actions: Vec::with_capacity(p.actions.len()),
    };
    for action in &p.actions {
        let name = action.name().as_str();
        let desired_config = desired_config(action, &public_url);
        let desired_contract = desired_contract(action);
        let (id, change) = match (existing.get(name), &integration) {
            (None, Some(integration)) if apply => {
                let created = client
                    .create_action(&post_input(
                        action,
                        &integration.id,
                        desired_config,
                        desired_contract,
                    ))
                    .await?;
                (Some(created.id), Change::Created)
            }
            (None, _) => (None, Change::Created),
            (Some(summary), _) => {
                let current = client.get_action(&summary.id).await?;
                let contract_same = current.contract.as_ref() == Some(&desired_contract);
                let config_same = current.config.as_ref() == Some(&desired_config)
                    && current.category.as_deref() == Some(CATEGORY);
                match (contract_same, config_same, &integration) {
                    (true, true, _) => (Some(current.id), Change::Unchanged),
                    (_, _, _) if !apply => (Some(current.id), Change::Updated),
                    (true, false, _) => {
                        let updated = client
                            .patch_action(
                                &current.id,
                                &UpdateActionInput {
                                    category: Some(CATEGORY.to_owned()),
                                    name: Some(name.to_owned()),
                                    config: Some(desired_config),
                                    version: current.version.unwrap_or(1),
                                },
                            )
                            .await?;
                        (Some(updated.id), Change::Updated)
                    }
                    (false, _, Some(integration)) => {
                        client.delete_action(&current.id).await?;
                        let created = client
                            .create_action(&post_input(
                                action,
                                &integration.id,
                                desired_config,
                                desired_contract,
                            ))
                            .await?;
                        (Some(created.id), Change::Updated)
                    }
                    (false, _, None) => (Some(current.id), Change::Updated),
                }
            }
        };
        if apply
            && change != Change::Unchanged
            && let Some((store, actor)) = p.audit
        {
            let record = AuditRecord::now("action.published", actor, change.as_str())
                .with_subject(name)
                .with_detail(json!({
                    "genesysActionId": id,
                    "integrationId": integration.as_ref().map(|i| &i.id),
                }));
            let record = match crate::telemetry::RequestId::current() {
                Some(rid) => record.with_request_id(&*rid),
                None => record,
            };
            if let Err(err) = store.append_audit(&record).await {
                tracing::error!(error = %err, action = name, "cannot audit a published action");
            }
        }
        report.actions.push(PublishedAction {
            name: name.to_owned(),
            genesys_action_id: id,
            change,
            test: None,
        });
    }
    for name in existing.keys() {
        if !p.actions.iter().any(|a| a.name().as_str() == name) {
            tracing::info!(
                action = %name,
                "a Genesys action of the integration is not a gateway action; left alone"
            );
        }
    }

    if apply {
        run_tests(client, &p.actions, &mut report).await;
    }
    Ok(report)
}

/// Publishes the `[[actions]]` of `settings` through a `genesys` upstream built from them (what
/// the `actions publish` command does; the running gateway publishes its live set instead).
///
/// # Errors
/// [`PublishError::Config`] for every problem of the actions or upstreams, as [`publish`]
/// otherwise.
pub async fn publish_settings(
    settings: &Settings,
    mode: PublishMode,
    audit: Option<(&Store, &str)>,
) -> Result<PublishReport, PublishError> {
    let actions = super::registry::compile_actions(settings).map_err(PublishError::Config)?;
    let upstreams = Upstreams::build(
        settings,
        &GenesysEndpoints::from_settings(&settings.genesys),
        Arc::new(Metrics::new()),
    )
    .map_err(PublishError::Config)?;
    let Some(client) = GenesysClient::from_upstreams(&upstreams) else {
        return Err(PublishError::Config(vec![Problem::new(
            "genesys",
            "no Genesys upstream could be built",
        )]));
    };
    publish(Publication {
        client: &client,
        settings: &settings.data_actions,
        actions: actions.iter().collect(),
        mode,
        audit,
    })
    .await
}

/// The public URL without a trailing slash, after checking what publishing needs.
fn check_settings(settings: &DataActionsSettings) -> Result<String, PublishError> {
    let mut problems = Vec::new();
    let url = settings
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty());
    if url.is_none() {
        problems.push(Problem::new(
            "data_actions.public_url",
            "is required to publish: it is the address Genesys calls",
        ));
    }
    if matches!(settings.auth, InboundAuthSettings::Header { .. }) {
        problems.push(Problem::new(
            "data_actions.auth",
            "a header credential cannot be published as a Genesys basicAuth credential; use type = \"basic\"",
        ));
    }
    match url {
        Some(url) if problems.is_empty() => Ok(url),
        _ => Err(PublishError::Config(problems)),
    }
}

async fn find_integration(client: &GenesysClient) -> Result<Option<Integration>, GenesysError> {
    let mut number = 1;
    loop {
        let page = client
            .list_integrations(Page {
                number,
                size: PAGE_SIZE,
            })
            .await?;
        let found = page.entities.iter().find(|i| {
            i.name.as_deref() == Some(INTEGRATION_NAME)
                && i.integration_type.as_ref().map(|t| t.id.as_str()) == Some(INTEGRATION_TYPE)
                && i.intended_state.as_deref() != Some("DELETED")
        });
        if let Some(found) = found {
            return Ok(Some(found.clone()));
        }
        let last = page.entities.len() < PAGE_SIZE as usize
            || page.page_count.is_some_and(|c| number >= c);
        if last {
            return Ok(None);
        }
        number += 1;
    }
}

async fn create_integration(client: &GenesysClient) -> Result<Integration, GenesysError> {
    let created = client
        .create_integration(&CreateIntegrationRequest {
            integration_type: EntityRef::id(INTEGRATION_TYPE),
            name: Some(INTEGRATION_NAME.to_owned()),
            notes: Some(
                "Data actions served by genesys-gateway (managed by `actions publish`).".to_owned(),
            ),
        })
        .await?;
    tracing::info!(integration = %created.id, "created the genesys-gateway integration");
    Ok(created)
}

/// Points the integration's `basicAuth` credential at `[data_actions.auth]`'s user and
/// password, creating a credential only when the fingerprint in the current one's name differs.
async fn ensure_credential(
    client: &GenesysClient,
    integration_id: &str,
    auth: &InboundAuthSettings,
) -> Result<(), GenesysError> {
    let InboundAuthSettings::Basic { username, password } = auth else {
        return Ok(());
    };
    let wanted = credential_name(username, password.expose_secret());
    let mut config = client.integration_config(integration_id).await?;
    let current = config
        .credentials
        .get(CREDENTIAL_ROLE)
        .and_then(|c| c.extra.get("name"))
        .and_then(Value::as_str);
    if current == Some(wanted.as_str()) {
        return Ok(());
    }
    let credential = client
        .create_credential(&Credential {
            name: wanted,
            kind: CredentialType {
                name: CREDENTIAL_ROLE.to_owned(),
            },
            credential_fields: [
                ("userName".to_owned(), username.clone()),
                ("password".to_owned(), password.expose_secret().to_owned()),
            ]
            .into(),
        })
        .await?;
    config.credentials.insert(
        CREDENTIAL_ROLE.to_owned(),
        CredentialRef {
            id: credential.id.clone(),
            extra: serde_json::Map::new(),
        },
    );
    client
        .put_integration_config(integration_id, &config)
        .await?;
    tracing::info!(credential = %credential.id, "set the integration's basicAuth credential");
    Ok(())
}

/// `genesys-gateway basicAuth <16 hex>`: the fingerprint changes with the user or password.
fn credential_name(username: &str, password: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(password.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(b"-").expect("any key length"));
    mac.update(b"genesys-gateway basicAuth ");
    mac.update(username.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut name = String::from("genesys-gateway basicAuth ");
    for byte in &digest[..8] {
        use std::fmt::Write as _;
        let _ = write!(name, "{byte:02x}");
    }
    name
}

async fn existing_actions(
    client: &GenesysClient,
    integration_id: &str,
) -> Result<HashMap<String, Action>, GenesysError> {
    let mut out = HashMap::new();
    let mut number = 1;
    loop {
        let page = client
            .list_actions(
                Page {
                    number,
                    size: PAGE_SIZE,
                },
                Some(integration_id),
            )
            .await?;
        let count = page.entities.len();
        for action in page.entities {
            if action
                .integration_id
                .as_deref()
                .is_none_or(|i| i == integration_id)
                && let Some(name) = action.name.clone()
            {
                out.entry(name).or_insert(action);
            }
        }
        if count < PAGE_SIZE as usize || page.page_count.is_some_and(|c| number >= c) {
            return Ok(out);
        }
        number += 1;
    }
}

/// `timeout_ms` / 1000 rounded up, within Genesys' 1–60 s.
fn timeout_seconds(timeout: Duration) -> u32 {
    let ms = timeout.as_millis();
    u32::try_from(ms.div_ceil(1000)).unwrap_or(60).clamp(1, 60)
}

fn desired_config(action: &DataAction, public_url: &str) -> ActionConfig {
    ActionConfig {
        request: ActionRequestConfig {
            request_url_template: format!("{public_url}/v1/actions/{}", action.name()),
            request_type: "POST".to_owned(),
            headers: std::collections::BTreeMap::new(),
            request_template: Some("${input.rawRequest}".to_owned()),
        },
        response: ActionResponseConfig {
            translation_map: std::collections::BTreeMap::new(),
            translation_map_defaults: std::collections::BTreeMap::new(),
            success_template: Some("${rawResult}".to_owned()),
        },
        timeout_seconds: Some(timeout_seconds(action.timeout())),
    }
}

fn desired_contract(action: &DataAction) -> ActionContract {
    let object = || json!({"type": "object"});
    ActionContract {
        input: ContractInput {
            input_schema: action
                .input_schema()
                .map_or_else(object, |s| s.document().clone()),
        },
        output: ContractOutput {
            success_schema: action
                .output_schema()
                .map_or_else(object, |s| s.document().clone()),
        },
    }
}

fn post_input(
    action: &DataAction,
    integration_id: &str,
    config: ActionConfig,
    contract: ActionContract,
) -> PostActionInput {
    PostActionInput {
        category: CATEGORY.to_owned(),
        name: action.name().to_string(),
        integration_id: integration_id.to_owned(),
        config,
        contract,
        secure: false,
    }
}

/// Tests every action with an `example_input`, under a breaker.
async fn run_tests(client: &GenesysClient, actions: &[&DataAction], report: &mut PublishReport) {
    let breaker = CircuitBreaker::new(
        &CircuitBreakerSettings {
            failure_threshold: TEST_FAILURE_THRESHOLD,
            open_ms: 60_000,
        },
        None,
    );
    for (action, entry) in actions.iter().zip(report.actions.iter_mut()) {
        let (Some(input), Some(id)) = (action.example_input(), &entry.genesys_action_id) else {
            continue;
        };
        let permit = match breaker.try_acquire(Instant::now()) {
            Ok(permit) => permit,
            Err(_) => {
                entry.test = Some(ActionTest {
                    success: false,
                    latency_ms: 0,
                    error: Some(format!(
                        "not run: {TEST_FAILURE_THRESHOLD} tests in a row failed (circuit open)"
                    )),
                });
                continue;
            }
        };
        let started = Instant::now();
        let result = client.test_action(id, input).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let test = match result {
            Ok(r) if r.success => ActionTest {
                success: true,
                latency_ms,
                error: None,
            },
            Ok(r) => ActionTest {
                success: false,
                latency_ms,
                error: Some(test_failure(r.error.as_ref())),
            },
            Err(err) => ActionTest {
                success: false,
                latency_ms,
                error: Some(err.to_string()),
            },
        };
        if test.success {
            permit.success();
        } else {
            permit.failure(Instant::now());
        }
        entry.test = Some(test);
    }
}

/// The most specific message of a failed test (Genesys puts the cause in `errors[0]`).
fn test_failure(error: Option<&crate::genesys::ErrorBody>) -> String {
    let Some(error) = error else {
        return "the action failed".to_owned();
    };
    error
        .errors
        .first()
        .and_then(|e| e.message.clone())
        .or_else(|| error.message.clone())
        .or_else(|| error.code.clone())
        .unwrap_or_else(|| "the action failed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_within_genesys_limits() {
        assert_eq!(timeout_seconds(Duration::from_millis(1)), 1);
        assert_eq!(timeout_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(timeout_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(timeout_seconds(Duration::from_millis(10_000)), 10);
        assert_eq!(timeout_seconds(Duration::from_millis(60_000)), 60);
        assert_eq!(timeout_seconds(Duration::from_secs(600)), 60);
    }

    #[test]
    fn the_credential_name_fingerprints_user_and_password() {
        let a = credential_name("genesys", "pw-1");
        assert_eq!(a, credential_name("genesys", "pw-1"));
        assert_ne!(a, credential_name("genesys", "pw-2"));
        assert_ne!(a, credential_name("other", "pw-1"));
        assert!(a.starts_with("genesys-gateway basicAuth "));
        assert_eq!(a.len(), "genesys-gateway basicAuth ".len() + 16);
        assert!(!a.contains("pw-1"));
    }

    #[test]
    fn settings_need_a_public_url_and_no_header_credential() {
        let mut s = DataActionsSettings::default();
        let Err(PublishError::Config(p)) = check_settings(&s) else {
            panic!("no public_url must be refused")
        };
        assert_eq!(p[0].path, "data_actions.public_url");
        s.public_url = Some("https://gw.example.com/".into());
        assert_eq!(check_settings(&s).unwrap(), "https://gw.example.com");
        s.auth = InboundAuthSettings::Header {
            name: "X-K".into(),
            value: "v".to_owned().into(),
        };
        assert!(check_settings(&s).is_err());
    }
}
