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
use chrono::{DateTime, SecondsFormat, Utc};
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::GenesysError;
use super::execution;
use super::extract::{GJson, QueryPairs};
use super::paging::Page;
use super::state::Sim;

/// The type of Web Services Data Actions integrations.
pub(crate) const CUSTOM_REST_ACTIONS: &str = "custom-rest-actions";
/// Credential types an integration may reference.
const CREDENTIAL_TYPES: &[&str] = &["basicAuth", "userDefined", "userDefinedOAuth"];
/// HTTP methods a web services action may use.
const REQUEST_TYPES: &[&str] = &["GET", "PUT", "POST", "PATCH", "DELETE"];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn integration_types() -> Vec<Value> {
    let credentials = |types: &[&str]| json!({ "basicAuth": { "required": false, "title": "Credentials", "credentialTypes": types } });
    [
        (
            CUSTOM_REST_ACTIONS,
            "Web Services Data Actions",
            "Allows an organization to create data actions that call web services.",
            credentials(&["basicAuth", "userDefined", "userDefinedOAuth"]),
        ),
        (
            "purecloud-data-actions",
            "Genesys Cloud Data Actions",
            "Allows an organization to create data actions that call the Genesys Cloud Platform API.",
            json!({ "pureCloudOAuthClient": { "required": true, "title": "Credentials", "credentialTypes": ["pureCloudOAuthClient"] } }),
        ),
        (
            "embedded-client-app",
            "Client Application",
            "Embeds a third-party web application in Genesys Cloud.",
            json!({}),
        ),
    ]
    .into_iter()
    .map(|(id, name, description, credentials)| {
        json!({
            "id": id,
            "name": name,
            "description": description,
            "provider": "clientapps",
            "category": if id == "embedded-client-app" { "Client Apps" } else { "Data Actions" },
            "images": [],
            "configPropertiesSchemaUri": format!("/api/v2/integrations/types/{id}/configschemas/properties"),
            "configAdvancedSchemaUri": format!("/api/v2/integrations/types/{id}/configschemas/advanced"),
            "helpUri": "https://help.mypurecloud.com/",
            "termsOfServiceUri": "https://www.genesys.com/",
            "vendorName": "Genesys",
            "vendorWebsiteUri": "https://www.genesys.com/",
            "helpLinks": [],
            "credentials": credentials,
            "nonInstallable": false,
            "maxInstances": 100,
            "userPermissions": [],
            "selfUri": format!("/api/v2/integrations/types/{id}"),
        })
    })
    .collect()
}

fn integration_type(id: &str) -> Option<Value> {
    integration_types().into_iter().find(|t| t["id"] == id)
}

/// An integration's current configuration.
#[derive(Debug, Clone)]
struct IntegrationConfig {
    name: String,
    version: i64,
    properties: Value,
    advanced: Value,
    notes: String,
    credentials: Map<String, Value>,
}

/// An integration.
#[derive(Debug, Clone)]
pub(crate) struct IntegrationRecord {
    id: String,
    type_id: String,
    intended_state: String,
    attributes: Map<String, Value>,
    config: IntegrationConfig,
    modified: DateTime<Utc>,
}

impl IntegrationRecord {
    fn config_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.config.name,
            "version": self.config.version,
            "properties": self.config.properties,
            "advanced": self.config.advanced,
            "notes": self.config.notes,
            "credentials": self.config.credentials,
            "selfUri": format!("/api/v2/integrations/{}/config/current", self.id),
        })
    }

    fn to_json(&self) -> Value {
        let active = self.intended_state == "ENABLED";
        json!({
            "id": self.id,
            "name": self.config.name,
            "integrationType": integration_type(&self.type_id).unwrap_or_else(|| json!({ "id": self.type_id })),
            "notes": self.config.notes,
            "intendedState": self.intended_state,
            "config": { "current": self.config_json() },
            "reportedState": {
                "code": if active { "ACTIVE" } else { "INACTIVE" },
                "effective": if active { "Active" } else { "Inactive" },
                "detail": { "localizableMessageCode": if active { "integration.state.active" } else { "integration.state.inactive" }, "messageParams": {} },
                "lastUpdated": ts(self.modified),
            },
            "attributes": self.attributes,
            "selfUri": format!("/api/v2/integrations/{}", self.id),
        })
    }

    /// The Basic credential (`userName`, `password`) the integration's configuration points at.
    pub fn basic_credential<'a>(
        &self,
        credentials: &'a [CredentialRecord],
    ) -> Option<(&'a str, &'a SecretString)> {
        self.config.credentials.values().find_map(|reference| {
            let id = reference.get("id")?.as_str()?;
            let credential = credentials
                .iter()
                .find(|c| c.id == id && c.type_name == "basicAuth")?;
            Some((
                credential.field("userName")?.expose_secret(),
                credential.field("password")?,
            ))
        })
    }
}

/// A credential; field values are secrets.
#[derive(Debug, Clone)]
pub(crate) struct CredentialRecord {
    id: String,
    name: String,
    type_name: String,
    fields: Vec<(String, SecretString)>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
}

impl CredentialRecord {
    fn field(&self, name: &str) -> Option<&SecretString> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn type_json(&self) -> Value {
        let required: &[&str] = if self.type_name == "basicAuth" {
            &["userName", "password"]
        } else {
            &[]
        };
        json!({ "name": self.type_name, "displayOrder": required, "required": required })
    }

    fn info_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "createdDate": ts(self.created),
            "modifiedDate": ts(self.modified),
            "type": self.type_json(),
            "selfUri": format!("/api/v2/integrations/credentials/{}", self.id),
        })
    }

    fn to_json(&self) -> Value {
        let visible: Map<String, Value> = self
            .fields
            .iter()
            .filter(|(k, _)| !is_secret_field(k))
            .map(|(k, v)| (k.clone(), json!(v.expose_secret())))
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "type": self.type_json(),
            "credentialFields": visible,
            "selfUri": format!("/api/v2/integrations/credentials/{}", self.id),
        })
    }
}

fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("password") || lower.contains("secret") || lower.contains("token")
}

/// A data action.
#[derive(Debug, Clone)]
pub(crate) struct ActionRecord {
    pub id: String,
    pub name: String,
    pub integration_id: String,
    pub category: String,
    pub secure: bool,
    pub version: i64,
    pub config: Value,
    pub input_schema: Value,
    pub success_schema: Value,
}

/// How much of an action to show.
#[derive(Debug, Clone, Copy)]
struct ActionView {
    config: bool,
    contract: bool,
}

impl ActionView {
    const FULL: Self = Self {
        config: true,
        contract: true,
    };

    fn from_query(query: &QueryPairs) -> Result<Self, GenesysError> {
        Ok(Self {
            config: query.flag("includeConfig", false)?,
            contract: query.all("expand").iter().any(|e| e == "contract"),
        })
    }
}

impl ActionRecord {
    fn to_json(&self, view: ActionView) -> Value {
        let schema_uri =
            |file: &str| format!("/api/v2/integrations/actions/{}/schemas/{file}", self.id);
        let contract = if view.contract {
            json!({ "input": { "inputSchema": self.input_schema }, "output": { "successSchema": self.success_schema } })
        } else {
            json!({ "input": { "inputSchemaUri": schema_uri("inputSchema.json") }, "output": { "successSchemaUri": schema_uri("successSchema.json") } })
        };
        let mut action = json!({
            "id": self.id,
            "name": self.name,
            "integrationId": self.integration_id,
            "category": self.category,
            "contract": contract,
            "version": self.version,
            "secure": self.secure,
            "selfUri": format!("/api/v2/integrations/actions/{}", self.id),
        });
        if view.config {
            action["config"] = self.config.clone();
        }
        action
    }
}

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
    sim.data()
        .integrations
        .iter()
        .find(|i| i.id == id)
        .map(|i| Json(i.to_json()))
        .ok_or_else(|| not_found_integration(&id))
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
    sim.data()
        .integrations
        .iter()
        .find(|i| i.id == id)
        .map(|i| Json(i.config_json()))
        .ok_or_else(|| not_found_integration(&id))
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
    let mut data = sim.data();
    let before = data.credentials.len();
    data.credentials.retain(|c| c.id != id);
    if data.credentials.len() == before {
        return Err(not_found_credential(&id));
    }
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

fn not_found_action(id: &str) -> GenesysError {
    GenesysError::not_found(format!("Action {id} not found"))
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
        .ok_or_else(|| not_found_action(&id))
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
        .ok_or_else(|| not_found_action(&id))?;
    match file.as_str() {
        "inputSchema.json" => Ok(Json(action.input_schema.clone())),
        "successSchema.json" => Ok(Json(action.success_schema.clone())),
        _ => Err(GenesysError::not_found(format!("Schema {file} not found"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateActionInput {
    category: Option<String>,
    name: Option<String>,
    config: Option<Value>,
    version: Option<i64>,
}

async fn update_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<UpdateActionInput>,
) -> Result<Json<Value>, GenesysError> {
    let config = input.config.map(normalized_config).transpose()?;
    let mut data = sim.data();
    let Some(pos) = data.actions.iter().position(|a| a.id == id) else {
        return Err(not_found_action(&id));
    };
    let version = input
        .version
        .ok_or_else(|| invalid_action("version is required"))?;
    let current = &data.actions[pos];
    if version != current.version {
        return Err(GenesysError::conflict(format!(
            "Version {version} does not match the current version {} of action {id}",
            current.version
        )));
    }
    if let Some(name) = input.name.as_ref().filter(|n| !n.trim().is_empty())
        && data
            .actions
            .iter()
            .any(|a| a.id != id && a.integration_id == current.integration_id && &a.name == name)
    {
        return Err(invalid_action(format!(
            "An action named '{name}' already exists"
        )));
    }
    let action = &mut data.actions[pos];
    if let Some(name) = input.name.filter(|n| !n.trim().is_empty()) {
        action.name = name;
    }
    if let Some(category) = input.category.filter(|c| !c.trim().is_empty()) {
        action.category = category;
    }
    if let Some(config) = config {
        action.config = config;
    }
    action.version += 1;
    Ok(Json(action.to_json(ActionView::FULL)))
}

async fn delete_action(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<StatusCode, GenesysError> {
    let mut data = sim.data();
    let before = data.actions.len();
    data.actions.retain(|a| a.id != id);
    if data.actions.len() == before {
        return Err(not_found_action(&id));
    }
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
        .ok_or_else(|| not_found_action(&id))?;
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
    let mut data = sim.data();
    let before = data.drafts.len();
    data.drafts.retain(|d| d.id != id);
    if data.drafts.len() == before {
        return Err(not_found_draft(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `UpdateDraftInput`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateDraftInput {
    category: Option<String>,
    name: Option<String>,
    config: Option<Value>,
    contract: Option<ContractInput>,
    secure: Option<bool>,
    version: Option<i64>,
}

/// `PATCH /api/v2/integrations/actions/{actionId}/draft`.
async fn update_draft(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    GJson(input): GJson<UpdateDraftInput>,
) -> Result<Json<Value>, GenesysError> {
    let config = input.config.map(normalized_config).transpose()?;
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
    let Some(pos) = data.drafts.iter().position(|d| d.id == id) else {
        return Err(not_found_draft(&id));
    };
    let version = input
        .version
        .ok_or_else(|| invalid_action("version is required"))?;
    let current = &data.drafts[pos];
    if version != current.version {
        return Err(GenesysError::conflict(format!(
            "Version {version} does not match the current version {} of the draft of action {id}",
            current.version
        )));
    }
    if let Some(name) = input.name.as_ref().filter(|n| !n.trim().is_empty())
        && data
            .actions
            .iter()
            .any(|a| a.id != id && a.integration_id == current.integration_id && &a.name == name)
    {
        return Err(invalid_action(format!(
            "An action named '{name}' already exists"
        )));
    }
    let draft = &mut data.drafts[pos];
    if let Some(name) = input.name.filter(|n| !n.trim().is_empty()) {
        draft.name = name;
    }
    if let Some(category) = input.category.filter(|c| !c.trim().is_empty()) {
        draft.category = category;
    }
    if let Some(config) = config {
        draft.config = config;
    }
    if let Some(schema) = input_schema {
        draft.input_schema = schema;
    }
    if let Some(schema) = success_schema {
        draft.success_schema = schema;
    }
    if let Some(secure) = input.secure {
        draft.secure = secure;
    }
    draft.version += 1;
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
        return Err(not_found_action(&id));
    };
    let draft = data.drafts.remove(pos);
    let published = &mut data.actions[action];
    *published = ActionRecord {
        version: published.version + 1,
        ..draft
    };
    Ok(Json(published.to_json(ActionView::FULL)))
}

/// The action `id` with its integration's Basic credential, for execution.
pub(crate) fn action_for_execution(
    sim: &Sim,
    id: &str,
) -> Result<(ActionRecord, Option<(String, SecretString)>), GenesysError> {
    let data = sim.data();
    let action = data
        .actions
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| not_found_action(id))?;
    let credential = data
        .integrations
        .iter()
        .find(|i| i.id == action.integration_id)
        .and_then(|i| i.basic_credential(&data.credentials))
        .map(|(user, password)| (user.to_owned(), password.clone()));
    Ok((action.clone(), credential))
}
