//! Integration records: the integration types Genesys offers, integrations with their current
//! configuration, credentials (whose field values are secrets, never shown back) and data
//! actions (a published action and its draft share one type), with the shapes Genesys shows
//! them in.

use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::sim::error::GenesysError;
use crate::sim::extract::QueryPairs;

/// The type of Web Services Data Actions integrations.
const CUSTOM_REST_ACTIONS: &str = "custom-rest-actions";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The integration types the simulator offers, as Genesys' `IntegrationType`s.
pub(crate) fn integration_types() -> Vec<Value> {
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

/// The integration type `id`.
pub(crate) fn integration_type(id: &str) -> Option<Value> {
    integration_types().into_iter().find(|t| t["id"] == id)
}

/// An integration's current configuration.
#[derive(Debug, Clone)]
pub(crate) struct IntegrationConfig {
    /// The integration's name.
    pub name: String,
    /// Bumped by each `PUT .../config/current`.
    pub version: i64,
    /// `properties`, as given.
    pub properties: Value,
    /// `advanced`, as given.
    pub advanced: Value,
    /// The notes.
    pub notes: String,
    /// Credential references by key: `{id, name, type, selfUri}`.
    pub credentials: Map<String, Value>,
}

/// An integration.
#[derive(Debug, Clone)]
pub(crate) struct IntegrationRecord {
    /// The id (a UUID).
    pub id: String,
    /// The integration type's id.
    pub type_id: String,
    /// `ENABLED`, `DISABLED` (or `DELETED` in the answer to a delete).
    pub intended_state: String,
    /// `attributes`, as given.
    pub attributes: Map<String, Value>,
    /// The current configuration.
    pub config: IntegrationConfig,
    /// When it last changed.
    pub modified: DateTime<Utc>,
}

impl IntegrationRecord {
    /// Genesys' `IntegrationConfiguration` (`GET .../config/current`).
    pub fn config_json(&self) -> Value {
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

    /// Genesys' `Integration`.
    pub fn to_json(&self) -> Value {
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
    /// The id (a UUID).
    pub id: String,
    /// The name.
    pub name: String,
    /// The credential type (`basicAuth`, ...).
    pub type_name: String,
    /// The fields; their values are secrets.
    pub fields: Vec<(String, SecretString)>,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When it last changed.
    pub modified: DateTime<Utc>,
}

impl CredentialRecord {
    fn field(&self, name: &str) -> Option<&SecretString> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Genesys' `CredentialType` of the credential.
    pub fn type_json(&self) -> Value {
        let required: &[&str] = if self.type_name == "basicAuth" {
            &["userName", "password"]
        } else {
            &[]
        };
        json!({ "name": self.type_name, "displayOrder": required, "required": required })
    }

    /// Genesys' `CredentialInfo`: no fields at all.
    pub fn info_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "createdDate": ts(self.created),
            "modifiedDate": ts(self.modified),
            "type": self.type_json(),
            "selfUri": format!("/api/v2/integrations/credentials/{}", self.id),
        })
    }

    /// Genesys' `Credential`, without its secret-looking fields.
    pub fn to_json(&self) -> Value {
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
    /// `custom_-_<uuid>`; a draft has its action's id.
    pub id: String,
    /// The name, unique in its integration.
    pub name: String,
    /// The integration it belongs to.
    pub integration_id: String,
    /// The category (the integration's name unless given).
    pub category: String,
    /// Whether its input and output are secure.
    pub secure: bool,
    /// Bumped by each change; a new draft starts at 1.
    pub version: i64,
    /// The `ActionConfig`, with Genesys' defaults filled in.
    pub config: Value,
    /// The contract's input schema.
    pub input_schema: Value,
    /// The contract's success schema.
    pub success_schema: Value,
}

/// How much of an action to show.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActionView {
    config: bool,
    contract: bool,
}

impl ActionView {
    /// Everything: the config and the contract's schemas.
    pub const FULL: Self = Self {
        config: true,
        contract: true,
    };

    /// The view a `GET` asks for: `includeConfig=true`, `expand=contract`.
    ///
    /// # Errors
    /// 400 when `includeConfig` is not a boolean.
    pub fn from_query(query: &QueryPairs) -> Result<Self, GenesysError> {
        Ok(Self {
            config: query.flag("includeConfig", false)?,
            contract: query.all("expand").iter().any(|e| e == "contract"),
        })
    }
}

impl ActionRecord {
    /// 404 for the action `id` that does not exist.
    pub fn not_found(id: &str) -> GenesysError {
        GenesysError::not_found(format!("Action {id} not found"))
    }

    /// Genesys' `Action`, with what `view` shows.
    pub fn to_json(&self, view: ActionView) -> Value {
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
