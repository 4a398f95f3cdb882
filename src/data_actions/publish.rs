//! Provisioning the gateway's actions into Genesys Cloud: `genesys-gateway actions
//! publish [--dry-run]` and `POST /admin/v1/actions/publish[?dryRun=true]`.
//!
//! Publishing makes Genesys call the gateway, idempotently:
//! 1. one `custom-rest-actions` integration named [`INTEGRATION_NAME`], found by name or created,
//!    and enabled;
//! 2. its `basicAuth` credential, from `[data_actions.auth]` (basic), named
//!    [`CREDENTIAL_NAME`] — a name that says nothing about the password (see "The credential"
//!    below). With `[data_actions.auth] type = "none"` no credential is set; a `header`
//!    credential cannot be expressed as a Genesys Basic credential and is refused;
//! 3. one Genesys data action per gateway action, named like it, category [`CATEGORY`]: `POST
//!    <public_url>/v1/actions/<name>` with `requestTemplate ${input.rawRequest}`, `timeoutSeconds`
//!    = `timeout_ms` / 1000 rounded up, an empty `translationMap`, `successTemplate
//!    ${rawResult}`, the input/output schemas (or `{"type": "object"}`) as contract, and the
//!    request header [`DEFINITION_HEADER`] carrying the definition's fingerprint (see "What
//!    counts as a change"). An action is `created`, `updated` or `unchanged` (nothing written);
//! 4. each action with an `example_input` is tested with `POST
//!    /api/v2/integrations/actions/{id}/test`, [`TEST_CONCURRENCY`] at a time, under a circuit
//!    breaker: once [`TEST_FAILURE_THRESHOLD`] tests in a row failed, the tests not started yet
//!    are not run (Genesys evidently cannot reach the gateway).
//!
//! A dry run reads only: it reports what would change (`genesysActionId` null for actions not
//! created yet), writes nothing and runs no tests. Actions in the integration that the gateway
//! no longer has are left alone (and logged). Every created or updated action is audited
//! (`action.published`).
//!
//! # The report
//! `{success, warnings, actions: [{name, genesysActionId, change, changes, error, test}]}`. An
//! action Genesys refuses to create or update gets its `error` and the others are still
//! published; `success` is true only when every action was published and every test that ran
//! passed (`actions publish` exits 1 otherwise). A failure before any action (finding or
//! creating the integration, its credential) is an error of the whole publication. `warnings`
//! name what would surprise a flow or an operator: an action published with an empty contract
//! (no input or output schema), a `public_url` that points at this machine but not at the
//! gateway ([`public_url_warning`]; also logged at WARN).
//!
//! # What counts as a change
//! Genesys keeps what it is sent in its own form (a contract's schemas are stored as its typed
//! `JsonSchemaDocument`, defaults are filled in), so comparing what it shows back with what the
//! gateway would send would see a change on every run. Instead the gateway fingerprints what it
//! sends: SHA-256 (hex) of the canonical JSON (keys sorted, no spaces) of the action's name,
//! category, `secure`, configuration and contract, sent as the request header
//! [`DEFINITION_HEADER`] in the action's `config.request.headers`. Genesys keeps configured
//! headers verbatim and sends them on every call of the action (the gateway ignores it). An
//! action whose header (and category) match is `unchanged`; any other existing action is
//! `updated`. An edit made by hand in Genesys that keeps the header is therefore not undone
//! until the gateway's definition changes.
//!
//! To name *what* changed (`"changes": ["timeoutSeconds", "contract.input"]`, the parts listed
//! in [`DEFINITION_PARTS`]), a second header, [`PARTS_HEADER`], carries a short fingerprint of
//! each part; an updated action's `changes` are the parts whose fingerprint differs. An action
//! published by a gateway that did not send that header is compared with what Genesys shows
//! instead, which may name a contract that Genesys only keeps in its own form.
//!
//! # Updating keeps the action's id
//! Architect flows refer to a data action by id, so an action is never deleted and recreated.
//! Genesys does not let a published action's contract be patched (`UpdateActionInput` has no
//! contract); it changes through a draft, as in Genesys' own editor: `POST .../draft` (a draft
//! of the published action; when one exists already — left by an interrupted run or started
//! in the UI — it is taken over), `PATCH .../draft` with the whole definition and the draft's
//! `version`, then `POST .../draft/publish` with that version, which puts the draft in place
//! under the same id. Every update, whether or not the contract changed, takes that path: one
//! way to write an action.
//!
//! # The credential
//! Genesys never shows a credential's password back, and whoever can read the org's
//! integrations can read the credential's name, so nothing derived from the password may be
//! put in Genesys (a hash in the name would let anyone who can read it test guesses offline).
//! The gateway keeps in its store ([`Store::setting`]) which credential it set, on which
//! integration, and a fingerprint of the user and password: HMAC-SHA256 keyed with a random
//! 32-byte key made once and kept in the store ([`Store::get_or_create_secret`]), so the
//! fingerprint is worthless without the store. When the integration still points at the
//! recorded credential and the fingerprint matches, nothing is written; otherwise (new
//! password, a credential changed by hand, no record yet) a new credential is created, the
//! integration's configuration is pointed at it, and the credentials it replaced that the
//! gateway made (the recorded one; the one in use when it is named [`CREDENTIAL_NAME`]) are
//! deleted — a deletion that fails is retried by the next run; a credential someone else made
//! is left alone. Credentials named like the ones older gateway versions made
//! (`genesys-gateway basicAuth <hex>`, whose name carried such a hash) are deleted unless the
//! integration still uses one. A run with an unchanged credential creates and deletes
//! nothing.
//!
//! # Concurrency
//! Publications in one process are serialised by a [`PublishLock`] (the admin endpoint holds
//! one; see [`crate::admin`]): two at once would both find no integration and both create one.
//! The CLI (another process) and other replicas are **not** serialised with it: publish from
//! one place at a time (a lock in the store is a later step) — two processes publishing at
//! the same moment can still make two integrations or two copies of an action. The admin
//! endpoint runs each publication in a task of its own, so a request cut by its deadline or
//! by its client does not cut the publication: it finishes and is audited, only its report is
//! lost.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use hmac::{Hmac, Mac};
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use super::action::DataAction;
use crate::config::{
    CircuitBreakerSettings, DataActionsSettings, InboundAuthSettings, Problem, Settings,
};
use crate::error::{ApiError, ErrorDetail};
use crate::genesys::GenesysEndpoints;
use crate::genesys::models::{
    Action, ActionConfig, ActionContract, ActionRequestConfig, ActionResponseConfig, ContractInput,
    ContractOutput, CreateIntegrationRequest, Credential, CredentialRef, CredentialType, EntityRef,
    Integration, IntegrationPatch, Page, PostActionInput, PublishDraftInput, UpdateDraftInput,
};
use crate::genesys::{GenesysClient, GenesysError};
use crate::store::{AuditRecord, Store, StoreError};
use crate::telemetry::Metrics;
use crate::upstream::CircuitBreaker;

/// Name of the integration the actions live in.
pub const INTEGRATION_NAME: &str = "genesys-gateway";
/// Category of the published actions.
pub const CATEGORY: &str = "genesys-gateway";
/// Name of the `basicAuth` credential the gateway creates.
pub const CREDENTIAL_NAME: &str = "genesys-gateway";
/// Request header of every published action carrying the fingerprint of its definition.
pub const DEFINITION_HEADER: &str = "X-Gateway-Definition";
/// Request header of every published action carrying a short fingerprint of each part of its
/// definition (`category=<hex>;…;contract.output=<hex>`), so that a later run can name what
/// changed.
pub const PARTS_HEADER: &str = "X-Gateway-Definition-Parts";
/// Integration type of a Web Services Data Actions integration.
const INTEGRATION_TYPE: &str = "custom-rest-actions";
/// The credential role of a `custom-rest-actions` integration.
const CREDENTIAL_ROLE: &str = "basicAuth";
/// How the credentials of gateway versions that put a password hash in the name begin.
const LEGACY_CREDENTIAL_PREFIX: &str = "genesys-gateway basicAuth ";
/// The store key of the credential fingerprint's HMAC key.
const CREDENTIAL_KEY: &str = "publish.credential-fingerprint";
/// The store setting recording the credential set in Genesys ([`CredentialRecord`]).
const CREDENTIAL_RECORD: &str = "publish.credential";
/// Consecutive failed tests after which the tests not started yet are not run.
pub const TEST_FAILURE_THRESHOLD: u32 = 3;
/// Tests run at the same time.
pub const TEST_CONCURRENCY: usize = 4;
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
    /// What changed (or would change, in a dry run; or was to change, when `error` says why
    /// it did not).
    pub change: Change,
    /// For an `updated` action, the parts of its definition that differ (`timeoutSeconds`,
    /// `requestUrlTemplate`, `contract.input`…; see [`DEFINITION_PARTS`]); empty otherwise.
    pub changes: Vec<&'static str>,
    /// Why creating or updating this action failed (the others were still published).
    pub error: Option<String>,
    /// The test, when the action has an `example_input` and this was not a dry run.
    pub test: Option<ActionTest>,
}

impl PublishedAction {
    /// Whether the action is published as defined and its test, if one ran, passed.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.test.as_ref().is_none_or(|t| t.success)
    }
}

/// The answer of a publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishReport {
    /// Whether every action was published (in a dry run: could be looked at) and every test
    /// that ran passed; `actions publish` exits 1 when not.
    pub success: bool,
    /// What the operator should look at before trusting the result, e.g. a `public_url` that
    /// points at an address the gateway does not serve (also logged at WARN).
    pub warnings: Vec<String>,
    /// One entry per gateway action, in configuration order.
    pub actions: Vec<PublishedAction>,
}

impl PublishReport {
    /// The names of the actions that failed to publish or whose test failed.
    pub fn failed(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| !a.succeeded())
            .map(|a| a.name.as_str())
            .collect()
    }
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
    /// The store (which keeps the credential's fingerprint) failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
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
            PublishError::Store(err) => {
                tracing::error!(error = %err, "publishing failed: the store failed");
                ApiError::internal()
            }
        }
    }
}

/// Serialises the publications of one process (see "Concurrency" in the module docs). Cheap
/// to clone; clones share the lock.
#[derive(Debug, Clone, Default)]
pub struct PublishLock(Arc<Mutex<()>>);

impl PublishLock {
    /// Waits until no other publication of this process runs; this one may run while the
    /// guard lives (it does not borrow the lock, so it can move into a spawned task).
    pub async fn acquire(&self) -> PublishGuard {
        PublishGuard {
            _held: self.0.clone().lock_owned().await,
        }
    }
}

/// Held while a publication runs; dropping it lets the next one in.
#[derive(Debug)]
#[must_use = "the publication is serialised only while the guard lives"]
pub struct PublishGuard {
    _held: OwnedMutexGuard<()>,
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
    /// The store — where `action.published` records go and where the credential's fingerprint
    /// is kept — and who publishes (`admin`, `cli`). Without a store nothing is audited and
    /// the credential is replaced on every run (its fingerprint cannot be kept).
    pub store: Option<(&'a Store, &'a str)>,
    /// The address the gateway serving these actions listens on, when known: a `public_url`
    /// on this machine that does not lead there is warned about ([`public_url_warning`]).
    pub served: Option<SocketAddr>,
}

/// Publishes the actions (see the module docs). Callers in one process hold a
/// [`PublishGuard`] around it.
///
/// # Errors
/// [`PublishError::Config`] when `public_url` is missing or the inbound credential is a header;
/// [`PublishError::Genesys`] when a Genesys call fails, [`PublishError::Store`] when the store
/// does (what was done before stays done: a second run picks up from there).
pub async fn publish(p: Publication<'_>) -> Result<PublishReport, PublishError> {
    let public_url = check_settings(p.settings)?;
    let client = p.client;
    let apply = p.mode == PublishMode::Apply;
    let mut warnings = Vec::new();
    if let Some(warning) = p
        .served
        .and_then(|served| public_url_warning(&public_url, served))
    {
        tracing::warn!(public_url = %public_url, "{warning}");
        warnings.push(warning);
    }
    for action in &p.actions {
        for (side, missing) in [
            ("input", action.input_schema().is_none()),
            ("output", action.output_schema().is_none()),
        ] {
            if missing {
                warnings.push(format!(
                    "{}: no {side}_schema: published with an empty {side} contract",
                    action.name()
                ));
            }
        }
    }

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
        ensure_credential(
            client,
            &integration.id,
            &p.settings.auth,
            p.store.map(|(store, _)| store),
        )
        .await?;
    }

    let existing = match &integration {
        Some(i) => existing_actions(client, &i.id).await?,
        None => HashMap::new(),
    };
    let mut report = PublishReport {
        success: true,
        warnings,
        actions: Vec::with_capacity(p.actions.len()),
    };
    for action in &p.actions {
        let name = action.name().as_str();
        let desired = Definition::new(action, &public_url);
        let mut entry = PublishedAction {
            name: name.to_owned(),
            genesys_action_id: None,
            change: Change::Created,
            changes: Vec::new(),
            error: None,
            test: None,
        };
        // One action that cannot be written does not stop the others: the report says which.
        let written = match (existing.get(name), &integration) {
            (None, Some(integration)) if apply => client
                .create_action(&post_input(action, &integration.id, desired))
                .await
                .map(|created| entry.genesys_action_id = Some(created.id)),
            (None, _) => Ok(()),
            (Some(summary), _) => {
                entry.genesys_action_id = Some(summary.id.clone());
                match client.get_action(&summary.id).await {
                    Ok(current) if desired.is_published_as(&current) => {
                        entry.change = Change::Unchanged;
                        Ok(())
                    }
                    Ok(current) => {
                        entry.change = Change::Updated;
                        entry.changes = desired.changes_from(&current);
                        if apply {
                            update_through_draft(client, &current.id, name, desired)
                                .await
                                .map(|updated| entry.genesys_action_id = Some(updated.id))
                        } else {
                            Ok(())
                        }
                    }
                    Err(err) => {
                        entry.change = Change::Updated;
                        Err(err)
                    }
                }
            }
        };
        if let Err(err) = written {
            tracing::warn!(action = name, error = %err, change = entry.change.as_str(),
                "cannot publish a data action; the others are published");
            entry.error = Some(err.to_string());
        }
        if apply
            && entry.error.is_none()
            && entry.change != Change::Unchanged
            && let Some((store, actor)) = p.store
        {
            let record = AuditRecord::now("action.published", actor, entry.change.as_str())
                .with_subject(name)
                .with_detail(json!({
                    "genesysActionId": entry.genesys_action_id,
                    "integrationId": integration.as_ref().map(|i| &i.id),
                    "changes": entry.changes,
                }));
            let record = match crate::telemetry::RequestId::current() {
                Some(rid) => record.with_request_id(&*rid),
                None => record,
            };
            if let Err(err) = store.append_audit(&record).await {
                tracing::error!(error = %err, action = name, "cannot audit a published action");
            }
        }
        report.actions.push(entry);
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
    report.success = report.actions.iter().all(PublishedAction::succeeded);
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
    store: Option<(&Store, &str)>,
    served: Option<SocketAddr>,
) -> Result<PublishReport, PublishError> {
    let actions = super::registry::compile_actions(settings).map_err(PublishError::Config)?;
    let upstreams = crate::genesys::build_upstreams(
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
        store,
        served,
    })
    .await
}

/// Warnings about the `[[actions]]` of `settings` whose published contract would be empty: an
/// action without an `input_schema` is published with the input contract `{"type": "object"}`
/// (a flow sees no inputs to fill), one without an `output_schema` with that output contract
/// (a flow sees no outputs to map). Each names its key (`actions[2].input_schema`); they do not
/// stop anything.
pub fn contract_warnings(settings: &Settings) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for (i, action) in settings.actions.iter().enumerate() {
        if action.input_schema.is_none() {
            warnings.push(Problem::new(
                format!("actions[{i}].input_schema"),
                "not set: the action is published with an empty input contract, so a flow \
                 sees no inputs to fill",
            ));
        }
        if action.output_schema.is_none() {
            warnings.push(Problem::new(
                format!("actions[{i}].output_schema"),
                "not set: the action is published with an empty output contract, so a flow \
                 sees no outputs to map",
            ));
        }
    }
    warnings
}

/// Logs each of [`contract_warnings`] of `settings` at WARN, actions named by name.
pub fn log_contract_warnings(settings: &Settings) -> Vec<String> {
    let names = settings.action_names();
    contract_warnings(settings)
        .iter()
        .map(|w| {
            let text = format!("{}: {}", w.label(&names), w.message);
            tracing::warn!(key = %w.path, "{text}");
            text
        })
        .collect()
}

/// The reload part that reports the contract warnings of a new configuration: the reload
/// answer lists them as `"warnings": [...]` (when there are any) and they are logged once the
/// configuration is in force. Register it after the data actions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContractWarnings;

/// The warnings of one reload, as [`ContractWarnings`] prepared them.
struct PreparedWarnings {
    settings: Arc<Settings>,
    texts: Vec<String>,
}

impl crate::reload::Reloadable for ContractWarnings {
    fn name(&self) -> &'static str {
        "contract warnings"
    }

    fn prepare(
        &self,
        staging: &mut crate::reload::Staging<'_>,
    ) -> Result<Box<dyn crate::reload::Prepared>, Vec<Problem>> {
        let settings = staging.settings().clone();
        let names = settings.action_names();
        let texts = contract_warnings(&settings)
            .iter()
            .map(|w| format!("{}: {}", w.label(&names), w.message))
            .collect();
        Ok(Box::new(PreparedWarnings { settings, texts }))
    }
}

impl crate::reload::Prepared for PreparedWarnings {
    fn report(&self, report: &mut serde_json::Map<String, Value>) {
        if !self.texts.is_empty() {
            report.insert("warnings".to_owned(), json!(self.texts));
        }
    }

    fn apply(self: Box<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        log_contract_warnings(&self.settings);
        Box::pin(std::future::ready(()))
    }
}

/// The `public_url` of a sandbox whose `[data_actions] public_url` is unset: the address the
/// gateway listens on, as a URL Genesys (the in-process simulator, on this machine) can call —
/// an unspecified address (`0.0.0.0`, `::`) becomes loopback.
pub fn sandbox_public_url(listening: SocketAddr) -> String {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listening.port()))
}

/// Why `public_url` looks wrong for a gateway listening on `served`, if it does: it names this
/// machine (loopback, `localhost`, or the address listened on) but another port, another
/// loopback address, or `https` (the gateway serves plain HTTP). Genesys would then call
/// whatever else listens there. A name or address of another machine (a load balancer, a
/// proxy) cannot be judged from here and is never warned about.
pub fn public_url_warning(public_url: &str, served: SocketAddr) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let host_ip = match url.host()? {
        url::Host::Domain(name) if name.eq_ignore_ascii_case("localhost") => None,
        url::Host::Domain(_) => return None,
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
    };
    let on_this_machine =
        host_ip.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified() || ip == served.ip());
    if !on_this_machine {
        return None;
    }
    let port = url.port_or_known_default()?;
    let address_served = match host_ip {
        // `localhost` reaches a gateway listening on loopback or on every address.
        None => served.ip().is_loopback() || served.ip().is_unspecified(),
        Some(ip) => {
            ip == served.ip()
                || served.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())
        }
    };
    let shown = url.host_str().unwrap_or_default();
    if port != served.port() || !address_served {
        Some(format!(
            "data_actions.public_url ({public_url}) points at {shown}:{port} on this machine, \
             which this gateway does not serve (it listens on {served}): Genesys would call \
             whatever listens there"
        ))
    } else if url.scheme() == "https" {
        Some(format!(
            "data_actions.public_url ({public_url}) uses https, but this gateway serves plain \
             HTTP on {served}: Genesys could not connect"
        ))
    } else {
        None
    }
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

/// What the store remembers of the credential the gateway set in Genesys (setting
/// [`CREDENTIAL_RECORD`], JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialRecord {
    /// The integration whose configuration points at the credential.
    integration_id: String,
    /// The credential.
    credential_id: String,
    /// [`credential_fingerprint`] of the user and password it holds.
    fingerprint: String,
    /// Credentials replaced by the gateway whose deletion has not succeeded yet.
    #[serde(default)]
    retired: Vec<String>,
}

/// Points the integration's `basicAuth` credential at `[data_actions.auth]`'s user and
/// password (see "The credential" in the module docs).
async fn ensure_credential(
    client: &GenesysClient,
    integration_id: &str,
    auth: &InboundAuthSettings,
    store: Option<&Store>,
) -> Result<(), PublishError> {
    let InboundAuthSettings::Basic { username, password } = auth else {
        return Ok(());
    };
    let (fingerprint, record) = match store {
        Some(store) => {
            let key = store.get_or_create_secret(CREDENTIAL_KEY).await?;
            let fingerprint = credential_fingerprint(key.expose_secret(), username, password);
            let record = store
                .setting(CREDENTIAL_RECORD)
                .await?
                .and_then(|text| serde_json::from_str::<CredentialRecord>(&text).ok());
            (Some(fingerprint), record)
        }
        None => (None, None),
    };
    let mut config = client.integration_config(integration_id).await?;
    let current = config
        .credentials
        .get(CREDENTIAL_ROLE)
        .map(|c| c.id.clone());
    let current_name = config
        .credentials
        .get(CREDENTIAL_ROLE)
        .and_then(|c| c.extra.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let unchanged = match (&record, &current, &fingerprint) {
        (Some(record), Some(current), Some(fingerprint)) => {
            record.integration_id == integration_id
                && record.credential_id == *current
                && bool::from(record.fingerprint.as_bytes().ct_eq(fingerprint.as_bytes()))
        }
        _ => false,
    };
    let mut record = record.unwrap_or_default();
    let mut dirty = false;
    let in_use = if unchanged {
        current
    } else {
        let credential = client
            .create_credential(&Credential {
                name: CREDENTIAL_NAME.to_owned(),
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
        if let Err(err) = client.put_integration_config(integration_id, &config).await {
            // Nothing uses the new credential: do not leave a password behind.
            if let Err(cleanup) = client.delete_credential(&credential.id).await {
                tracing::warn!(credential = %credential.id, error = %cleanup,
                    "cannot delete a credential that was not put in use");
            }
            return Err(err.into());
        }
        tracing::info!(credential = %credential.id, "set the integration's basicAuth credential");
        // What the new credential replaces, when the gateway made it: the credential the
        // integration used, and the one the gateway set last if something else replaced it
        // since. A credential someone else made is left alone.
        let previous = Some(record.credential_id.clone()).filter(|id| !id.is_empty());
        if let Some(old) = current.filter(|old| *old != credential.id) {
            let made_here = previous.as_deref() == Some(old.as_str())
                || current_name.as_deref().is_some_and(|n| {
                    n == CREDENTIAL_NAME || n.starts_with(LEGACY_CREDENTIAL_PREFIX)
                });
            if made_here {
                record.retired.push(old);
            } else {
                tracing::info!(credential = %old,
                    "the replaced credential was not made by the gateway; left alone");
            }
        }
        record
            .retired
            .extend(previous.filter(|p| *p != credential.id));
        record.retired.sort_unstable();
        record.retired.dedup();
        record.integration_id = integration_id.to_owned();
        record.credential_id = credential.id.clone();
        record.fingerprint = fingerprint.clone().unwrap_or_default();
        dirty = true;
        Some(credential.id)
    };
    if let (Some(store), true) = (store, dirty) {
        save_record(store, &record).await?;
    }

    // Delete what was replaced (now or by an earlier run whose deletion failed).
    let retired = std::mem::take(&mut record.retired);
    let before = retired.len();
    for id in retired {
        if in_use.as_deref() == Some(id.as_str()) {
            continue;
        }
        match client.delete_credential(&id).await {
            Ok(()) => tracing::info!(credential = %id, "deleted a replaced credential"),
            Err(err) if err.is_not_found() => {}
            Err(err) => {
                tracing::warn!(credential = %id, error = %err,
                    "cannot delete a replaced credential yet; the next publication retries");
                record.retired.push(id);
            }
        }
    }
    if let (Some(store), true) = (store, record.retired.len() != before) {
        save_record(store, &record).await?;
    }
    delete_legacy_credentials(client, in_use.as_deref()).await?;
    Ok(())
}

async fn save_record(store: &Store, record: &CredentialRecord) -> Result<(), StoreError> {
    let text = serde_json::to_string(record).unwrap_or_default();
    store.put_setting(CREDENTIAL_RECORD, &text).await
}

/// Deletes the credentials that gateway versions which put a password hash in the
/// credential's name left behind, except `in_use` (a deletion that fails is logged; the next
/// run tries again).
///
/// # Errors
/// [`GenesysError`] when the credentials cannot be listed.
async fn delete_legacy_credentials(
    client: &GenesysClient,
    in_use: Option<&str>,
) -> Result<(), GenesysError> {
    let mut legacy = Vec::new();
    let mut number = 1;
    loop {
        let page = client
            .list_credentials(Page {
                number,
                size: PAGE_SIZE,
            })
            .await?;
        let count = page.entities.len();
        legacy.extend(page.entities.into_iter().filter(|c| {
            c.name
                .as_deref()
                .is_some_and(|n| n.starts_with(LEGACY_CREDENTIAL_PREFIX))
                && Some(c.id.as_str()) != in_use
        }));
        if count < PAGE_SIZE as usize || page.page_count.is_some_and(|c| number >= c) {
            break;
        }
        number += 1;
    }
    for credential in legacy {
        match client.delete_credential(&credential.id).await {
            Ok(()) => tracing::info!(credential = %credential.id,
                "deleted a credential of an older gateway version"),
            Err(err) if err.is_not_found() => {}
            Err(err) => tracing::warn!(credential = %credential.id, error = %err,
                "cannot delete a credential of an older gateway version yet; the next \
                 publication retries"),
        }
    }
    Ok(())
}

/// HMAC-SHA256 (hex) of the user and password, keyed with the store's random `key`: it
/// changes with either, and tells nothing to whoever lacks the key.
fn credential_fingerprint(key: &[u8], username: &str, password: &SecretString) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"genesys-gateway basicAuth v1\0");
    mac.update(&(username.len() as u64).to_be_bytes());
    mac.update(username.as_bytes());
    mac.update(password.expose_secret().as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
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
            headers: BTreeMap::new(),
            request_template: Some("${input.rawRequest}".to_owned()),
        },
        response: ActionResponseConfig {
            translation_map: BTreeMap::new(),
            translation_map_defaults: BTreeMap::new(),
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

/// What the gateway sends Genesys for one action, with its fingerprints.
struct Definition {
    /// The configuration, [`DEFINITION_HEADER`] and [`PARTS_HEADER`] included.
    config: ActionConfig,
    contract: ActionContract,
    fingerprint: String,
    /// The fingerprint of each of [`DEFINITION_PARTS`], in that order.
    parts: Vec<(&'static str, String)>,
}

impl Definition {
    fn new(action: &DataAction, public_url: &str) -> Self {
        let mut config = desired_config(action, public_url);
        let contract = desired_contract(action);
        let fingerprint = definition_fingerprint(action.name().as_str(), &config, &contract);
        let parts: Vec<(&'static str, String)> =
            definition_parts(Some(CATEGORY), Some(false), Some(&config), Some(&contract))
                .into_iter()
                .map(|(name, value)| (name, part_fingerprint(&value)))
                .collect();
        let parts_header = parts
            .iter()
            .map(|(name, hash)| format!("{name}={hash}"))
            .collect::<Vec<_>>()
            .join(";");
        config
            .request
            .headers
            .insert(DEFINITION_HEADER.to_owned(), fingerprint.clone());
        config
            .request
            .headers
            .insert(PARTS_HEADER.to_owned(), parts_header);
        Self {
            config,
            contract,
            fingerprint,
            parts,
        }
    }

    /// Whether `current` (read with its configuration) was published from this definition.
    fn is_published_as(&self, current: &Action) -> bool {
        current.category.as_deref() == Some(CATEGORY)
            && published_header(current, DEFINITION_HEADER) == Some(self.fingerprint.as_str())
    }

    /// The parts of this definition that differ from `current` (see "What counts as a change"
    /// in the module docs).
    fn changes_from(&self, current: &Action) -> Vec<&'static str> {
        if let Some(header) = published_header(current, PARTS_HEADER) {
            let published: HashMap<&str, &str> = header
                .split(';')
                .filter_map(|part| part.split_once('='))
                .map(|(name, hash)| (name.trim(), hash.trim()))
                .collect();
            return self
                .parts
                .iter()
                .filter(|(name, hash)| published.get(name) != Some(&hash.as_str()))
                .map(|(name, _)| *name)
                .collect();
        }
        // Published by a gateway that did not record its parts: compare what Genesys shows.
        let now = definition_parts(
            current.category.as_deref(),
            current.secure,
            current.config.as_ref(),
            current.contract.as_ref(),
        );
        self.parts
            .iter()
            .zip(now)
            .filter(|((_, hash), (_, value))| *hash != part_fingerprint(value))
            .map(|((name, _), _)| *name)
            .collect()
    }
}

/// The parts of a definition [`PublishedAction::changes`] names, as Genesys calls them: the
/// action's own fields, its configuration's, and its contract's two sides.
pub const DEFINITION_PARTS: &[&str] = &[
    "category",
    "secure",
    "requestUrlTemplate",
    "requestType",
    "requestTemplate",
    "headers",
    "translationMap",
    "translationMapDefaults",
    "successTemplate",
    "timeoutSeconds",
    "contract.input",
    "contract.output",
];

/// Each of [`DEFINITION_PARTS`] with its value, of an action's fields as sent or as read back
/// (`Null` where absent); the gateway's own headers are not part of `headers`.
fn definition_parts(
    category: Option<&str>,
    secure: Option<bool>,
    config: Option<&ActionConfig>,
    contract: Option<&ActionContract>,
) -> Vec<(&'static str, Value)> {
    let request = config.map(|c| &c.request);
    let response = config.map(|c| &c.response);
    let headers: BTreeMap<&String, &String> = request
        .map(|r| {
            r.headers
                .iter()
                .filter(|(name, _)| {
                    !name.eq_ignore_ascii_case(DEFINITION_HEADER)
                        && !name.eq_ignore_ascii_case(PARTS_HEADER)
                })
                .collect()
        })
        .unwrap_or_default();
    let values = [
        json!(category),
        json!(secure),
        json!(request.map(|r| &r.request_url_template)),
        json!(request.map(|r| &r.request_type)),
        json!(request.and_then(|r| r.request_template.as_ref())),
        json!(headers),
        json!(response.map(|r| &r.translation_map)),
        json!(response.map(|r| &r.translation_map_defaults)),
        json!(response.and_then(|r| r.success_template.as_ref())),
        json!(config.and_then(|c| c.timeout_seconds)),
        json!(contract.map(|c| &c.input.input_schema)),
        json!(contract.map(|c| &c.output.success_schema)),
    ];
    DEFINITION_PARTS.iter().copied().zip(values).collect()
}

/// A short fingerprint of one part (16 hex digits of the SHA-256 of its canonical JSON).
fn part_fingerprint(value: &Value) -> String {
    let mut text = String::new();
    canonical_json(value, &mut text);
    let mut hash = hex(&Sha256::digest(text.as_bytes()));
    hash.truncate(16);
    hash
}

/// The request header `header` of an action read with its configuration.
fn published_header<'a>(action: &'a Action, header: &str) -> Option<&'a str> {
    action
        .config
        .as_ref()?
        .request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(header))
        .map(|(_, value)| value.trim())
}

/// SHA-256 (hex) of the canonical JSON of everything the gateway sends for an action (its
/// configuration without [`DEFINITION_HEADER`]).
fn definition_fingerprint(name: &str, config: &ActionConfig, contract: &ActionContract) -> String {
    let definition = json!({
        "fingerprint": 1,
        "name": name,
        "category": CATEGORY,
        "secure": false,
        "config": config,
        "contract": contract,
    });
    let mut text = String::new();
    canonical_json(&definition, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// `value` as JSON with every object's keys sorted and no whitespace, whatever order the map
/// type keeps.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Writes `definition` over the published action `id` through a draft (see "Updating keeps
/// the action's id" in the module docs); the action as published.
async fn update_through_draft(
    client: &GenesysClient,
    id: &str,
    name: &str,
    definition: Definition,
) -> Result<Action, GenesysError> {
    let draft = match client.create_action_draft(id).await {
        Ok(draft) => draft,
        // Probably a draft exists already (Genesys allows one): take it over.
        Err(err)
            if err
                .status()
                .is_some_and(|s| s.is_client_error() && s != StatusCode::NOT_FOUND) =>
        {
            match client.action_draft(id).await {
                Ok(draft) => {
                    tracing::info!(action = name, "taking over an existing draft of the action");
                    draft
                }
                Err(_) => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    let draft = client
        .patch_action_draft(
            id,
            &UpdateDraftInput {
                category: Some(CATEGORY.to_owned()),
                name: Some(name.to_owned()),
                config: Some(definition.config),
                contract: Some(definition.contract),
                secure: Some(false),
                version: draft.version.unwrap_or(1),
            },
        )
        .await?;
    client
        .publish_action_draft(
            id,
            &PublishDraftInput {
                version: draft.version.unwrap_or(1),
            },
        )
        .await
}

fn post_input(
    action: &DataAction,
    integration_id: &str,
    definition: Definition,
) -> PostActionInput {
    PostActionInput {
        category: CATEGORY.to_owned(),
        name: action.name().to_string(),
        integration_id: integration_id.to_owned(),
        config: definition.config,
        contract: definition.contract,
        secure: false,
    }
}

/// Tests every published action with an `example_input`, [`TEST_CONCURRENCY`] at a time, under
/// a breaker: a test is started only while fewer than [`TEST_FAILURE_THRESHOLD`] tests in a
/// row failed.
async fn run_tests(client: &GenesysClient, actions: &[&DataAction], report: &mut PublishReport) {
    let breaker = CircuitBreaker::new(
        &CircuitBreakerSettings {
            failure_threshold: TEST_FAILURE_THRESHOLD,
            open_ms: 60_000,
        },
        None,
    );
    // Futures do nothing until polled: at most TEST_CONCURRENCY run, each asks the breaker
    // when it starts.
    let tests: Vec<_> = actions
        .iter()
        .zip(&report.actions)
        .enumerate()
        .filter_map(|(i, (action, entry))| {
            let input = action.example_input()?;
            if entry.error.is_some() {
                return None;
            }
            let id = entry.genesys_action_id.clone()?;
            let breaker = &breaker;
            Some(async move { (i, run_test(client, breaker, &id, input).await) })
        })
        .collect();
    let results: Vec<(usize, ActionTest)> = stream::iter(tests)
        .buffer_unordered(TEST_CONCURRENCY)
        .collect()
        .await;
    for (i, test) in results {
        report.actions[i].test = Some(test);
    }
}

/// One test (or its refusal by the open breaker).
async fn run_test(
    client: &GenesysClient,
    breaker: &CircuitBreaker,
    id: &str,
    input: &Value,
) -> ActionTest {
    let Ok(permit) = breaker.try_acquire(Instant::now()) else {
        return ActionTest {
            success: false,
            latency_ms: 0,
            error: Some(format!(
                "not run: {TEST_FAILURE_THRESHOLD} tests in a row failed (circuit open)"
            )),
        };
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
    test
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
    fn the_credential_fingerprint_needs_the_key_and_changes_with_user_and_password() {
        let key = [7u8; 32];
        let pw = |p: &str| SecretString::from(p.to_owned());
        let a = credential_fingerprint(&key, "genesys", &pw("pw-1"));
        assert_eq!(a, credential_fingerprint(&key, "genesys", &pw("pw-1")));
        assert_ne!(a, credential_fingerprint(&key, "genesys", &pw("pw-2")));
        assert_ne!(a, credential_fingerprint(&key, "other", &pw("pw-1")));
        assert_ne!(
            a,
            credential_fingerprint(&[8u8; 32], "genesys", &pw("pw-1"))
        );
        // The boundary between user and password is part of what is hashed.
        assert_ne!(
            credential_fingerprint(&key, "ab", &pw("c")),
            credential_fingerprint(&key, "a", &pw("bc"))
        );
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut a = String::new();
        canonical_json(
            &serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é\""}], "a": null}"#).unwrap(),
            &mut a,
        );
        assert_eq!(a, r#"{"a":null,"b":[1,{"x":"é\"","y":2}]}"#);
    }

    fn config(url: &str) -> ActionConfig {
        ActionConfig {
            request: ActionRequestConfig {
                request_url_template: url.to_owned(),
                request_type: "POST".to_owned(),
                ..ActionRequestConfig::default()
            },
            ..ActionConfig::default()
        }
    }

    #[test]
    fn the_definition_fingerprint_covers_name_config_and_contract() {
        let contract = ActionContract::default();
        let a = definition_fingerprint("a", &config("https://gw/v1/actions/a"), &contract);
        assert_eq!(
            a,
            definition_fingerprint("a", &config("https://gw/v1/actions/a"), &contract)
        );
        assert_ne!(
            a,
            definition_fingerprint("b", &config("https://gw/v1/actions/a"), &contract)
        );
        assert_ne!(
            a,
            definition_fingerprint("a", &config("https://gw/v1/actions/x"), &contract)
        );
        let other = ActionContract {
            input: ContractInput {
                input_schema: json!({"type": "object", "required": ["id"]}),
            },
            ..ActionContract::default()
        };
        assert_ne!(
            a,
            definition_fingerprint("a", &config("https://gw/v1/actions/a"), &other)
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn the_published_fingerprint_is_read_from_the_header_whatever_its_case() {
        let mut config = config("https://gw/v1/actions/a");
        config
            .request
            .headers
            .insert("x-gateway-definition".to_owned(), " abc ".to_owned());
        let mut action = Action {
            id: "id".to_owned(),
            name: Some("a".to_owned()),
            category: Some(CATEGORY.to_owned()),
            integration_id: None,
            version: Some(1),
            config: Some(config),
            contract: None,
            secure: None,
            extra: serde_json::Map::new(),
        };
        assert_eq!(published_header(&action, DEFINITION_HEADER), Some("abc"));
        action.config = None;
        assert_eq!(published_header(&action, DEFINITION_HEADER), None);
    }

    #[test]
    fn a_public_url_on_this_machine_must_lead_to_the_gateway() {
        let served: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        for fine in [
            "http://127.0.0.1:8181",
            "http://localhost:8181/",
            "https://gateway.example.com",
            "http://10.1.2.3:8080",
        ] {
            assert_eq!(public_url_warning(fine, served), None, "{fine}");
        }
        for wrong in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://127.0.0.2:8181",
            "https://127.0.0.1:8181",
        ] {
            let warning = public_url_warning(wrong, served).expect(wrong);
            assert!(warning.contains("data_actions.public_url"), "{warning}");
        }
        let everywhere: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(
            public_url_warning("http://127.0.0.1:9000", everywhere),
            None
        );
        assert_eq!(
            public_url_warning("http://localhost:9000", everywhere),
            None
        );
        assert!(public_url_warning("http://127.0.0.1:9001", everywhere).is_some());
        let lan: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(public_url_warning("http://10.0.0.5:8080", lan), None);
        assert!(public_url_warning("http://10.0.0.5:9090", lan).is_some());
        assert!(public_url_warning("http://127.0.0.1:8080", lan).is_some());
    }

    #[test]
    fn a_sandbox_public_url_is_the_address_listened_on() {
        assert_eq!(
            sandbox_public_url("127.0.0.1:41234".parse().unwrap()),
            "http://127.0.0.1:41234"
        );
        assert_eq!(
            sandbox_public_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            sandbox_public_url("[::]:8080".parse().unwrap()),
            "http://[::1]:8080"
        );
    }

    fn published(definition: &Definition, contract: Option<ActionContract>) -> Action {
        Action {
            id: "id".to_owned(),
            name: Some("a".to_owned()),
            category: Some(CATEGORY.to_owned()),
            integration_id: None,
            version: Some(1),
            config: Some(definition.config.clone()),
            contract: contract.or_else(|| Some(definition.contract.clone())),
            secure: Some(false),
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_parts_that_changed_are_named() {
        let action = |timeout_ms: u64, schema: Value| {
            DataAction::builder("a")
                .upstream("genesys")
                .path("/x")
                .timeout(Duration::from_millis(timeout_ms))
                .input_schema(schema)
                .build()
                .unwrap()
        };
        let before = Definition::new(&action(5000, json!({"type": "object"})), "https://gw");
        let after = Definition::new(
            &action(9000, json!({"type": "object", "required": ["id"]})),
            "https://gw",
        );
        let current = published(&before, None);
        assert!(before.is_published_as(&current));
        assert!(!after.is_published_as(&current));
        assert_eq!(
            after.changes_from(&current),
            ["timeoutSeconds", "contract.input"]
        );
        let moved = Definition::new(&action(5000, json!({"type": "object"})), "https://gw2");
        assert_eq!(moved.changes_from(&current), ["requestUrlTemplate"]);

        // Published without the parts header: what Genesys shows is compared.
        let mut old = published(&before, None);
        if let Some(config) = old.config.as_mut() {
            config.request.headers.remove(PARTS_HEADER);
        }
        assert_eq!(
            after.changes_from(&old),
            ["timeoutSeconds", "contract.input"]
        );
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
