//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Two parts: the routes' own descriptions (collected from every capability's `#[utoipa::path]`
//! when the router is assembled), and one path per configured data action, `POST
//! /v1/actions/<name>`, with the action's input schema as the request body, its output schema
//! as the 200 answer and the error shape for every other answer — so that a client generated
//! from the document knows each action's contract, not only `{"type": "object"}`. The action
//! paths follow the action set being served: the document is rebuilt the first time it is asked
//! for after a reload swapped the set, and kept until the next one.
//!
//! A schema is embedded as it is. One that refers to its own definitions (`"$ref":
//! "#/$defs/…"`) gets an `$id` of its own when it has none, so that those references resolve
//! inside it rather than against the OpenAPI document.

use std::sync::{Arc, Mutex, Weak};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Map, Value, json};

use crate::auth::InboundAuth;
use crate::data_actions::{ActionRegistry, ActionSet, BoundAction};

/// The component every error answer refers to.
const ERROR_SCHEMA: &str = "Error";
/// The security scheme of a header credential on the data-action surface.
const HEADER_SCHEME: &str = "dataActionsKey";

/// The document's fixed part: title, version, the security schemes of the surfaces.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("genesys-gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Connects Genesys Cloud to an enterprise's systems. Every error answers \
                     {status, code, message, contextId, details, errors}. Each configured data \
                     action has its own path, POST /v1/actions/<name>, with its input and \
                     output schemas.",
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
    );
    doc
}

/// The document: the routes' part, and the action paths of the set last rendered.
pub(super) struct OpenApiDoc {
    routes: Value,
    actions: ActionRegistry,
    /// The set the cached document was built from (held weakly: its allocation, and so its
    /// address, stays reserved while the weak reference lives), and the document.
    cache: Mutex<Option<(Weak<ActionSet>, Bytes)>>,
}

impl OpenApiDoc {
    /// A document of `routes` (as assembled) plus the actions `actions` serves.
    pub(super) fn new(routes: &utoipa::openapi::OpenApi, actions: ActionRegistry) -> Self {
        Self {
            routes: serde_json::to_value(routes).unwrap_or_else(|_| json!({})),
            actions,
            cache: Mutex::new(None),
        }
    }

    /// The document as JSON bytes, rebuilt when the action set changed since the last call.
    pub(super) fn render(&self) -> Bytes {
        let set = self.actions.load();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((built_from, doc)) = cache.as_ref()
            && std::ptr::eq(built_from.as_ptr(), Arc::as_ptr(&set))
        {
            return doc.clone();
        }
        let doc = Bytes::from(serde_json::to_vec(&self.build(&set)).unwrap_or_default());
        *cache = Some((Arc::downgrade(&set), doc.clone()));
        doc
    }

    /// The whole document for `set`.
    fn build(&self, set: &ActionSet) -> Value {
        let mut doc = self.routes.clone();
        let Some(root) = doc.as_object_mut() else {
            return doc;
        };
        let components = object(root, "components");
        object(components, "schemas").insert(ERROR_SCHEMA.to_owned(), error_schema());
        let security = match set.auth() {
            InboundAuth::None => json!([]),
            InboundAuth::Basic { .. } | InboundAuth::Bearer { .. } => json!([{"basic": []}]),
            InboundAuth::Header { display, .. } => {
                object(components, "securitySchemes").insert(
                    HEADER_SCHEME.to_owned(),
                    json!({"type": "apiKey", "in": "header", "name": &**display}),
                );
                json!([{ HEADER_SCHEME: [] }])
            }
        };
        let paths = object(root, "paths");
        for bound in set.iter() {
            let name = bound.action().name().as_str();
            paths.insert(
                format!("/v1/actions/{name}"),
                json!({ "post": action_operation(bound, &security) }),
            );
        }
        doc
    }
}

/// The object under `key` of `map`, made when missing (or not an object).
fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

/// `POST /v1/actions/<name>` of one action.
fn action_operation(bound: &BoundAction, security: &Value) -> Value {
    let action = bound.action();
    let name = action.name().as_str();
    let schema = |doc: Option<&crate::json::Schema>, side: &str| match doc {
        Some(schema) => self_contained(schema.document(), name, side),
        None => json!({"type": "object"}),
    };
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {
                "$ref": format!("#/components/schemas/{ERROR_SCHEMA}")
            }}},
        })
    };
    json!({
        "tags": ["data actions"],
        "operationId": format!("action_{name}"),
        "summary": format!("Runs the data action `{name}`"),
        "description": format!(
            "Calls `{} {}` on the upstream `{}` (deadline {} ms, retries included).",
            action.method(),
            action.path(),
            action.upstream(),
            action.timeout().as_millis(),
        ),
        "security": security,
        "requestBody": {
            "required": true,
            "description": "The action's input object",
            "content": {"application/json": {
                "schema": schema(action.input_schema(), "input")
            }},
        },
        "responses": {
            "200": {
                "description": "The output object",
                "content": {"application/json": {
                    "schema": schema(action.output_schema(), "output")
                }},
            },
            "400": error("`invalid.input`: the input fails the schema or lacks a required value; `bad.request`: not JSON"),
            "401": error("Missing or wrong credentials"),
            "413": error("`payload.too.large`"),
            "415": error("`unsupported.media.type`: the body is not JSON"),
            "422": error("`output.invalid`: the upstream's answer fails the output schema"),
            "502": error("`upstream.error`: the upstream answered a status that is not retried"),
            "503": error("`upstream.unavailable` or `circuit.open` (with `Retry-After` when known)"),
            "504": error("`request.timeout`: the action's deadline passed"),
        },
    })
}

/// `schema` as embedded in the document: with an `$id` of its own when it refers to its own
/// definitions and has none (see the module docs).
fn self_contained(schema: &Value, action: &str, side: &str) -> Value {
    let refers_to_itself = |doc: &Value| doc.to_string().contains("\"$ref\":\"#");
    match schema {
        Value::Object(map) if !map.contains_key("$id") && refers_to_itself(schema) => {
            let mut map = map.clone();
            map.insert(
                "$id".to_owned(),
                format!("urn:genesys-gateway:action:{action}:{side}").into(),
            );
            Value::Object(map)
        }
        other => other.clone(),
    }
}

/// The error shape every error answer has.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "The error shape of every error answer (Genesys' own).",
        "required": ["status", "code", "message", "contextId", "details", "errors"],
        "properties": {
            "status": {"type": "integer"},
            "code": {"type": "string", "examples": ["invalid.input", "upstream.error"]},
            "message": {"type": "string"},
            "contextId": {"type": "string", "description": "The request id (X-Request-Id)"},
            "details": {"type": "array", "items": {
                "type": "object",
                "required": ["fieldName", "errorCode", "message"],
                "properties": {
                    "fieldName": {"type": "string"},
                    "errorCode": {"type": "string"},
                    "message": {"type": "string"},
                },
            }},
            "errors": {"type": "array"},
        },
    })
}

/// The `/openapi.json` answer.
pub(super) fn answer(doc: &OpenApiDoc) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.render(),
    )
        .into_response()
}
