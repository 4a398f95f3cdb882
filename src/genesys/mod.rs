//! The typed Genesys Cloud client, built on the built-in `genesys` upstream.
//!
//! - [`GenesysClient`]: typed calls (users, queues, callbacks, conversations, notification
//!   channels and subscriptions, integrations, credentials, data actions) with serde models named
//!   as in the official SDKs ([`models`]); every call goes through the `genesys` upstream, so it
//!   gets its OAuth token cache, retries (token endpoint failures included), breaker and
//!   correlation id.
//! - [`GenesysError`]: Genesys' own error body ([`ErrorBody`]) when Genesys refused, or the
//!   upstream failure; converts into the gateway's error body like every upstream failure
//!   (a Genesys 4xx logged at `debug`, anything else at `warn`).
//! - [`NotificationsClient`]: the notifications WebSocket — channel, subscriptions, heartbeat
//!   watchdog, ping, reconnects with backoff and jitter (reset only by a socket that proved
//!   healthy), seamless switch on `v2.system.socket_closing` and before the channel's expiry,
//!   gap signalling; cancellable in every step.
//! - [`region_hosts`]: the API, login and streaming hosts of each region.
//! - [`GenesysEndpoints`], [`upstream_definition`]: the built-in `genesys` upstream (base URLs
//!   from the region, the `[genesys]` credentials, its retry and breaker defaults).
//! - [`GenesysReadiness`]: the `/readyz` check that a Genesys token can be had.

mod error;
pub mod models;
mod notifications;
mod region;
mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

pub use error::{ErrorBody, ErrorDetail, GenesysError};
pub use notifications::{
    NotificationEvent, NotificationItem, NotificationsClient, NotificationsOptions,
};
pub use region::{RegionHosts, region_hosts};
pub use upstream::{
    GenesysEndpoints, UPSTREAM, build_upstreams, definitions, rebuild_upstreams,
    upstream_definition, upstream_definitions,
};

use crate::health::ReadinessCheck;
use crate::upstream::{Upstream, UpstreamRequest, UpstreamResponse, Upstreams};
use models::{
    Action, BulkCallbackDisconnectRequest, Channel, ChannelTopic, Conversation,
    CreateCallbackCommand, CreateCallbackResponse, CreateIntegrationRequest, Credential,
    CredentialInfo, Entities, EntityListing, Integration, IntegrationConfiguration,
    IntegrationPatch, IntegrationType, Page, PostActionInput, PublishDraftInput, Queue,
    TestExecutionResult, UpdateActionInput, UpdateDraftInput, User,
};

/// Deadline of one typed call (retries included) unless [`GenesysClient::with_timeout`] says
/// otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters escaped in a path segment (everything but unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn seg(id: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(id, SEGMENT)
}

/// Typed calls to the Genesys Cloud Platform API (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GenesysClient {
    upstream: Arc<Upstream>,
    timeout: Duration,
}

impl std::fmt::Debug for GenesysClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesysClient")
            .field("base_url", &self.upstream.base_url())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl GenesysClient {
    /// A client calling through `upstream` (the built-in `genesys` one).
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self {
            upstream,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// A client on the `genesys` upstream of `upstreams`.
    pub fn from_upstreams(upstreams: &Upstreams) -> Option<Self> {
        upstreams.get(UPSTREAM).cloned().map(Self::new)
    }

    /// The same client with another per-call deadline.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            upstream: self.upstream.clone(),
            timeout,
        }
    }

    /// The upstream the calls go through.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Result<UpstreamResponse, GenesysError> {
        let mut request = UpstreamRequest::new(method, path);
        request
            .headers
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let deadline = Instant::now() + self.timeout;
        Ok(self.upstream.call(request, deadline).await?)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, GenesysError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| GenesysError::Decode(format!("cannot encode the request: {e}")))?;
        let response = self.send(method, path, body).await?;
        serde_json::from_slice(&response.body).map_err(|e| GenesysError::Decode(format!("{e}")))
    }

    async fn call_no_content(
        &self,
        method: Method,
        path: String,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(), GenesysError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| GenesysError::Decode(format!("cannot encode the request: {e}")))?;
        self.send(method, path, body).await.map(|_| ())
    }

    // --- users and queues ------------------------------------------------------------------

    /// `GET /api/v2/users/{userId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when the user does not exist).
    pub async fn get_user(&self, id: &str) -> Result<User, GenesysError> {
        self.call(Method::GET, format!("/api/v2/users/{}", seg(id)), NO_BODY)
            .await
    }

    /// `GET /api/v2/users?pageSize=&pageNumber=`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_users(&self, page: Page) -> Result<EntityListing<User>, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/users?pageSize={}&pageNumber={}",
                page.size, page.number
            ),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/routing/queues/{queueId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when the queue does not exist).
    pub async fn get_queue(&self, id: &str) -> Result<Queue, GenesysError> {
        self.call(
            Method::GET,
            format!("/api/v2/routing/queues/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/routing/queues?pageSize=&pageNumber=`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_queues(&self, page: Page) -> Result<EntityListing<Queue>, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/routing/queues?pageSize={}&pageNumber={}",
                page.size, page.number
            ),
            NO_BODY,
        )
        .await
    }

    // --- callbacks and conversations -------------------------------------------------------

    /// `POST /api/v2/conversations/callbacks`. Not retried unless Genesys certainly did not
    /// process it (connection refused, 429, 503).
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn create_callback(
        &self,
        command: &CreateCallbackCommand,
    ) -> Result<CreateCallbackResponse, GenesysError> {
        self.call(
            Method::POST,
            "/api/v2/conversations/callbacks".to_owned(),
            Some(command),
        )
        .await
    }

    /// `POST /api/v2/conversations/callbacks/bulk/disconnect`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn disconnect_callbacks(
        &self,
        request: &BulkCallbackDisconnectRequest,
    ) -> Result<(), GenesysError> {
        self.call_no_content(
            Method::POST,
            "/api/v2/conversations/callbacks/bulk/disconnect".to_owned(),
            Some(request),
        )
        .await
    }

    /// `GET /api/v2/conversations/{conversationId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when the conversation does not exist).
    pub async fn get_conversation(&self, id: &str) -> Result<Conversation, GenesysError> {
        self.call(
            Method::GET,
            format!("/api/v2/conversations/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    // --- notifications ---------------------------------------------------------------------

    /// `POST /api/v2/notifications/channels`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn create_channel(&self) -> Result<Channel, GenesysError> {
        self.call(
            Method::POST,
            "/api/v2/notifications/channels".to_owned(),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/notifications/channels`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_channels(&self) -> Result<Entities<Channel>, GenesysError> {
        self.call(
            Method::GET,
            "/api/v2/notifications/channels".to_owned(),
            NO_BODY,
        )
        .await
    }

    /// `HEAD /api/v2/notifications/channels/{channelId}`: whether the channel still exists.
    ///
    /// # Errors
    /// [`GenesysError`] other than 404.
    pub async fn channel_exists(&self, id: &str) -> Result<bool, GenesysError> {
        match self
            .send(
                Method::HEAD,
                format!("/api/v2/notifications/channels/{}", seg(id)),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `GET /api/v2/notifications/channels/{channelId}/subscriptions`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn subscriptions(
        &self,
        channel_id: &str,
    ) -> Result<Entities<ChannelTopic>, GenesysError> {
        self.call(Method::GET, subscriptions_path(channel_id), NO_BODY)
            .await
    }

    /// `POST /api/v2/notifications/channels/{channelId}/subscriptions`: adds topics.
    ///
    /// # Errors
    /// [`GenesysError`] (400 beyond 1000 topics).
    pub async fn add_subscriptions(
        &self,
        channel_id: &str,
        topics: &[ChannelTopic],
    ) -> Result<Entities<ChannelTopic>, GenesysError> {
        self.call(Method::POST, subscriptions_path(channel_id), Some(topics))
            .await
    }

    /// `PUT /api/v2/notifications/channels/{channelId}/subscriptions`: replaces the topics.
    ///
    /// # Errors
    /// [`GenesysError`] (400 beyond 1000 topics).
    pub async fn replace_subscriptions(
        &self,
        channel_id: &str,
        topics: &[ChannelTopic],
    ) -> Result<Entities<ChannelTopic>, GenesysError> {
        self.call(Method::PUT, subscriptions_path(channel_id), Some(topics))
            .await
    }

    /// `DELETE /api/v2/notifications/channels/{channelId}/subscriptions`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn delete_subscriptions(&self, channel_id: &str) -> Result<(), GenesysError> {
        self.call_no_content(Method::DELETE, subscriptions_path(channel_id), NO_BODY)
            .await
    }

    // --- integrations ----------------------------------------------------------------------

    /// `GET /api/v2/integrations/types`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn integration_types(
        &self,
        page: Page,
    ) -> Result<EntityListing<IntegrationType>, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/integrations/types?pageSize={}&pageNumber={}",
                page.size, page.number
            ),
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v2/integrations`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn create_integration(
        &self,
        request: &CreateIntegrationRequest,
    ) -> Result<Integration, GenesysError> {
        self.call(
            Method::POST,
            "/api/v2/integrations".to_owned(),
            Some(request),
        )
        .await
    }

    /// `GET /api/v2/integrations/{integrationId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when it does not exist).
    pub async fn get_integration(&self, id: &str) -> Result<Integration, GenesysError> {
        self.call(
            Method::GET,
            format!("/api/v2/integrations/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/integrations?pageSize=&pageNumber=`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_integrations(
        &self,
        page: Page,
    ) -> Result<EntityListing<Integration>, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/integrations?pageSize={}&pageNumber={}",
                page.size, page.number
            ),
            NO_BODY,
        )
        .await
    }

    /// `PATCH /api/v2/integrations/{integrationId}` (e.g. `intendedState: ENABLED`).
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn patch_integration(
        &self,
        id: &str,
        patch: &IntegrationPatch,
    ) -> Result<Integration, GenesysError> {
        self.call(
            Method::PATCH,
            format!("/api/v2/integrations/{}", seg(id)),
            Some(patch),
        )
        .await
    }

    /// `DELETE /api/v2/integrations/{integrationId}`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn delete_integration(&self, id: &str) -> Result<(), GenesysError> {
        self.call_no_content(
            Method::DELETE,
            format!("/api/v2/integrations/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/integrations/{integrationId}/config/current`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn integration_config(
        &self,
        id: &str,
    ) -> Result<IntegrationConfiguration, GenesysError> {
        self.call(
            Method::GET,
            format!("/api/v2/integrations/{}/config/current", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `PUT /api/v2/integrations/{integrationId}/config/current` (send the current `version`).
    ///
    /// # Errors
    /// [`GenesysError`] (409 on a version conflict).
    pub async fn put_integration_config(
        &self,
        id: &str,
        config: &IntegrationConfiguration,
    ) -> Result<IntegrationConfiguration, GenesysError> {
        self.call(
            Method::PUT,
            format!("/api/v2/integrations/{}/config/current", seg(id)),
            Some(config),
        )
        .await
    }

    /// `POST /api/v2/integrations/credentials`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn create_credential(
        &self,
        credential: &Credential,
    ) -> Result<CredentialInfo, GenesysError> {
        self.call(
            Method::POST,
            "/api/v2/integrations/credentials".to_owned(),
            Some(credential),
        )
        .await
    }

    /// `GET /api/v2/integrations/credentials?pageSize=&pageNumber=` (names and types; never
    /// the secret fields).
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_credentials(
        &self,
        page: Page,
    ) -> Result<EntityListing<CredentialInfo>, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/integrations/credentials?pageSize={}&pageNumber={}",
                page.size, page.number
            ),
            NO_BODY,
        )
        .await
    }

    /// `DELETE /api/v2/integrations/credentials/{credentialId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when it does not exist).
    pub async fn delete_credential(&self, id: &str) -> Result<(), GenesysError> {
        self.call_no_content(
            Method::DELETE,
            format!("/api/v2/integrations/credentials/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v2/integrations/actions`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn create_action(&self, action: &PostActionInput) -> Result<Action, GenesysError> {
        self.call(
            Method::POST,
            "/api/v2/integrations/actions".to_owned(),
            Some(action),
        )
        .await
    }

    /// `GET /api/v2/integrations/actions/{actionId}?expand=contract&includeConfig=true`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when it does not exist).
    pub async fn get_action(&self, id: &str) -> Result<Action, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/integrations/actions/{}?expand=contract&includeConfig=true",
                seg(id)
            ),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/integrations/actions?pageSize=&pageNumber=[&integrationId=]`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn list_actions(
        &self,
        page: Page,
        integration_id: Option<&str>,
    ) -> Result<EntityListing<Action>, GenesysError> {
        let mut path = format!(
            "/api/v2/integrations/actions?pageSize={}&pageNumber={}",
            page.size, page.number
        );
        if let Some(id) = integration_id {
            path.push_str("&integrationId=");
            path.extend(form_urlencoded::byte_serialize(id.as_bytes()));
        }
        self.call(Method::GET, path, NO_BODY).await
    }

    /// `PATCH /api/v2/integrations/actions/{actionId}`.
    ///
    /// # Errors
    /// [`GenesysError`] (409 on a version conflict).
    pub async fn patch_action(
        &self,
        id: &str,
        update: &UpdateActionInput,
    ) -> Result<Action, GenesysError> {
        self.call(
            Method::PATCH,
            format!("/api/v2/integrations/actions/{}", seg(id)),
            Some(update),
        )
        .await
    }

    /// `POST /api/v2/integrations/actions/{actionId}/draft`: a draft copied from the published
    /// action — the way to change its contract, which [`Self::patch_action`] cannot.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when the action does not exist; a 4xx when it already has a
    /// draft).
    pub async fn create_action_draft(&self, id: &str) -> Result<Action, GenesysError> {
        self.call(
            Method::POST,
            format!("/api/v2/integrations/actions/{}/draft", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v2/integrations/actions/{actionId}/draft?expand=contract&includeConfig=true`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 when the action has no draft).
    pub async fn action_draft(&self, id: &str) -> Result<Action, GenesysError> {
        self.call(
            Method::GET,
            format!(
                "/api/v2/integrations/actions/{}/draft?expand=contract&includeConfig=true",
                seg(id)
            ),
            NO_BODY,
        )
        .await
    }

    /// `PATCH /api/v2/integrations/actions/{actionId}/draft` (send the draft's `version`).
    ///
    /// # Errors
    /// [`GenesysError`] (409 on a version conflict, 404 without a draft).
    pub async fn patch_action_draft(
        &self,
        id: &str,
        update: &UpdateDraftInput,
    ) -> Result<Action, GenesysError> {
        self.call(
            Method::PATCH,
            format!("/api/v2/integrations/actions/{}/draft", seg(id)),
            Some(update),
        )
        .await
    }

    /// `POST /api/v2/integrations/actions/{actionId}/draft/publish`: the draft becomes the
    /// action, which keeps its id.
    ///
    /// # Errors
    /// [`GenesysError`] (409 when `version` is not the draft's, 404 without a draft).
    pub async fn publish_action_draft(
        &self,
        id: &str,
        publish: &PublishDraftInput,
    ) -> Result<Action, GenesysError> {
        self.call(
            Method::POST,
            format!("/api/v2/integrations/actions/{}/draft/publish", seg(id)),
            Some(publish),
        )
        .await
    }

    /// `DELETE /api/v2/integrations/actions/{actionId}/draft`.
    ///
    /// # Errors
    /// [`GenesysError`] (404 without a draft).
    pub async fn delete_action_draft(&self, id: &str) -> Result<(), GenesysError> {
        self.call_no_content(
            Method::DELETE,
            format!("/api/v2/integrations/actions/{}/draft", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `DELETE /api/v2/integrations/actions/{actionId}`.
    ///
    /// # Errors
    /// [`GenesysError`].
    pub async fn delete_action(&self, id: &str) -> Result<(), GenesysError> {
        self.call_no_content(
            Method::DELETE,
            format!("/api/v2/integrations/actions/{}", seg(id)),
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v2/integrations/actions/{actionId}/test` with the action's input.
    ///
    /// # Errors
    /// [`GenesysError`] when the test could not be run (a failing action is a result with
    /// `success: false`).
    pub async fn test_action(
        &self,
        id: &str,
        input: &Value,
    ) -> Result<TestExecutionResult, GenesysError> {
        self.call(
            Method::POST,
            format!("/api/v2/integrations/actions/{}/test", seg(id)),
            Some(input),
        )
        .await
    }

    /// `POST /api/v2/integrations/actions/{actionId}/execute` with the action's input; the
    /// action's output.
    ///
    /// # Errors
    /// [`GenesysError`] (Genesys' error body, e.g. `ACTION.REMOTE_ENDPOINT`, when it failed).
    pub async fn execute_action(&self, id: &str, input: &Value) -> Result<Value, GenesysError> {
        self.call(
            Method::POST,
            format!("/api/v2/integrations/actions/{}/execute", seg(id)),
            Some(input),
        )
        .await
    }
}

/// "No body" for the generic call helpers.
const NO_BODY: Option<&()> = None;

fn subscriptions_path(channel_id: &str) -> String {
    format!(
        "/api/v2/notifications/channels/{}/subscriptions",
        seg(channel_id)
    )
}

/// `/readyz` check: a Genesys token can be had (cached or fetched).
pub struct GenesysReadiness {
    upstream: Arc<Upstream>,
}

impl GenesysReadiness {
    /// A check of `upstream` (the built-in `genesys` one).
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }
}

impl ReadinessCheck for GenesysReadiness {
    fn name(&self) -> &'static str {
        "genesys"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if !self.upstream.uses_oauth() {
                return Err("no Genesys client credentials are configured".to_owned());
            }
            self.upstream
                .check_credentials(Instant::now() + Duration::from_secs(2))
                .await
                .map_err(|err| match err {
                    crate::upstream::UpstreamError::TokenFetch { failure, .. } => {
                        format!("no Genesys token: the token endpoint failed ({failure})")
                    }
                    other => format!("no Genesys token: {other}"),
                })
        })
    }
}
