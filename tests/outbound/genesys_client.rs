//! The typed Genesys client against the simulator: users, queues, callbacks, conversations,
//! notification channels, integrations, credentials, data actions and their drafts, Genesys'
//! error body, retries through the `genesys` upstream, the correlation id and the readiness
//! check.

use std::sync::Arc;
use std::time::Duration;

use genesys_gateway::config::Settings;
use genesys_gateway::error::{ApiError, ErrorCode};
use genesys_gateway::genesys::GenesysEndpoints;
use genesys_gateway::genesys::models::{
    BulkCallbackDisconnectRequest, CallbackDisconnectIdentifier, ChannelTopic,
    CreateCallbackCommand, Page, RoutingData,
};
use genesys_gateway::genesys::{GenesysClient, GenesysError, GenesysReadiness};
use genesys_gateway::health::ReadinessCheck;
use genesys_gateway::sim::{SIM_CLIENT_ID, SIM_CLIENT_SECRET, SimOptions, Simulator};
use genesys_gateway::telemetry::{Metrics, RequestId};
use genesys_gateway::upstream::{UpstreamError, Upstreams};
use http::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

const SUPPORT: &str = "a3b1f7c2-0000-4000-8000-000000000001";

struct Env {
    sim: Simulator,
    genesys: GenesysClient,
    upstreams: Upstreams,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Self {
        Self::start_with_secret(SIM_CLIENT_SECRET).await
    }

    async fn start_with_secret(secret: &str) -> Self {
        let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
            .await
            .unwrap();
        let mut settings = Settings::default();
        settings.server.io_threads = 1;
        settings.genesys.client_id = Some(SIM_CLIENT_ID.to_owned());
        settings.genesys.client_secret = Some(SecretString::from(secret.to_owned()));
        let endpoints = GenesysEndpoints {
            api_url: sim.base_url(),
            login_url: sim.base_url(),
        };
        let upstreams = genesys_gateway::genesys::build_upstreams(
            &settings,
            &endpoints,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let genesys = GenesysClient::from_upstreams(&upstreams).unwrap();
        Self {
            sim,
            genesys,
            upstreams,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn fault(&self, fault: Value) {
        let r = self
            .http
            .post(self.url("/__sim/faults"))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "fault accepted");
    }

    async fn requests(&self, glob: &str) -> Vec<Value> {
        self.http
            .get(self.url("/__sim/requests"))
            .query(&[("path", glob)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn callback_command() -> CreateCallbackCommand {
    CreateCallbackCommand {
        routing_data: Some(RoutingData {
            queue_id: SUPPORT.to_owned(),
            ..RoutingData::default()
        }),
        callback_user_name: Some("Jane".to_owned()),
        callback_numbers: vec!["+14155550199".to_owned()],
        callback_scheduled_time: Some("2099-01-01T10:00:00.000Z".to_owned()),
        data: [("gatewayReservationId".to_owned(), "r-1".to_owned())].into(),
        ..CreateCallbackCommand::default()
    }
}

#[tokio::test]
async fn users_and_queues() {
    let env = Env::start().await;
    let user = env.genesys.get_user("u-1").await.unwrap();
    assert_eq!(user.id, "u-1");
    assert_eq!(user.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(user.email.as_deref(), Some("ada.lovelace@example.com"));
    assert_eq!(user.extra["department"], "Engineering");

    let page = env
        .genesys
        .list_users(Page { number: 1, size: 2 })
        .await
        .unwrap();
    assert_eq!(page.entities.len(), 2);
    assert_eq!(page.total, Some(3));
    assert_eq!(page.page_count, Some(2));

    let queues = env.genesys.list_queues(Page::default()).await.unwrap();
    assert!(queues.entities.iter().any(|q| q.id == SUPPORT));
    let queue = env.genesys.get_queue(SUPPORT).await.unwrap();
    assert_eq!(queue.name.as_deref(), Some("Support"));
}

#[tokio::test]
async fn genesys_errors_are_typed() {
    let env = Env::start().await;
    let err = env.genesys.get_user("no-such-user").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let GenesysError::Api { status, body } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, StatusCode::NOT_FOUND);
    assert_eq!(body.status, Some(404));
    assert!(body.code.is_some() && body.message.is_some(), "{body:?}");
    assert!(body.context_id.is_some(), "{body:?}");

    let mut bad = callback_command();
    bad.callback_numbers.clear();
    let err = env.genesys.create_callback(&bad).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(err.code(), Some("bad.request"));
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::UpstreamError);
    assert!(
        !api.message().contains("callback number"),
        "no Genesys text"
    );
}

#[tokio::test]
async fn callbacks_and_conversations() {
    let env = Env::start().await;
    let created = env
        .genesys
        .create_callback(&callback_command())
        .await
        .unwrap();
    assert!(!created.conversation.id.is_empty());
    assert!(!created.callback_identifiers.is_empty());

    let conversation = env
        .genesys
        .get_conversation(&created.conversation.id)
        .await
        .unwrap();
    assert_eq!(conversation.id, created.conversation.id);
    let customer = conversation
        .participants
        .iter()
        .find(|p| p.purpose.as_deref() == Some("customer"))
        .expect("customer participant");
    assert_eq!(customer.attributes["gatewayReservationId"], "r-1");
    let callback = &customer.callbacks[0];
    assert_eq!(callback.state.as_deref(), Some("scheduled"));
    assert_eq!(callback.callback_numbers, ["+14155550199"]);

    let callback_id = created
        .callback_identifiers
        .iter()
        .find(|i| i.kind == "EXTERNAL")
        .or(created.callback_identifiers.first())
        .unwrap()
        .id
        .clone();
    env.genesys
        .disconnect_callbacks(&BulkCallbackDisconnectRequest {
            callback_disconnect_identifiers: vec![CallbackDisconnectIdentifier {
                conversation_id: created.conversation.id.clone(),
                callback_id,
            }],
        })
        .await
        .unwrap();
    let conversation = env
        .genesys
        .get_conversation(&created.conversation.id)
        .await
        .unwrap();
    let state = conversation.participants[0].callbacks[0].state.clone();
    assert!(
        matches!(state.as_deref(), Some("disconnected" | "terminated")),
        "{state:?}"
    );
}

#[tokio::test]
async fn notification_channels_and_subscriptions() {
    let env = Env::start().await;
    let channel = env.genesys.create_channel().await.unwrap();
    assert!(
        channel.connect_uri.starts_with("ws://"),
        "{}",
        channel.connect_uri
    );
    assert!(channel.expires.is_some());
    assert!(env.genesys.channel_exists(&channel.id).await.unwrap());
    assert!(!env.genesys.channel_exists("no-such-channel").await.unwrap());
    let listed = env.genesys.list_channels().await.unwrap();
    assert!(listed.entities.iter().any(|c| c.id == channel.id));

    let topic =
        |q: &str| ChannelTopic::new(format!("v2.routing.queues.{q}.conversations.callbacks"));
    env.genesys
        .replace_subscriptions(&channel.id, &[topic("a")])
        .await
        .unwrap();
    env.genesys
        .add_subscriptions(&channel.id, &[topic("b")])
        .await
        .unwrap();
    let topics: Vec<String> = env
        .genesys
        .subscriptions(&channel.id)
        .await
        .unwrap()
        .entities
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(topics, [topic("a").id, topic("b").id]);
    env.genesys.delete_subscriptions(&channel.id).await.unwrap();
    assert!(
        env.genesys
            .subscriptions(&channel.id)
            .await
            .unwrap()
            .entities
            .is_empty()
    );
}

#[tokio::test]
async fn calls_carry_the_correlation_id_and_one_token() {
    let env = Env::start().await;
    let id = RequestId::from_headers(&{
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", "corr-genesys-1".parse().unwrap());
        h
    });
    id.scope(env.genesys.get_user("u-2")).await.unwrap();
    env.genesys.get_user("u-3").await.unwrap();
    let requests = env.requests("/api/v2/users/*").await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["headers"]["inin-correlation-id"],
        "corr-genesys-1"
    );
    assert_eq!(requests[0]["headers"]["authorization"], "Bearer [REDACTED]");
    assert_eq!(env.requests("/oauth/token").await.len(), 1, "token cached");
}

#[tokio::test]
async fn rate_limits_and_unavailability_are_retried_per_the_genesys_policy() {
    let env = Env::start().await;
    // A 429 with a Retry-After of 10 s: the call waits for it, on a clock the test moves.
    env.fault(json!({"method": "GET", "path": "/api/v2/users/*", "status": 429, "retryAfter": 10, "count": 1}))
        .await;
    let genesys = env.genesys.clone();
    let call = tokio::spawn(async move { genesys.get_user("u-1").await });
    tokio::time::pause();
    // A paused clock moves only once every task waits: the call has had its 429 by then.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!call.is_finished(), "the call waits for the Retry-After");
    assert_eq!(env.requests("/api/v2/users/u-1").await.len(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::time::resume();
    call.await.unwrap().unwrap();
    assert_eq!(env.requests("/api/v2/users/u-1").await.len(), 2);

    // A callback POST is retried after 503 (certainly unprocessed)...
    env.fault(json!({"method": "POST", "path": "/api/v2/conversations/callbacks", "status": 503, "count": 1}))
        .await;
    env.genesys
        .create_callback(&callback_command())
        .await
        .unwrap();
    assert_eq!(
        env.requests("/api/v2/conversations/callbacks").await.len(),
        2
    );

    // ...but not after 502: Genesys may have created it.
    env.fault(json!({"method": "POST", "path": "/api/v2/conversations/callbacks", "status": 502, "count": 1}))
        .await;
    let err = env
        .genesys
        .create_callback(&callback_command())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_GATEWAY), "{err:?}");
    assert_eq!(
        env.requests("/api/v2/conversations/callbacks").await.len(),
        3
    );

    // Three 503s in a row exhaust the attempts.
    env.fault(
        json!({"method": "GET", "path": "/api/v2/routing/queues/*", "status": 503, "count": 3}),
    )
    .await;
    let err = env.genesys.get_queue(SUPPORT).await.unwrap_err();
    assert!(
        matches!(
            err,
            GenesysError::Upstream(UpstreamError::Unavailable { .. })
        ),
        "{err:?}"
    );
    let api: ApiError = err.into();
    assert_eq!(api.code(), ErrorCode::UpstreamUnavailable);
}

#[tokio::test]
async fn readiness_needs_a_token() {
    let env = Env::start().await;
    let check = GenesysReadiness::new(env.upstreams.get("genesys").unwrap().clone());
    assert_eq!(check.name(), "genesys");
    check.check().await.unwrap();

    let wrong = Env::start_with_secret("wrong-secret").await;
    let check = GenesysReadiness::new(wrong.upstreams.get("genesys").unwrap().clone());
    let reason = check.check().await.unwrap_err();
    assert!(reason.contains("401"), "{reason}");
    assert!(!reason.contains("wrong-secret"), "{reason}");
    let err = wrong.genesys.get_user("u-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            GenesysError::Upstream(UpstreamError::TokenFetch { .. })
        ),
        "{err:?}"
    );
}

/// A remote endpoint for data actions: `POST /echo` answers its body; `POST /fail` answers 500.
async fn remote() -> (String, Arc<std::sync::Mutex<Vec<http::HeaderMap>>>) {
    use axum::routing::post;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/echo",
            post(move |headers: http::HeaderMap, body: String| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(headers);
                    ([("content-type", "application/json")], body)
                }
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn action_input(
    integration_id: &str,
    name: &str,
    url: &str,
) -> genesys_gateway::genesys::models::PostActionInput {
    use genesys_gateway::genesys::models::{
        ActionConfig, ActionContract, ActionRequestConfig, ActionResponseConfig, ContractInput,
        ContractOutput, PostActionInput,
    };
    PostActionInput {
        category: "genesys-gateway".to_owned(),
        name: name.to_owned(),
        integration_id: integration_id.to_owned(),
        config: ActionConfig {
            request: ActionRequestConfig {
                request_url_template: url.to_owned(),
                request_type: "POST".to_owned(),
                headers: [("Content-Type".to_owned(), "application/json".to_owned())].into(),
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
                input_schema: json!({"type": "object", "properties": {"orderId": {"type": "string"}}}),
            },
            output: ContractOutput {
                success_schema: json!({"type": "object"}),
            },
        },
        secure: false,
    }
}

#[tokio::test]
async fn integrations_credentials_and_data_actions() {
    use genesys_gateway::genesys::models::{
        CreateIntegrationRequest, Credential, CredentialRef, CredentialType, EntityRef,
        IntegrationPatch, UpdateActionInput,
    };
    let env = Env::start().await;
    let (remote_base, seen) = remote().await;

    let types = env
        .genesys
        .integration_types(Page::default())
        .await
        .unwrap();
    assert!(types.entities.iter().any(|t| t.id == "custom-rest-actions"));

    let integration = env
        .genesys
        .create_integration(&CreateIntegrationRequest {
            integration_type: EntityRef::id("custom-rest-actions"),
            name: Some("genesys-gateway".to_owned()),
            notes: None,
        })
        .await
        .unwrap();
    let credential = env
        .genesys
        .create_credential(&Credential {
            name: "genesys-gateway".to_owned(),
            kind: CredentialType {
                name: "basicAuth".to_owned(),
            },
            credential_fields: [
                ("userName".to_owned(), "genesys".to_owned()),
                ("password".to_owned(), "pa55".to_owned()),
            ]
            .into(),
        })
        .await
        .unwrap();
    let mut config = env
        .genesys
        .integration_config(&integration.id)
        .await
        .unwrap();
    config.credentials.insert(
        "basicAuth".to_owned(),
        CredentialRef {
            id: credential.id.clone(),
            extra: serde_json::Map::new(),
        },
    );
    let version = config.version;
    let updated = env
        .genesys
        .put_integration_config(&integration.id, &config)
        .await
        .unwrap();
    assert_eq!(updated.version, version + 1);
    assert_eq!(updated.credentials["basicAuth"].id, credential.id);
    // A stale version is refused.
    let err = env
        .genesys
        .put_integration_config(&integration.id, &config)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err:?}");

    let enabled = env
        .genesys
        .patch_integration(
            &integration.id,
            &IntegrationPatch {
                intended_state: Some("ENABLED".to_owned()),
                ..IntegrationPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(enabled.intended_state.as_deref(), Some("ENABLED"));
    let fetched = env.genesys.get_integration(&integration.id).await.unwrap();
    assert!(fetched.reported_state.is_some());
    let listed = env
        .genesys
        .list_integrations(Page::default())
        .await
        .unwrap();
    assert!(listed.entities.iter().any(|i| i.id == integration.id));

    let action = env
        .genesys
        .create_action(&action_input(
            &integration.id,
            "echo",
            &format!("{remote_base}/echo"),
        ))
        .await
        .unwrap();
    let full = env.genesys.get_action(&action.id).await.unwrap();
    assert_eq!(full.name.as_deref(), Some("echo"));
    assert_eq!(full.config.as_ref().unwrap().request.request_type, "POST");
    assert_eq!(
        full.contract.as_ref().unwrap().input.input_schema["properties"]["orderId"]["type"],
        "string"
    );
    let actions = env
        .genesys
        .list_actions(Page::default(), Some(&integration.id))
        .await
        .unwrap();
    assert_eq!(actions.entities.len(), 1);

    let input = json!({"orderId": "o-1"});
    let test = env.genesys.test_action(&action.id, &input).await.unwrap();
    assert!(test.success, "{test:?}");
    let output = env
        .genesys
        .execute_action(&action.id, &input)
        .await
        .unwrap();
    assert_eq!(output, input);
    // The remote saw the integration's Basic credential (genesys:pa55).
    assert_eq!(
        seen.lock().unwrap().last().unwrap()["authorization"],
        "Basic Z2VuZXN5czpwYTU1"
    );

    let renamed = env
        .genesys
        .patch_action(
            &action.id,
            &UpdateActionInput {
                category: None,
                name: Some("echo2".to_owned()),
                config: None,
                version: full.version.unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name.as_deref(), Some("echo2"));

    let failing = env
        .genesys
        .create_action(&action_input(
            &integration.id,
            "fail",
            &format!("{remote_base}/fail"),
        ))
        .await
        .unwrap();
    let err = env
        .genesys
        .execute_action(&failing.id, &input)
        .await
        .unwrap_err();
    let GenesysError::Api { body, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        body.details[0].error_code.as_deref(),
        Some("ACTION.REMOTE_ENDPOINT"),
        "{body:?}"
    );
    let test = env.genesys.test_action(&failing.id, &input).await.unwrap();
    assert!(!test.success);
    assert!(test.error.is_some(), "{test:?}");

    env.genesys.delete_action(&failing.id).await.unwrap();
    assert!(
        env.genesys
            .get_action(&failing.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    env.genesys
        .delete_integration(&integration.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn drafts_change_an_action_in_place_and_credentials_are_listed_and_deleted() {
    use genesys_gateway::genesys::models::{
        CreateIntegrationRequest, Credential, CredentialType, EntityRef, PublishDraftInput,
        UpdateDraftInput,
    };
    let env = Env::start().await;
    let (remote_base, _seen) = remote().await;
    let integration = env
        .genesys
        .create_integration(&CreateIntegrationRequest {
            integration_type: EntityRef::id("custom-rest-actions"),
            name: Some("genesys-gateway".to_owned()),
            notes: None,
        })
        .await
        .unwrap();
    let input = action_input(&integration.id, "echo", &format!("{remote_base}/echo"));
    let action = env.genesys.create_action(&input).await.unwrap();

    let draft = env.genesys.create_action_draft(&action.id).await.unwrap();
    assert_eq!(draft.id, action.id);
    assert_eq!(draft.version, Some(1));
    let err = env
        .genesys
        .create_action_draft(&action.id)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err:?}");
    let read = env.genesys.action_draft(&action.id).await.unwrap();
    assert_eq!(read.contract, draft.contract);
    assert_eq!(read.config, draft.config);

    let mut contract = input.contract.clone();
    contract.output.success_schema = json!({"type": "object", "required": ["orderId"]});
    let patched = env
        .genesys
        .patch_action_draft(
            &action.id,
            &UpdateDraftInput {
                category: None,
                name: None,
                config: None,
                contract: Some(contract.clone()),
                secure: None,
                version: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.version, Some(2));
    let err = env
        .genesys
        .publish_action_draft(&action.id, &PublishDraftInput { version: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err:?}");
    let published = env
        .genesys
        .publish_action_draft(&action.id, &PublishDraftInput { version: 2 })
        .await
        .unwrap();
    assert_eq!(published.id, action.id);
    assert_eq!(published.contract, Some(contract));
    assert!(
        env.genesys
            .action_draft(&action.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    env.genesys.create_action_draft(&action.id).await.unwrap();
    env.genesys.delete_action_draft(&action.id).await.unwrap();
    assert!(
        env.genesys
            .delete_action_draft(&action.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let paths: Vec<String> = env
        .requests("/api/v2/integrations/actions/*/draft*")
        .await
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(paths.contains(&format!(
        "POST /api/v2/integrations/actions/{}/draft/publish",
        action.id
    )));

    let credential = env
        .genesys
        .create_credential(&Credential {
            name: "genesys-gateway".to_owned(),
            kind: CredentialType {
                name: "basicAuth".to_owned(),
            },
            credential_fields: [
                ("userName".to_owned(), "genesys".to_owned()),
                ("password".to_owned(), "pa55".to_owned()),
            ]
            .into(),
        })
        .await
        .unwrap();
    let listed = env.genesys.list_credentials(Page::default()).await.unwrap();
    assert_eq!(listed.entities.len(), 1);
    assert_eq!(listed.entities[0].id, credential.id);
    assert_eq!(listed.entities[0].name.as_deref(), Some("genesys-gateway"));
    env.genesys.delete_credential(&credential.id).await.unwrap();
    assert!(
        env.genesys
            .delete_credential(&credential.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        env.genesys
            .list_credentials(Page::default())
            .await
            .unwrap()
            .entities
            .is_empty()
    );
}
