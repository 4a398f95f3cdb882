//! The Integrations service: integration types, integrations and their current configuration,
//! credentials, and data actions (`/api/v2/integrations/actions`, executed by [`execution`]).
//!
//! As in Genesys: an integration's name is its configuration's name; `PUT .../config/current`
//! and `PATCH .../actions/{id}` require the current `version` (409 `conflict` otherwise) and bump
//! it; credential secrets are never returned; action ids look like `custom_-_<uuid>`; `GET` of
//! actions returns `config` only with `includeConfig=true` and the contract's schemas only with
//! `expand=contract` (otherwise their URIs).
//!
//! A published action's contract cannot be patched (`UpdateActionInput` has no `contract`);
//! it changes through a draft, as in Genesys: `POST .../actions/{id}/draft` copies the action
//! into its draft (one per action, version 1; 409 `conflict` when one exists), `GET`/`DELETE`
//! `.../draft` read or drop it, `PATCH .../draft` (`UpdateDraftInput`: `name`, `category`,
//! `config`, `contract`, `secure`, and the draft's current `version`) changes it and bumps its
//! version, and `POST .../draft/publish` (`PublishDraftInput` `{"version"}`, the draft's current
//! version) makes the draft the action — same id, action version + 1 — and removes the draft.
//!
//! Contract schemas are stored as Genesys' typed `JsonSchemaDocument` (the model of the
//! official SDKs): only its top-level fields (`id`, `$schema`, `title`, `description`, `type`,
//! `required`, `properties`, `additionalProperties`) are kept, other top-level keywords are
//! dropped — so what `GET` shows back is not always byte for byte what was sent.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use chrono::Utc;
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::GenesysError;
use super::execution;
use super::extract::{GJson, QueryPairs};
use super::paging::Page;
use super::records::integrations::{
    ActionRecord, ActionView, CredentialRecord, IntegrationConfig, IntegrationRecord,
    integration_type, integration_types,
};
use super::state::{Data, Sim};

/// Credential types an integration may reference.
const CREDENTIAL_TYPES: &[&str] = &["basicAuth", "userDefined", "userDefinedOAuth"];
/// HTTP methods a web services action may use.
const REQUEST_TYPES: &[&str] = &["GET", "PUT", "POST", "PATCH", "DELETE"];

/// Routes of the integrations service.
pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/api/v2/integrations/types", get(list_types))
        .route("/api/v2/integrations/types/{typeId}", get(get_type))
        .route(
            "/api/v2/integrations",
            get(list_integrations).post(create_integration),
        )
        .route(
            "/api/v2/integrations/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/api/v2/integrations/credentials/{credentialId}",
            get(get_credential)
                .put(update_credential)
                .delete(delete_credential),
        )
        .route(
            "/api/v2/integrations/actions",
            get(list_actions).post(create_action),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}",
            get(get_action).patch(update_action).delete(delete_action),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}/draft",
            get(get_draft)
                .post(create_draft)
                .patch(update_draft)
                .delete(delete_draft),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}/draft/publish",
            post(publish_draft),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}/schemas/{fileName}",
            get(get_action_schema),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}/execute",
            post(execution::execute),
        )
        .route(
            "/api/v2/integrations/actions/{actionId}/test",
            post(execution::test),
        )
        .route(
            "/api/v2/integrations/{integrationId}",
            get(get_integration)
                .patch(update_integration)
                .delete(delete_integration),
        )
        .route(
            "/api/v2/integrations/{integrationId}/config/current",
            get(get_config).put(put_config),
        )
}

async fn list_types(query: QueryPairs) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    Ok(Json(page.envelope(
        integration_types(),
        "/api/v2/integrations/types",
        "",
    )))
}

async fn get_type(Path(id): Path<String>) -> Result<Json<Value>, GenesysError> {
    integration_type(&id)
        .map(Json)
        .ok_or_else(|| GenesysError::not_found(format!("Integration type {id} not found")))
}

/// Removes the records `which` picks; `None` when it picks none.
fn remove<T>(records: &mut Vec<T>, mut which: impl FnMut(&T) -> bool) -> Option<()> {
    let before = records.len();
    records.retain(|r| !which(r));
    (records.len() < before).then_some(())
}

fn not_found_integration(id: &str) -> GenesysError {
    GenesysError::not_found(format!("Integration {id} not found"))
}

#[derive(Debug, Deserialize)]
struct TypeRef {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateIntegration {
    name: Option<String>,
    integration_type: Option<TypeRef>,
    notes: Option<String>,
    intended_state: Option<String>,
}

fn checked_state(state: &str) -> Result<String, GenesysError> {
    let upper = state.to_ascii_uppercase();
    if ["ENABLED", "DISABLED"].contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(GenesysError::bad_request(format!(
            "intendedState must be ENABLED or DISABLED, not {state}"
        )))
    }
}

async fn create_integration(
    State(sim): State<Arc<Sim>>,
    GJson(body): GJson<CreateIntegration>,
) -> Result<Json<Value>, GenesysError> {
    let type_id = body
        .integration_type
        .map(|t| t.id)
        .ok_or_else(|| GenesysError::bad_request("integrationType.id is required"))?;
    let kind = integration_type(&type_id).ok_or_else(|| {
        GenesysError::bad_request(format!("Integration type {type_id} does not exist"))
    })?;
    let intended_state = match body.intended_state.as_deref() {
        None => "DISABLED".to_owned(),
        Some(s) => checked_state(s)?,
    };
    let record = IntegrationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        type_id,
        intended_state,
        attributes: Map::new(),
        config: IntegrationConfig {
            name: body
                .name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| kind["name"].as_str().unwrap_or_default().to_owned()),
            version: 1,
            properties: json!({}),
            advanced: json!({}),
            notes: body.notes.unwrap_or_default(),
            credentials: Map::new(),
        },
        modified: Utc::now(),
    };
    let answer = record.to_json();
    sim.data().integrations.push(record);
    Ok(Json(answer))
}

async fn list_integrations(
    State(sim): State<Arc<Sim>>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    let ids = query.all("ids");
    let kind = query.first("integrationType");
    let all = sim
        .data()
        .integrations
        .iter()
        .filter(|i| ids.is_empty() || ids.contains(&i.id))
        .filter(|i| kind.is_none_or(|k| i.type_id == k))
        .map(IntegrationRecord::to_json)
        .collect();
    Ok(Json(page.envelope(all, "/api/v2/integrations", "")))
}

async fn get_integration(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    show_integration(&sim, &id, IntegrationRecord::to_json)
}

/// The integration `id` in the shape `render` gives it, or 404.
fn show_integration(
    sim: &Sim,
    id: &str,
    render: fn(&IntegrationRecord) -> Value,
) -> Result<Json<Value>, GenesysError> {
    sim.data()
        .integrations
        .iter()
        .find(|i| i.id == id)
        .map(|i| Json(render(i)))
        .ok_or_else(|| not_found_integration(id))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatchIntegration {
    name: Option<String>,
    notes: Option<String>,
    intended_state: Option<String>,
    attributes: Option<Map<String, Value>>,
}

async fn update_integration(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(body): GJson<PatchIntegration>,
) -> Result<Json<Value>, GenesysError> {
    let state = body
        .intended_state
        .as_deref()
        .map(checked_state)
        .transpose()?;
    let mut data = sim.data();
    let record = data
        .integrations
        .iter_mut()
        .find(|i| i.id == id)
        .ok_or_else(|| not_found_integration(&id))?;
    if let Some(state) = state {
        record.intended_state = state;
    }
    if let Some(name) = body.name.filter(|n| !n.trim().is_empty()) {
        record.config.name = name;
    }
    if let Some(notes) = body.notes {
        record.config.notes = notes;
    }
    if let Some(attributes) = body.attributes {
        record.attributes = attributes;
    }
    record.modified = Utc::now();
    Ok(Json(record.to_json()))
}

async fn delete_integration(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    let mut data = sim.data();
    let pos = data
        .integrations
        .iter()
        .position(|i| i.id == id)
        .ok_or_else(|| not_found_integration(&id))?;
    let mut record = data.integrations.remove(pos);
    data.actions.retain(|a| a.integration_id != id);
    data.drafts.retain(|d| d.integration_id != id);
    record.intended_state = "DELETED".to_owned();
    Ok(Json(record.to_json()))
}

async fn get_config(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    show_integration(&sim, &id, IntegrationRecord::config_json)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutConfig {
    name: Option<String>,
    version: Option<i64>,
    properties: Option<Value>,
    advanced: Option<Value>,
    notes: Option<String>,
    credentials: Option<Map<String, Value>>,
}

async fn put_config(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(body): GJson<PutConfig>,
) -> Result<Json<Value>, GenesysError> {
    let mut data = sim.data();
    let mut credentials = Map::new();
    for (key, reference) in body.credentials.unwrap_or_default() {
        let cred_id = reference.get("id").and_then(Value::as_str).ok_or_else(|| {
            GenesysError::bad_request(format!("credentials.{key}.id is required"))
        })?;
        let credential = data
            .credentials
            .iter()
            .find(|c| c.id == cred_id)
            .ok_or_else(|| {
                GenesysError::bad_request(format!("Credential {cred_id} does not exist"))
                    .with_detail_code("invalid.value")
            })?;
        credentials.insert(
            key,
            json!({ "id": credential.id, "name": credential.name, "type": credential.type_json(), "selfUri": format!("/api/v2/integrations/credentials/{}", credential.id) }),
        );
    }
    let record = data
        .integrations
        .iter_mut()
        .find(|i| i.id == id)
        .ok_or_else(|| not_found_integration(&id))?;
    let version = body
        .version
        .ok_or_else(|| GenesysError::bad_request("version is required"))?;
    if version != record.config.version {
        return Err(GenesysError::conflict(format!(
            "The configuration version {version} does not match the current version {}",
            record.config.version
        )));
    }
    record.config = IntegrationConfig {
        name: body
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| record.config.name.clone()),
        version: version + 1,
        properties: body.properties.unwrap_or_else(|| json!({})),
        advanced: body.advanced.unwrap_or_else(|| json!({})),
        notes: body.notes.unwrap_or_default(),
        credentials,
    };
    record.modified = Utc::now();
    Ok(Json(record.config_json()))
}

/// A credential type given as `"basicAuth"` or as Genesys' `CredentialType` `{"name": ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CredentialTypeInput {
    Object { name: String },
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialInput {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<CredentialTypeInput>,
    credential_fields: Option<Map<String, Value>>,
}

/// A validated credential: name, type name, fields.
type CheckedCredential = (String, String, Vec<(String, SecretString)>);

fn checked_credential(input: CredentialInput) -> Result<CheckedCredential, GenesysError> {
    let type_name = match input.kind {
        Some(CredentialTypeInput::Object { name } | CredentialTypeInput::Name(name)) => name,
        None => return Err(GenesysError::bad_request("type.name is required")),
    };
    if !CREDENTIAL_TYPES.contains(&type_name.as_str()) {
        return Err(GenesysError::bad_request(format!(
            "Credential type {type_name} is not supported; use one of {}",
            CREDENTIAL_TYPES.join(", ")
        )));
    }
    let mut fields = Vec::new();
    for (key, value) in input.credential_fields.unwrap_or_default() {
        let Value::String(text) = value else {
            return Err(GenesysError::bad_request(format!(
                "credentialFields.{key} must be a string"
            )));
        };
        fields.push((key, SecretString::from(text)));
    }
    if type_name == "basicAuth" {
        for required in ["userName", "password"] {
            if !fields
                .iter()
                .any(|(k, v)| k == required && !v.expose_secret().is_empty())
            {
                return Err(GenesysError::bad_request(format!(
                    "credentialFields.{required} is required for basicAuth credentials"
                ))
                .with_detail_code("invalid.value"));
            }
        }
    }
    let name = input
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| type_name.clone());
    Ok((name, type_name, fields))
}

async fn create_credential(
    State(sim): State<Arc<Sim>>,
    GJson(input): GJson<CredentialInput>,
) -> Result<Json<Value>, GenesysError> {
    let (name, type_name, fields) = checked_credential(input)?;
    let now = Utc::now();
    let record = CredentialRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        type_name,
        fields,
        created: now,
        modified: now,
    };
    let answer = record.info_json();
    sim.data().credentials.push(record);
    Ok(Json(answer))
}

async fn list_credentials(
    State(sim): State<Arc<Sim>>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    let all = sim
        .data()
        .credentials
        .iter()
        .map(CredentialRecord::info_json)
        .collect();
    Ok(Json(page.envelope(
        all,
        "/api/v2/integrations/credentials",
        "",
    )))
}

fn not_found_credential(id: &str) -> GenesysError {
    GenesysError::not_found(format!("Credential {id} not found"))
}

async fn get_credential(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    sim.data()
        .credentials
        .iter()
        .find(|c| c.id == id)
        .map(|c| Json(c.to_json()))
        .ok_or_else(|| not_found_credential(&id))
}

async fn update_credential(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<CredentialInput>,
) -> Result<Json<Value>, GenesysError> {
    let (name, type_name, fields) = checked_credential(input)?;
    let mut data = sim.data();
    let record = data
        .credentials
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found_credential(&id))?;
    record.name = name;
    record.type_name = type_name;
    record.fields = fields;
    record.modified = Utc::now();
    Ok(Json(record.info_json()))
}

async fn delete_credential(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    remove(&mut sim.data().credentials, |c| c.id == id).ok_or_else(|| not_found_credential(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaIn {
    input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaOut {
    success_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ContractInput {
    input: Option<SchemaIn>,
    output: Option<SchemaOut>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostActionInput {
    category: Option<String>,
    name: Option<String>,
    integration_id: Option<String>,
    config: Option<Value>,
    contract: Option<ContractInput>,
    secure: Option<bool>,
}

/// 400 for an action definition Genesys refuses; like Genesys' own create-time validation
/// errors, `details[0].errorCode` is `ACTION.PROCESSING`.
fn invalid_action(message: impl Into<String>) -> GenesysError {
    GenesysError::bad_request(message).with_detail_code("ACTION.PROCESSING")
}

/// Validates an action's `config` and fills Genesys' defaults (`requestTemplate`
/// `${input.rawRequest}`, empty headers and translation maps, `successTemplate`
/// `${rawResult}`).
fn normalized_config(config: Value) -> Result<Value, GenesysError> {
    let parsed = execution::ActionConfig::parse(&config).map_err(invalid_action)?;
    if !REQUEST_TYPES.contains(&parsed.request.request_type.as_str()) {
        return Err(invalid_action(format!(
            "config.request.requestType must be one of {}",
            REQUEST_TYPES.join(", ")
        )));
    }
    if parsed.request.request_url_template.trim().is_empty() {
        return Err(invalid_action(
            "config.request.requestUrlTemplate is required",
        ));
    }
    if let Some(timeout) = parsed.timeout_seconds
        && !(1..=60).contains(&timeout)
    {
        return Err(invalid_action(
            "config.timeoutSeconds must be between 1 and 60",
        ));
    }
    for (name, path) in &parsed.response.translation_map {
        execution::compile_path(path).map_err(|err| {
            invalid_action(format!("config.response.translationMap.{name}: {err}"))
        })?;
    }
    let mut config = config;
    let request = &mut config["request"];
    if request.get("headers").is_none_or(Value::is_null) {
        request["headers"] = json!({});
    }
    if request.get("requestTemplate").is_none_or(Value::is_null) {
        request["requestTemplate"] = json!("${input.rawRequest}");
    }
    if config.get("response").is_none_or(Value::is_null) {
        config["response"] = json!({});
    }
    let response = &mut config["response"];
    if response.get("translationMap").is_none_or(Value::is_null) {
        response["translationMap"] = json!({});
    }
    if response
        .get("translationMapDefaults")
        .is_none_or(Value::is_null)
    {
        response["translationMapDefaults"] = json!({});
    }
    if response.get("successTemplate").is_none_or(Value::is_null) {
        response["successTemplate"] = json!("${rawResult}");
    }
    Ok(config)
}

/// Top-level fields of Genesys' `JsonSchemaDocument`, the type a contract's schemas are
/// stored as.
const SCHEMA_DOCUMENT_FIELDS: &[&str] = &[
    "id",
    "$schema",
    "title",
    "description",
    "type",
    "required",
    "properties",
    "additionalProperties",
];

/// A contract schema as Genesys stores it: a JSON object, reduced to the top-level fields of
/// `JsonSchemaDocument`.
fn checked_schema(schema: Option<Value>, field: &str) -> Result<Value, GenesysError> {
    match schema {
        Some(Value::Object(mut map)) => {
            map.retain(|key, _| SCHEMA_DOCUMENT_FIELDS.contains(&key.as_str()));
            Ok(Value::Object(map))
        }
        _ => Err(invalid_action(format!(
            "{field} must be a JSON Schema object"
        ))),
    }
}

async fn create_action(
    State(sim): State<Arc<Sim>>,
    GJson(input): GJson<PostActionInput>,
) -> Result<Json<Value>, GenesysError> {
    let name = input
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid_action("name is required"))?;
    let integration_id = input
        .integration_id
        .ok_or_else(|| invalid_action("integrationId is required"))?;
    let config = normalized_config(
        input
            .config
            .ok_or_else(|| invalid_action("config is required"))?,
    )?;
    let contract = input
        .contract
        .ok_or_else(|| invalid_action("contract is required"))?;
    let input_schema = checked_schema(
        contract.input.and_then(|i| i.input_schema),
        "contract.input.inputSchema",
    )?;
    let success_schema = checked_schema(
        contract.output.and_then(|o| o.success_schema),
        "contract.output.successSchema",
    )?;
    let mut data = sim.data();
    let integration = data
        .integrations
        .iter()
        .find(|i| i.id == integration_id)
        .ok_or_else(|| invalid_action(format!("Integration {integration_id} does not exist")))?;
    let category = input
        .category
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| integration.config.name.clone());
    if data
        .actions
        .iter()
        .any(|a| a.integration_id == integration_id && a.name == name)
    {
        return Err(invalid_action(format!(
            "An action named '{name}' already exists in integration {integration_id}"
        )));
    }
    let record = ActionRecord {
        id: format!("custom_-_{}", uuid::Uuid::new_v4()),
        name,
        integration_id,
        category,
        secure: input.secure.unwrap_or(false),
        version: 1,
        config,
        input_schema,
        success_schema,
    };
    let answer = record.to_json(ActionView::FULL);
    data.actions.push(record);
    Ok(Json(answer))
}

async fn list_actions(
    State(sim): State<Arc<Sim>>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    let view = ActionView::from_query(&query)?;
    let category = query.first("category");
    let name = query.first("name");
    let integration = query.first("integrationId");
    let ids = query.all("ids");
    let secure = query
        .first("secure")
        .map(|_| query.flag("secure", false))
        .transpose()?;
    let data = sim.data();
    let mut actions: Vec<&ActionRecord> = data
        .actions
        .iter()
        .filter(|a| category.is_none_or(|c| a.category == c))
        .filter(|a| name.is_none_or(|n| a.name == n))
        .filter(|a| integration.is_none_or(|i| a.integration_id == i))
        .filter(|a| ids.is_empty() || ids.contains(&a.id))
        .filter(|a| secure.is_none_or(|s| a.secure == s))
        .collect();
    actions.sort_by(|a, b| a.name.cmp(&b.name));
    if query
        .first("sortOrder")
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"))
    {
        actions.reverse();
    }
    let all = actions.into_iter().map(|a| a.to_json(view)).collect();
    Ok(Json(page.envelope(all, "/api/v2/integrations/actions", "")))
}

async fn get_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let view = ActionView::from_query(&query)?;
    sim.data()
        .actions
        .iter()
        .find(|a| a.id == id)
        .map(|a| Json(a.to_json(view)))
        .ok_or_else(|| ActionRecord::not_found(&id))
}

async fn get_action_schema(
    State(sim): State<Arc<Sim>>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Json<Value>, GenesysError> {
    let data = sim.data();
    let action = data
        .actions
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ActionRecord::not_found(&id))?;
    match file.as_str() {
        "inputSchema.json" => Ok(Json(action.input_schema.clone())),
        "successSchema.json" => Ok(Json(action.success_schema.clone())),
        _ => Err(GenesysError::not_found(format!("Schema {file} not found"))),
    }
}

/// What `UpdateActionInput` and `UpdateDraftInput` both change, with the `version` they
/// expect.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionChange {
    category: Option<String>,
    name: Option<String>,
    config: Option<Value>,
    version: Option<i64>,
}

/// Which record an update changes.
#[derive(Debug, Clone, Copy)]
enum Edited {
    /// The published action.
    Action,
    /// The action's draft.
    Draft,
}

impl Edited {
    fn records(self, data: &Data) -> &[ActionRecord] {
        match self {
            Self::Action => &data.actions,
            Self::Draft => &data.drafts,
        }
    }

    fn not_found(self, id: &str) -> GenesysError {
        match self {
            Self::Action => ActionRecord::not_found(id),
            Self::Draft => not_found_draft(id),
        }
    }

    /// How a conflict names the record.
    fn named(self, id: &str) -> String {
        match self {
            Self::Action => format!("action {id}"),
            Self::Draft => format!("the draft of action {id}"),
        }
    }
}

/// Applies `change` to the action or draft `id` — it must name that record's current version,
/// and a new name must not be another action's of the same integration — and bumps its
/// version; answers the changed record.
fn apply_change<'a>(
    data: &'a mut Data,
    edited: Edited,
    id: &str,
    change: ActionChange,
) -> Result<&'a mut ActionRecord, GenesysError> {
    let config = change.config.map(normalized_config).transpose()?;
    let records = edited.records(data);
    let Some(pos) = records.iter().position(|a| a.id == id) else {
        return Err(edited.not_found(id));
    };
    let version = change
        .version
        .ok_or_else(|| invalid_action("version is required"))?;
    let current = &records[pos];
    if version != current.version {
        return Err(GenesysError::conflict(format!(
            "Version {version} does not match the current version {} of {}",
            current.version,
            edited.named(id)
        )));
    }
    if let Some(name) = change.name.as_ref().filter(|n| !n.trim().is_empty())
        && data
            .actions
            .iter()
            .any(|a| a.id != id && a.integration_id == current.integration_id && &a.name == name)
    {
        return Err(invalid_action(format!(
            "An action named '{name}' already exists"
        )));
    }
    let record = match edited {
        Edited::Action => &mut data.actions[pos],
        Edited::Draft => &mut data.drafts[pos],
    };
    if let Some(name) = change.name.filter(|n| !n.trim().is_empty()) {
        record.name = name;
    }
    if let Some(category) = change.category.filter(|c| !c.trim().is_empty()) {
        record.category = category;
    }
    if let Some(config) = config {
        record.config = config;
    }
    record.version += 1;
    Ok(record)
}

/// `PATCH /api/v2/integrations/actions/{actionId}` (`UpdateActionInput`).
async fn update_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(change): GJson<ActionChange>,
) -> Result<Json<Value>, GenesysError> {
    let mut data = sim.data();
    let action = apply_change(&mut data, Edited::Action, &id, change)?;
    Ok(Json(action.to_json(ActionView::FULL)))
}

async fn delete_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    let mut data = sim.data();
    remove(&mut data.actions, |a| a.id == id).ok_or_else(|| ActionRecord::not_found(&id))?;
    data.drafts.retain(|d| d.id != id);
    Ok(StatusCode::NO_CONTENT)
}

fn not_found_draft(id: &str) -> GenesysError {
    GenesysError::not_found(format!("No draft of action {id} exists"))
}

/// `POST /api/v2/integrations/actions/{actionId}/draft`: a draft copied from the action.
async fn create_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    let mut data = sim.data();
    let action = data
        .actions
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ActionRecord::not_found(&id))?;
    if data.drafts.iter().any(|d| d.id == id) {
        return Err(GenesysError::conflict(format!(
            "A draft of action {id} already exists"
        )));
    }
    let draft = ActionRecord {
        version: 1,
        ..action.clone()
    };
    let answer = draft.to_json(ActionView::FULL);
    data.drafts.push(draft);
    Ok(Json(answer))
}

/// `GET /api/v2/integrations/actions/{actionId}/draft` (same views as the action).
async fn get_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let view = ActionView::from_query(&query)?;
    sim.data()
        .drafts
        .iter()
        .find(|d| d.id == id)
        .map(|d| Json(d.to_json(view)))
        .ok_or_else(|| not_found_draft(&id))
}

/// `DELETE /api/v2/integrations/actions/{actionId}/draft`.
async fn delete_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    remove(&mut sim.data().drafts, |d| d.id == id).ok_or_else(|| not_found_draft(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `UpdateDraftInput`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateDraftInput {
    #[serde(flatten)]
    change: ActionChange,
    contract: Option<ContractInput>,
    secure: Option<bool>,
}

/// `PATCH /api/v2/integrations/actions/{actionId}/draft`.
async fn update_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<UpdateDraftInput>,
) -> Result<Json<Value>, GenesysError> {
    let (input_schema, success_schema) = match input.contract {
        Some(contract) => (
            contract
                .input
                .map(|i| checked_schema(i.input_schema, "contract.input.inputSchema"))
                .transpose()?,
            contract
                .output
                .map(|o| checked_schema(o.success_schema, "contract.output.successSchema"))
                .transpose()?,
        ),
        None => (None, None),
    };
    let mut data = sim.data();
    let draft = apply_change(&mut data, Edited::Draft, &id, input.change)?;
    if let Some(schema) = input_schema {
        draft.input_schema = schema;
    }
    if let Some(schema) = success_schema {
        draft.success_schema = schema;
    }
    if let Some(secure) = input.secure {
        draft.secure = secure;
    }
    Ok(Json(draft.to_json(ActionView::FULL)))
}

/// `PublishDraftInput`.
#[derive(Debug, Deserialize)]
struct PublishDraftInput {
    version: Option<i64>,
}

/// `POST /api/v2/integrations/actions/{actionId}/draft/publish`: the draft becomes the action
/// (same id, version + 1) and is removed.
async fn publish_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<PublishDraftInput>,
) -> Result<Json<Value>, GenesysError> {
    let version = input
        .version
        .ok_or_else(|| invalid_action("version is required"))?;
    let mut data = sim.data();
    let Some(pos) = data.drafts.iter().position(|d| d.id == id) else {
        return Err(not_found_draft(&id));
    };
    if version != data.drafts[pos].version {
        return Err(GenesysError::conflict(format!(
            "Version {version} does not match the current version {} of the draft of action {id}",
            data.drafts[pos].version
        )));
    }
    let Some(action) = data.actions.iter().position(|a| a.id == id) else {
        data.drafts.remove(pos);
        return Err(ActionRecord::not_found(&id));
    };
    let draft = data.drafts.remove(pos);
    let published = &mut data.actions[action];
    *published = ActionRecord {
        version: published.version + 1,
        ..draft
    };
    Ok(Json(published.to_json(ActionView::FULL)))
}
