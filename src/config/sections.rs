//! The typed shape of every configuration section.
//!
//! These types only describe and deserialize; cross-field rules live in `validate.rs`.
//! Every secret is a [`SecretString`], so `Debug` output and logs show `[REDACTED]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

/// `[server]`: the HTTP listener and its limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    pub listen: String,
    /// Whole-request deadline; past it the request is answered 504 `request.timeout`.
    pub request_timeout_ms: u64,
    /// Largest accepted request body; larger bodies are answered 413 without being read whole.
    pub max_body_bytes: usize,
    /// Requests served at once; beyond, 503 `overloaded` with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// How long a graceful shutdown may take before the process exits anyway.
    pub shutdown_grace_ms: u64,
    /// Server threads, each with its own single-threaded runtime and its own listener socket on
    /// the shared port (`SO_REUSEPORT`). 0 = one per available core.
    pub io_threads: usize,
    /// Connections open at once across all threads; beyond, new connections are closed at once.
    pub max_connections: usize,
    /// Request headers must arrive within this; a keep-alive connection idle this long between
    /// requests is closed too.
    pub header_read_timeout_ms: u64,
    /// After SIGTERM/SIGINT, keep serving normally (with `/readyz` already 503) for this long
    /// before refusing new work, so load balancers see the instance leave. 0 = refuse at once.
    pub shutdown_delay_ms: u64,
    /// Largest request header block (request line and every header line together); beyond,
    /// 431 `headers.too.large` and the connection is closed. Also bounds the memory a
    /// connection holds while its headers arrive.
    pub max_header_bytes: usize,
    /// Connections one client address may hold open at once; beyond, that address's new
    /// connections are closed at once. 0 = no per-address limit (every connection comes from
    /// a load balancer).
    pub max_connections_per_client: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            request_timeout_ms: 30_000,
            max_body_bytes: 1_048_576,
            max_concurrent_requests: 2048,
            shutdown_grace_ms: 15_000,
            io_threads: 0,
            max_connections: 10_000,
            header_read_timeout_ms: 30_000,
            shutdown_delay_ms: 0,
            max_header_bytes: 32_768,
            max_connections_per_client: 1024,
        }
    }
}

impl ServerSettings {
    /// The parsed listen address (validated at load).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// [`Self::shutdown_delay_ms`] as a duration.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }
    /// [`Self::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// The number of server threads to run.
    pub fn io_thread_count(&self) -> usize {
        if self.io_threads > 0 {
            self.io_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `text` (human readable) or `json` (one object per line).
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://path` (relative to the config folder) or `postgres://user:pass@host/db`.
    /// Held as a secret: a Postgres URL may carry a password.
    pub url: SecretString,
    /// Days audit records are kept; older ones are deleted in the background (every 10 minutes,
    /// 1 000 rows per statement). 0 keeps them forever.
    pub audit_retention_days: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://data/gateway.db"),
            audit_retention_days: 30,
        }
    }
}

/// `[genesys]`: the Genesys Cloud org the gateway talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenesysSettings {
    /// Bare region domain (`mypurecloud.com`); `api.`, `login.` and `streaming.` are derived.
    pub region: String,
    /// Explicit API base URL (overrides the region).
    pub api_url: Option<String>,
    /// Explicit login base URL (overrides the region).
    pub login_url: Option<String>,
    /// OAuth client id (client credentials grant). Required unless `simulate`.
    pub client_id: Option<String>,
    /// OAuth client secret. Required unless `simulate`.
    pub client_secret: Option<SecretString>,
    /// Run the simulator in-process and point the client at it.
    pub simulate: bool,
    /// Where the in-process simulator listens (default: a free loopback port).
    pub simulator_listen: Option<String>,
    /// No message for this long on the notifications socket → reconnect.
    pub notifications_heartbeat_timeout_s: u64,
}

impl Default for GenesysSettings {
    fn default() -> Self {
        Self {
            region: "mypurecloud.com".to_owned(),
            api_url: None,
            login_url: None,
            client_id: None,
            client_secret: None,
            simulate: false,
            simulator_listen: None,
            notifications_heartbeat_timeout_s: 35,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// `[admin.auth]`.
    pub auth: AdminAuthSettings,
    /// Failed authentications one client address may make on `/admin` within a minute;
    /// beyond, that address is answered 429 `too.many.requests` (also with the right token)
    /// until the minute has passed.
    pub max_failed_auth_per_min: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            auth: AdminAuthSettings::default(),
            max_failed_auth_per_min: 20,
        }
    }
}

/// `[audit]`: how the audit log is kept from flooding.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Data-action execution records written individually per second, per action and
    /// outcome; beyond, one summary record per second per action and outcome stands for the
    /// rest (`detail.count`). 0 = every execution is written individually.
    pub execution_records_per_s: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            execution_records_per_s: 1000,
        }
    }
}

/// `[admin.auth]`: bearer tokens for `/admin`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum AdminAuthSettings {
    /// `Authorization: Bearer <token>`; empty strings are ignored; none left → `/admin` is 404.
    Bearer {
        /// Accepted tokens.
        #[serde(default)]
        tokens: Vec<SecretString>,
    },
    /// No admin surface at all.
    #[default]
    #[serde(skip)]
    Disabled,
}

/// `[[jwt_issuers]]`: who may sign tokens for the ingest surface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerSettings {
    /// Name referenced by `[ingest] auth.issuers`.
    pub name: String,
    /// Exact `iss` claim.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms.
    pub algorithms: Vec<String>,
    /// PEM file with one or more public keys (relative to the config folder).
    pub key_file: Option<PathBuf>,
    /// JWKS URL (alternative to `key_file`).
    pub jwks_url: Option<String>,
    /// Clock leeway, at most 60 s.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// `exp - iat` must not exceed this.
    #[serde(default = "default_token_lifetime")]
    pub max_token_lifetime_s: u64,
    /// Sandbox only: a PEM private key (relative to the config folder) that
    /// `genesys-gateway token` signs local test tokens with. The gateway itself never reads
    /// it; never set it in a deployment.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

fn default_leeway() -> u64 {
    30
}
fn default_token_lifetime() -> u64 {
    3600
}

/// `[upstreams.<name>]`: an HTTP API data actions (and the gateway) call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Base URL every action path is appended to.
    pub base_url: String,
    /// Per-attempt timeout.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
    /// Outbound authentication.
    #[serde(default)]
    pub auth: UpstreamAuthSettings,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetrySettings,
    /// Circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSettings,
    /// POSTs may be retried on any retryable failure, not only when certainly unprocessed.
    #[serde(default)]
    pub idempotent: bool,
}

fn default_upstream_timeout() -> u64 {
    5000
}

impl UpstreamSettings {
    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum UpstreamAuthSettings {
    /// No credentials.
    #[default]
    None,
    /// OAuth2 client credentials grant; tokens cached until 60 s before expiry.
    Oauth2ClientCredentials {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
        /// Requested scopes (space-joined in the request).
        #[serde(default)]
        scopes: Vec<String>,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuthMethod,
    },
    /// A static key in a header.
    ApiKey {
        /// Header name.
        header: String,
        /// Key value.
        key: SecretString,
    },
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: SecretString,
    },
    /// A static bearer token.
    Bearer {
        /// The token.
        token: SecretString,
    },
}

/// How OAuth2 client credentials are presented to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic `client_id:client_secret` (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` form fields.
    Body,
}

/// Retry policy of an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff ceiling (full jitter).
    pub base_delay_ms: u64,
    /// Largest backoff ceiling.
    pub max_delay_ms: u64,
    /// A 429 asking to wait longer than this is not retried.
    pub max_retry_after_s: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay_ms: 200,
            max_delay_ms: 5000,
            max_retry_after_s: 180,
        }
    }
}

/// Circuit breaker of an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerSettings {
    /// Consecutive failed attempts that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    pub open_ms: u64,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

/// `[data_actions]`: the surface Genesys calls.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataActionsSettings {
    /// Inbound authentication of `/v1/actions/*`, `/webhook/data-action`, `/v1/genesys/events`.
    pub auth: InboundAuthSettings,
    /// What Genesys calls (used by `actions publish`).
    pub public_url: Option<String>,
}

/// Inbound authentication of a surface with a shared credential.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum InboundAuthSettings {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// Expected user name.
        username: String,
        /// Expected password.
        password: SecretString,
    },
    /// A header carrying a shared key.
    Header {
        /// Header name.
        name: String,
        /// Expected value.
        value: SecretString,
    },
}

/// `[[actions]]`: one data action.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionSettings {
    /// `[A-Za-z0-9_-]{1,64}`; served at `POST /v1/actions/<name>`.
    pub name: String,
    /// Upstream name (`genesys` is built in).
    pub upstream: String,
    /// HTTP method of the upstream call.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path appended to the upstream base URL; `{x}` placeholders are filled from `params`.
    pub path: String,
    /// Whole-action deadline, retries included; ≤ 60000.
    #[serde(default = "default_action_timeout")]
    pub timeout_ms: u64,
    /// Input JSON Schema (inline table, or a file path relative to the config folder).
    pub input_schema: Option<SchemaSource>,
    /// Output JSON Schema (inline table, or a file path).
    pub output_schema: Option<SchemaSource>,
    /// Example input used by `actions publish` to test the action in Genesys.
    pub example_input: Option<Value>,
    /// Path placeholder → JSON pointer into the input (always required).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Query parameter → source.
    #[serde(default)]
    pub query: BTreeMap<String, MappingSource>,
    /// Header → source.
    #[serde(default)]
    pub headers: BTreeMap<String, MappingSource>,
    /// Body target pointer → source; absent: POST/PUT/PATCH forward the input as is.
    pub body: Option<BTreeMap<String, MappingSource>>,
    /// Output pointer → pointer into the upstream response; absent: pass through.
    pub output: Option<BTreeMap<String, MappingSource>>,
}

fn default_method() -> String {
    "GET".to_owned()
}
fn default_action_timeout() -> u64 {
    10_000
}

impl ActionSettings {
    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A JSON Schema given inline or as a file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SchemaSource {
    /// Path of a JSON file, relative to the config folder.
    File(PathBuf),
    /// The schema itself.
    Inline(Value),
}

/// Where a mapped value comes from: `"/pointer"`, `{ from = "/pointer", default = <any>,
/// required = bool }` or `{ value = <any> }`. Unknown keys in the table form are errors.
/// `Debug` never shows literals or defaults (a header literal may be a key).
#[derive(Clone, PartialEq)]
pub enum MappingSource {
    /// A JSON pointer into the source document.
    Pointer(String),
    /// A pointer with a default and a required flag.
    From {
        /// JSON pointer.
        from: String,
        /// Used when the pointer finds nothing.
        default: Option<Value>,
        /// Missing and no default → 400 `invalid.input`.
        required: bool,
    },
    /// A literal.
    Value {
        /// The literal value.
        value: Value,
    },
}

impl std::fmt::Debug for MappingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pointer(p) => f.debug_tuple("Pointer").field(p).finish(),
            Self::From {
                from,
                default,
                required,
            } => f
                .debug_struct("From")
                .field("from", from)
                .field("default", &default.as_ref().map(|_| "[REDACTED]"))
                .field("required", required)
                .finish(),
            Self::Value { .. } => f.write_str("Value([REDACTED])"),
        }
    }
}

impl<'de> Deserialize<'de> for MappingSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const FORMS: &str = r#"a mapping source is "/pointer", { from = "/pointer", default = ..., required = true } or { value = ... }"#;
        match Value::deserialize(deserializer)? {
            Value::String(pointer) => Ok(Self::Pointer(pointer)),
            Value::Object(mut table) => {
                if let Some(unknown) = table
                    .keys()
                    .find(|k| !["from", "default", "required", "value"].contains(&k.as_str()))
                {
                    return Err(D::Error::custom(format!(
                        "unknown key `{unknown}`: {FORMS}"
                    )));
                }
                match (table.remove("from"), table.remove("value")) {
                    (Some(_), Some(_)) => Err(D::Error::custom(format!(
                        "`from` and `value` exclude each other: {FORMS}"
                    ))),
                    (None, Some(value)) => {
                        if table.is_empty() {
                            Ok(Self::Value { value })
                        } else {
                            Err(D::Error::custom(format!(
                                "`value` takes no `default` or `required`: {FORMS}"
                            )))
                        }
                    }
                    (Some(Value::String(from)), None) => {
                        let required = match table.remove("required") {
                            None => false,
                            Some(Value::Bool(b)) => b,
                            Some(_) => {
                                return Err(D::Error::custom("`required` must be true or false"));
                            }
                        };
                        Ok(Self::From {
                            from,
                            default: table.remove("default"),
                            required,
                        })
                    }
                    (Some(_), None) => {
                        Err(D::Error::custom("`from` must be a JSON pointer string"))
                    }
                    (None, None) => Err(D::Error::custom(FORMS)),
                }
            }
            _ => Err(D::Error::custom(FORMS)),
        }
    }
}

/// `[ingest]`: the event ingest surface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Inbound authentication (JWT by the named issuers).
    pub auth: IngestAuthSettings,
    /// Largest batch.
    pub max_batch: usize,
    /// Undelivered deliveries beyond this → 503 + `Retry-After`.
    pub max_queue_depth: u64,
    /// Event JSON Schema file (default: the built-in LegacyEvent schema).
    pub event_schema: Option<PathBuf>,
    /// `<vendor>` of `custom.<vendor>.<category>.<type>`.
    pub vendor: String,
    /// `<category>` of `custom.<vendor>.<category>.<type>`.
    pub category: String,
    /// The `source` object of mapped events.
    pub source: EventSourceSettings,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            auth: IngestAuthSettings::default(),
            max_batch: 500,
            max_queue_depth: 100_000,
            event_schema: None,
            vendor: "legacy".to_owned(),
            category: "orders".to_owned(),
            source: EventSourceSettings::default(),
        }
    }
}

/// `[ingest] auth`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum IngestAuthSettings {
    /// Bearer JWT signed by one of the named `[[jwt_issuers]]`.
    Jwt {
        /// Issuer names.
        issuers: Vec<String>,
    },
    /// Ingest is not served.
    #[default]
    #[serde(skip)]
    Disabled,
}

/// `[ingest] source`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventSourceSettings {
    /// Source system name.
    pub system: String,
    /// Source system version.
    pub version: String,
}

impl Default for EventSourceSettings {
    fn default() -> Self {
        Self {
            system: "legacy-ordering-platform".to_owned(),
            version: "1.0.0".to_owned(),
        }
    }
}

/// `[delivery]`: the durable delivery engine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Concurrent delivery workers.
    pub workers: usize,
    /// Allow targets and webhooks on loopback/private addresses.
    pub allow_private_networks: bool,
    /// Private ranges allowed even when `allow_private_networks` is false.
    pub allow_cidrs: Vec<IpNet>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            workers: 8,
            allow_private_networks: false,
            allow_cidrs: Vec::new(),
        }
    }
}

/// `[[targets]]`: a declarative event target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Unique name, 1–100 chars.
    pub name: String,
    /// Where events are POSTed.
    pub endpoint_url: String,
    /// Target authentication.
    #[serde(default)]
    pub auth: TargetAuthSettings,
    /// Retry policy.
    #[serde(default)]
    pub retry_policy: RetryPolicySettings,
    /// Extra headers on each delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Event type globs this target receives.
    pub event_types: Vec<String>,
    /// `whsec_` + base64: signs deliveries (Standard Webhooks).
    pub secret: SecretString,
}

/// How deliveries authenticate to a target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "UPPERCASE")]
pub enum TargetAuthSettings {
    /// No credentials.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: SecretString,
    },
    /// OAuth2 client credentials.
    Oauth2 {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
        /// Token endpoint.
        token_url: String,
    },
    /// A static bearer JWT.
    Jwt {
        /// The token.
        token: SecretString,
    },
}

/// A target's retry policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicySettings {
    /// Retries after the first attempt, 0–10.
    pub max_retries: u32,
    /// Backoff shape.
    pub backoff: BackoffStrategy,
    /// First wait, 1–30 s.
    pub initial_delay_s: u64,
}

impl Default for RetryPolicySettings {
    fn default() -> Self {
        Self {
            max_retries: 5,
            backoff: BackoffStrategy::Exponential,
            initial_delay_s: 2,
        }
    }
}

/// Backoff shape of a retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackoffStrategy {
    /// `initial × 2^(n-1)`.
    Exponential,
    /// `initial × n`.
    Linear,
}

/// `[callbacks]`: callback reservations.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksSettings {
    /// Inbound authentication of `/v1/callbacks*`.
    pub auth: InboundAuthSettings,
    /// Queues that take reservations.
    pub queues: Vec<CallbackQueueSettings>,
}

/// `[[callbacks.queues]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallbackQueueSettings {
    /// Genesys queue id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone the open hours are in.
    pub timezone: String,
    /// `"<day>[-<day>] HH:MM-HH:MM"` entries.
    pub open_hours: Vec<String>,
    /// Reservations allowed to overlap any instant, 1..=50.
    #[serde(default = "default_slot_capacity")]
    pub slot_capacity: u32,
    /// Longest slot.
    #[serde(default = "default_max_slot_minutes")]
    pub max_slot_minutes: u32,
    /// Slots must start within this many days.
    #[serde(default = "default_horizon")]
    pub booking_horizon_days: u32,
}

fn default_slot_capacity() -> u32 {
    10
}
fn default_max_slot_minutes() -> u32 {
    60
}
fn default_horizon() -> u32 {
    30
}

/// Equality of two secrets in constant time (for comparing configurations on reload: a secret
/// that changed must compare unequal, and how much of it matched must not show in the timing).
pub fn secret_eq(a: &SecretString, b: &SecretString) -> bool {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    a.expose_secret()
        .as_bytes()
        .ct_eq(b.expose_secret().as_bytes())
        .into()
}

fn option_secret_eq(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => secret_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

// The sections holding secrets compare them with `secret_eq`; every field is named (no `..`), so
// a new field does not compile until it is compared.

impl PartialEq for StoreSettings {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            url,
            audit_retention_days,
        } = self;
        secret_eq(url, &other.url) && *audit_retention_days == other.audit_retention_days
    }
}

impl PartialEq for GenesysSettings {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            region,
            api_url,
            login_url,
            client_id,
            client_secret,
            simulate,
            simulator_listen,
            notifications_heartbeat_timeout_s,
        } = self;
        *region == other.region
            && *api_url == other.api_url
            && *login_url == other.login_url
            && *client_id == other.client_id
            && option_secret_eq(client_secret, &other.client_secret)
            && *simulate == other.simulate
            && *simulator_listen == other.simulator_listen
            && *notifications_heartbeat_timeout_s == other.notifications_heartbeat_timeout_s
    }
}

impl PartialEq for AdminAuthSettings {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bearer { tokens: a }, Self::Bearer { tokens: b }) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| secret_eq(a, b))
            }
            (Self::Disabled, Self::Disabled) => true,
            _ => false,
        }
    }
}

impl PartialEq for UpstreamAuthSettings {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::None, Self::None) => true,
            (
                Self::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    scopes,
                    client_auth,
                },
                Self::Oauth2ClientCredentials {
                    token_url: t,
                    client_id: i,
                    client_secret: s,
                    scopes: sc,
                    client_auth: a,
                },
            ) => {
                token_url == t
                    && client_id == i
                    && secret_eq(client_secret, s)
                    && scopes == sc
                    && client_auth == a
            }
            (Self::ApiKey { header, key }, Self::ApiKey { header: h, key: k }) => {
                header == h && secret_eq(key, k)
            }
            (
                Self::Basic { username, password },
                Self::Basic {
                    username: u,
                    password: p,
                },
            ) => username == u && secret_eq(password, p),
            (Self::Bearer { token }, Self::Bearer { token: t }) => secret_eq(token, t),
            _ => false,
        }
    }
}

impl PartialEq for InboundAuthSettings {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::None, Self::None) => true,
            (
                Self::Basic { username, password },
                Self::Basic {
                    username: u,
                    password: p,
                },
            ) => username == u && secret_eq(password, p),
            (Self::Header { name, value }, Self::Header { name: n, value: v }) => {
                name == n && secret_eq(value, v)
            }
            _ => false,
        }
    }
}

impl PartialEq for TargetSettings {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            name,
            endpoint_url,
            auth,
            retry_policy,
            headers,
            event_types,
            secret,
        } = self;
        *name == other.name
            && *endpoint_url == other.endpoint_url
            && *auth == other.auth
            && *retry_policy == other.retry_policy
            && *headers == other.headers
            && *event_types == other.event_types
            && secret_eq(secret, &other.secret)
    }
}

impl PartialEq for TargetAuthSettings {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::None, Self::None) => true,
            (
                Self::Basic { username, password },
                Self::Basic {
                    username: u,
                    password: p,
                },
            ) => username == u && secret_eq(password, p),
            (
                Self::Oauth2 {
                    client_id,
                    client_secret,
                    token_url,
                },
                Self::Oauth2 {
                    client_id: i,
                    client_secret: s,
                    token_url: t,
                },
            ) => client_id == i && secret_eq(client_secret, s) && token_url == t,
            (Self::Jwt { token }, Self::Jwt { token: t }) => secret_eq(token, t),
            _ => false,
        }
    }
}
