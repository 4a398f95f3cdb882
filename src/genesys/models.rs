//! Genesys Cloud API models: the fields the gateway uses, named as in the official SDKs
//! (camelCase on the wire), with `extra` keeping everything else where an entity is read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A reference to another entity (`{id, name, selfUri}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRef {
    /// Id.
    pub id: String,
    /// Name, when Genesys gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// URI of the entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

impl EntityRef {
    /// A reference by id only.
    pub fn id(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: None,
            self_uri: None,
        }
    }
}

/// Genesys' paged listing: `{entities, pageSize, pageNumber, total, pageCount, nextUri...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityListing<T> {
    /// The page's entities.
    #[serde(default = "Vec::new")]
    pub entities: Vec<T>,
    /// Page size.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Page number (1-based).
    #[serde(default)]
    pub page_number: Option<u32>,
    /// Total entities.
    #[serde(default)]
    pub total: Option<u64>,
    /// Total pages.
    #[serde(default)]
    pub page_count: Option<u32>,
    /// URI of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
}

/// Paging of list calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page number, from 1.
    pub number: u32,
    /// Entities per page (Genesys allows up to 100 for most lists).
    pub size: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            number: 1,
            size: 25,
        }
    }
}

// --- users and queues ------------------------------------------------------------------------

/// `User` (the fields the gateway reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Login name.
    #[serde(default)]
    pub username: Option<String>,
    /// `active`, `inactive`, `deleted`.
    #[serde(default)]
    pub state: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `Queue` (the fields the gateway reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// --- callbacks and conversations -------------------------------------------------------------

/// `RoutingData` of a callback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingData {
    /// Queue the callback is routed to.
    pub queue_id: String,
    /// Language skill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_id: Option<String>,
    /// Routing priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Skills.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skill_ids: Vec<String>,
    /// Preferred agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_agent_ids: Vec<String>,
}

/// `CreateCallbackCommand` (`POST /api/v2/conversations/callbacks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallbackCommand {
    /// Script shown to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<String>,
    /// Queue (older form; prefer `routing_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// Routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_data: Option<RoutingData>,
    /// Name of the person to call back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_user_name: Option<String>,
    /// Numbers to call (E.164).
    pub callback_numbers: Vec<String>,
    /// When to call back (ISO 8601 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_scheduled_time: Option<String>,
    /// Country code of the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Whether Genesys validates the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_callback_numbers: Option<bool>,
    /// Custom attributes (string values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// `CallbackIdentifier`: `{type, id}` (`type` is `EXTERNAL` or `ACD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackIdentifier {
    /// `EXTERNAL` or `ACD`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The communication id.
    pub id: String,
}

/// `CreateCallbackResponse`: `{conversation: {id}, callbackIdentifiers: [{type, id}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallbackResponse {
    /// The new conversation.
    pub conversation: EntityRef,
    /// The callback communications.
    #[serde(default)]
    pub callback_identifiers: Vec<CallbackIdentifier>,
}

/// `CallbackDisconnectIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackDisconnectIdentifier {
    /// Conversation id.
    pub conversation_id: String,
    /// Callback communication id.
    pub callback_id: String,
}

/// `BulkCallbackDisconnectRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkCallbackDisconnectRequest {
    /// The callbacks to disconnect.
    pub callback_disconnect_identifiers: Vec<CallbackDisconnectIdentifier>,
}

/// `Conversation` (`GET /api/v2/conversations/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// Id.
    pub id: String,
    /// Start (ISO 8601).
    #[serde(default)]
    pub start_time: Option<String>,
    /// End (ISO 8601), once ended.
    #[serde(default)]
    pub end_time: Option<String>,
    /// Participants.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `Participant` of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Id.
    pub id: String,
    /// `customer`, `acd`, `agent`...
    #[serde(default)]
    pub purpose: Option<String>,
    /// Queue of an `acd` participant.
    #[serde(default)]
    pub queue_id: Option<String>,
    /// Connected (ISO 8601), once connected.
    #[serde(default)]
    pub connected_time: Option<String>,
    /// End (ISO 8601), once ended.
    #[serde(default)]
    pub end_time: Option<String>,
    /// Custom attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Callback communications.
    #[serde(default)]
    pub callbacks: Vec<Callback>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `Callback` communication of a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    /// Communication id.
    pub id: String,
    /// `scheduled`, `alerting`, `dialing`, `contacting`, `offering`, `connected`,
    /// `disconnected`, `terminated`, `none`.
    #[serde(default)]
    pub state: Option<String>,
    /// How it ended.
    #[serde(default)]
    pub disconnect_type: Option<String>,
    /// Numbers.
    #[serde(default)]
    pub callback_numbers: Vec<String>,
    /// Scheduled time (ISO 8601).
    #[serde(default)]
    pub callback_scheduled_time: Option<String>,
    /// Connected (ISO 8601), once connected.
    #[serde(default)]
    pub connected_time: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// --- notifications ---------------------------------------------------------------------------

/// `Channel`: `{connectUri, id, expires}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// WebSocket URI (`wss://streaming.<region>/channels/<id>`).
    pub connect_uri: String,
    /// Channel id.
    pub id: String,
    /// Expiry (ISO 8601), 24 h after creation unless used.
    #[serde(default)]
    pub expires: Option<String>,
}

/// `ChannelTopic`: a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTopic {
    /// The topic name.
    pub id: String,
    /// `Permitted` / `Rejected`, when Genesys says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl ChannelTopic {
    /// A topic to subscribe to.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: None,
        }
    }
}

/// A list of entities without paging (`ChannelEntityListing`, `ChannelTopicEntityListing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entities<T> {
    /// The entities.
    #[serde(default = "Vec::new")]
    pub entities: Vec<T>,
}

// --- integrations ----------------------------------------------------------------------------

/// `IntegrationType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationType {
    /// Id (`custom-rest-actions`...).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `CreateIntegrationRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIntegrationRequest {
    /// The type (`{id: "custom-rest-actions"}`).
    pub integration_type: EntityRef,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// `Integration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Type.
    #[serde(default)]
    pub integration_type: Option<EntityRef>,
    /// Notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// `ENABLED`, `DISABLED`, `DELETED`.
    #[serde(default)]
    pub intended_state: Option<String>,
    /// The state Genesys reports (`{code, effective, detail}`).
    #[serde(default)]
    pub reported_state: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `PATCH /api/v2/integrations/{id}` (only what is set is sent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationPatch {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended_state: Option<String>,
}

/// `IntegrationConfiguration` (`/api/v2/integrations/{id}/config/current`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationConfiguration {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version (must be echoed on update).
    #[serde(default)]
    pub version: u32,
    /// Type-specific properties.
    #[serde(default)]
    pub properties: Value,
    /// Advanced settings.
    #[serde(default)]
    pub advanced: Value,
    /// Notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Credentials by role (`{"basicAuth": {"id": "..."}}`).
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialRef>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `CredentialInfo` as referenced from a configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRef {
    /// Credential id.
    pub id: String,
    /// Everything else (`type`, `name`...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `Credential` (`POST /api/v2/integrations/credentials`). `credential_fields` carries secrets:
/// build it at the call and drop it after.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// Name.
    pub name: String,
    /// Type (`{"name": "basicAuth"}`).
    #[serde(rename = "type")]
    pub kind: CredentialType,
    /// Fields (`userName`, `password` for `basicAuth`).
    pub credential_fields: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("credential_fields", &"[REDACTED]")
            .finish()
    }
}

/// `CredentialType`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialType {
    /// `basicAuth`, `userDefined`...
    pub name: String,
}

/// `CredentialInfo` (the answer to creating a credential).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialInfo {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `RequestConfig` of a data action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRequestConfig {
    /// URL template (Velocity).
    pub request_url_template: String,
    /// `GET`, `POST`...
    pub request_type: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template (`${input.rawRequest}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_template: Option<String>,
}

/// `ResponseConfig` of a data action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponseConfig {
    /// Output name → JSONPath into the response.
    #[serde(default)]
    pub translation_map: BTreeMap<String, String>,
    /// Defaults of the translation map.
    #[serde(default)]
    pub translation_map_defaults: BTreeMap<String, String>,
    /// Success template (`${rawResult}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_template: Option<String>,
}

/// `ActionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionConfig {
    /// Request.
    pub request: ActionRequestConfig,
    /// Response.
    pub response: ActionResponseConfig,
    /// How long Genesys waits for the remote endpoint, 1–60 s (Genesys' default when absent).
    #[serde(
        default,
        rename = "timeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_seconds: Option<u32>,
}

/// `ActionContractInput`: the input and output JSON Schemas of a data action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionContract {
    /// `{"inputSchema": <schema>}`.
    #[serde(default)]
    pub input: ContractInput,
    /// `{"successSchema": <schema>}`.
    #[serde(default)]
    pub output: ContractOutput,
}

/// Input side of an [`ActionContract`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractInput {
    /// JSON Schema of the input (null in listings, which only link to it).
    #[serde(default)]
    pub input_schema: Value,
}

/// Output side of an [`ActionContract`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractOutput {
    /// JSON Schema of a successful output (null in listings).
    #[serde(default)]
    pub success_schema: Value,
}

/// `PostActionInput` (`POST /api/v2/integrations/actions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostActionInput {
    /// Category (`genesys-gateway`).
    pub category: String,
    /// Name.
    pub name: String,
    /// The integration it belongs to.
    pub integration_id: String,
    /// Request/response configuration.
    pub config: ActionConfig,
    /// Input/output contract.
    pub contract: ActionContract,
    /// Whether inputs/outputs are hidden from logs.
    #[serde(default)]
    pub secure: bool,
}

/// `UpdateActionInput` (`PATCH /api/v2/integrations/actions/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateActionInput {
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ActionConfig>,
    /// Version being updated (optimistic concurrency).
    pub version: u32,
}

/// `UpdateDraftInput` (`PATCH /api/v2/integrations/actions/{id}/draft`): unlike a published
/// action, a draft's contract can change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDraftInput {
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ActionConfig>,
    /// Input/output contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ActionContract>,
    /// Whether inputs/outputs are hidden from logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// The draft's current version (optimistic concurrency).
    pub version: u32,
}

/// `PublishDraftInput` (`POST /api/v2/integrations/actions/{id}/draft/publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishDraftInput {
    /// The draft's current version.
    pub version: u32,
}

/// `Action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// The integration.
    #[serde(default)]
    pub integration_id: Option<String>,
    /// Version.
    #[serde(default)]
    pub version: Option<u32>,
    /// Configuration (with `includeConfig=true`).
    #[serde(default)]
    pub config: Option<ActionConfig>,
    /// Contract (with `expand=contract`).
    #[serde(default)]
    pub contract: Option<ActionContract>,
    /// Secure.
    #[serde(default)]
    pub secure: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `TestExecutionResult` (`POST /api/v2/integrations/actions/{id}/test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestExecutionResult {
    /// Whether the action succeeded.
    #[serde(default)]
    pub success: bool,
    /// The steps executed.
    #[serde(default)]
    pub operations: Vec<Value>,
    /// The failure, when it failed.
    #[serde(default)]
    pub error: Option<super::ErrorBody>,
    /// The final output.
    #[serde(default)]
    pub final_result: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_use_the_sdk_wire_names() {
        let command = CreateCallbackCommand {
            routing_data: Some(RoutingData {
                queue_id: "q".to_owned(),
                ..RoutingData::default()
            }),
            callback_user_name: Some("Jane".to_owned()),
            callback_numbers: vec!["+1".to_owned()],
            callback_scheduled_time: Some("2030-01-01T00:00:00.000Z".to_owned()),
            data: [("k".to_owned(), "v".to_owned())].into(),
            ..CreateCallbackCommand::default()
        };
        assert_eq!(
            serde_json::to_value(&command).unwrap(),
            json!({"routingData": {"queueId": "q"}, "callbackUserName": "Jane",
                   "callbackNumbers": ["+1"], "callbackScheduledTime": "2030-01-01T00:00:00.000Z",
                   "data": {"k": "v"}})
        );
        let action = PostActionInput {
            category: "genesys-gateway".to_owned(),
            name: "a".to_owned(),
            integration_id: "i".to_owned(),
            config: ActionConfig {
                request: ActionRequestConfig {
                    request_url_template: "https://gw/v1/actions/a".to_owned(),
                    request_type: "POST".to_owned(),
                    headers: BTreeMap::new(),
                    request_template: Some("${input.rawRequest}".to_owned()),
                },
                response: ActionResponseConfig {
                    success_template: Some("${rawResult}".to_owned()),
                    ..ActionResponseConfig::default()
                },
                timeout_seconds: None,
            },
            contract: ActionContract {
                input: ContractInput {
                    input_schema: json!({"type": "object"}),
                },
                output: ContractOutput {
                    success_schema: json!({"type": "object"}),
                },
            },
            secure: false,
        };
        assert_eq!(
            serde_json::to_value(&action).unwrap(),
            json!({"category": "genesys-gateway", "name": "a", "integrationId": "i",
                   "config": {"request": {"requestUrlTemplate": "https://gw/v1/actions/a",
                                          "requestType": "POST", "headers": {},
                                          "requestTemplate": "${input.rawRequest}"},
                              "response": {"translationMap": {}, "translationMapDefaults": {},
                                           "successTemplate": "${rawResult}"}},
                   "contract": {"input": {"inputSchema": {"type": "object"}},
                                "output": {"successSchema": {"type": "object"}}},
                   "secure": false})
        );
        let credential = Credential {
            name: "gw".to_owned(),
            kind: CredentialType {
                name: "basicAuth".to_owned(),
            },
            credential_fields: [("userName".to_owned(), "u".to_owned())].into(),
        };
        assert_eq!(
            serde_json::to_value(&credential).unwrap(),
            json!({"name": "gw", "type": {"name": "basicAuth"}, "credentialFields": {"userName": "u"}})
        );
        assert!(!format!("{credential:?}").contains("\"u\""));
        assert_eq!(
            serde_json::to_value(BulkCallbackDisconnectRequest {
                callback_disconnect_identifiers: vec![CallbackDisconnectIdentifier {
                    conversation_id: "c".to_owned(),
                    callback_id: "b".to_owned(),
                }],
            })
            .unwrap(),
            json!({"callbackDisconnectIdentifiers": [{"conversationId": "c", "callbackId": "b"}]})
        );
    }

    #[test]
    fn responses_keep_unknown_fields() {
        let response: CreateCallbackResponse = serde_json::from_value(json!({
            "conversation": {"id": "c", "selfUri": "/api/v2/conversations/c"},
            "callbackIdentifiers": [{"type": "EXTERNAL", "id": "x"}]
        }))
        .unwrap();
        assert_eq!(response.conversation.id, "c");
        assert_eq!(response.callback_identifiers[0].kind, "EXTERNAL");
        let user: User =
            serde_json::from_value(json!({"id": "u", "name": "n", "division": {"id": "d"}}))
                .unwrap();
        assert_eq!(user.extra["division"]["id"], "d");
    }
}
