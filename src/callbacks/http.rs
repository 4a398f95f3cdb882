//! The HTTP surface of callbacks: the four `/v1/callbacks` endpoints and the reservation stream
//! (credential of `[callbacks.auth]`), and `POST /v1/genesys/events` (credential of
//! `[data_actions.auth]`, the one Genesys flows already hold).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/callbacks` | 201 the reservation (`Location` names it); 400, 409 `capacity.exceeded`, 502/503/504 when Genesys refused or stayed unavailable (the reservation is then `failed`) |
//! | `GET /v1/callbacks/{id}` | 200 the reservation; 404 |
//! | `GET /v1/callbacks?queueId=&status=&limit=&cursor=` | 200 `{"entities", "nextCursor"}`, newest first |
//! | `DELETE /v1/callbacks/{id}` | 200 the canceled reservation; 404; 409 `conflict` when it is already `completed`, `canceled` or `failed` |
//! | `GET /v1/callbacks/stream?since=&format=json\|msgpack` | a WebSocket of every change (see [`super::stream`]) |
//! | `POST /v1/genesys/events` | 202 `{"applied", "ignored"}` for one notification envelope or an array of them |
//!
//! Credentials are checked before anything else. A credential-named query parameter
//! (`api_key=`, `access_token=`...: the one list of [`crate::auth::CREDENTIAL_QUERY_PARAMETERS`])
//! is refused with 401 `invalid.token` (a credential must never travel where access logs keep
//! it); any other unknown query parameter is 400 `bad.request` naming it.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Request, State};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{CallbacksError, ReservationError};
use super::notification::CallbackUpdate;
use super::reservation::Reservation;
use super::service::{Applied, Reservations};
use super::status::ReservationStatus;
use super::stream::{self, StreamFormat};
use crate::auth::{self, InboundAuth};
use crate::error::{ApiError, ErrorDetail, JsonBytes, Query};
use crate::genesys::NotificationEvent;
use crate::store::{Page, PageRequest};

/// At most this many envelopes in one `POST /v1/genesys/events`.
pub const MAX_EVENTS: usize = 1000;
/// The largest message a stream consumer may send (an ack is a few bytes).
const MAX_INBOUND_MESSAGE: usize = 4096;
/// The callbacks routes: `/v1/callbacks*` behind `auth` (`[callbacks.auth]`), and
/// `POST /v1/genesys/events`, which checks `[data_actions.auth]` as in force for each call.
pub fn router(reservations: Reservations, auth: InboundAuth) -> OpenApiRouter {
    let portal = OpenApiRouter::new()
        .routes(routes!(reserve, list))
        .routes(routes!(get_one, cancel))
        .routes(routes!(watch))
        .with_state(reservations.clone())
        .route_layer(from_fn_with_state(auth, auth::require));
    let events = OpenApiRouter::new()
        .routes(routes!(genesys_events))
        .with_state(reservations);
    portal.merge(events)
}

/// 200 (or `status`) with a reservation.
fn reservation_response(status: StatusCode, reservation: &Reservation) -> Response {
    let mut response = (status, axum::Json(reservation)).into_response();
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/v1/callbacks/{}", reservation.id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Reserves a callback in the first requested slot with a free place and schedules it in
/// Genesys.
#[utoipa::path(post, path = "/v1/callbacks", tag = "callbacks",
    request_body(content = Object, description = "`{callbackNumber, callbackUserName, queueId, reason, timeSlots: [{start, end}], channelPreferences, concurrencyLimit, data}`", content_type = "application/json"),
    responses((status = 201, description = "The reservation, `scheduled`, version 1", body = Object),
              (status = 400, description = "`invalid.input`: a rule is broken (details name each field); `bad.request`"),
              (status = 401, description = "Missing or wrong credentials"),
              (status = 409, description = "`capacity.exceeded`: no requested slot has a free place"),
              (status = 502, description = "`upstream.error`: Genesys refused the callback (the reservation is `failed`)"),
              (status = 503, description = "`upstream.unavailable` or `circuit.open` (the reservation is `failed`)"),
              (status = 504, description = "`request.timeout`")))]
async fn reserve(
    State(reservations): State<Reservations>,
    Query(_none): Query<NoQuery>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ReservationError> {
    let reservation = reservations.reserve(&body).await?;
    Ok(reservation_response(StatusCode::CREATED, &reservation))
}

/// No query parameter is accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

/// Query of `GET /v1/callbacks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this queue's reservations.
    queue_id: Option<String>,
    /// Only those in this status (`scheduled`, `in_progress`, `completed`, `canceled`, `failed`).
    status: Option<String>,
    /// Page size (default 100, at most 1000).
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// Lists reservations, newest first.
#[utoipa::path(get, path = "/v1/callbacks", tag = "callbacks", params(ListQuery),
    responses((status = 200, description = "`{entities, nextCursor}`", body = Object),
              (status = 400, description = "`bad.request`: an unknown parameter, status or cursor"),
              (status = 401, description = "Missing or wrong credentials")))]
async fn list(
    State(reservations): State<Reservations>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Page<Reservation>>, ReservationError> {
    let status = q
        .status
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ReservationStatus>()
                .ok()
                .filter(|s| s.is_published())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "`status` must be one of scheduled, in_progress, completed, canceled, \
                         failed.",
                    )
                })
        })
        .transpose()?;
    let page = PageRequest {
        limit: q
            .limit
            .unwrap_or(PageRequest::DEFAULT_LIMIT)
            .clamp(1, PageRequest::MAX_LIMIT),
        cursor: q.cursor.filter(|c| !c.is_empty()),
    };
    let queue_id = q.queue_id.filter(|q| !q.is_empty());
    Ok(axum::Json(
        reservations.list(queue_id, status, &page).await?,
    ))
}

/// One reservation.
#[utoipa::path(get, path = "/v1/callbacks/{id}", tag = "callbacks",
    params(("id" = String, Path, description = "Reservation id")),
    responses((status = 200, description = "The reservation", body = Object),
              (status = 401, description = "Missing or wrong credentials"),
              (status = 404, description = "No such reservation")))]
async fn get_one(
    State(reservations): State<Reservations>,
    Path(id): Path<String>,
    Query(_none): Query<NoQuery>,
) -> Result<Response, ReservationError> {
    let reservation = reservations.get(&id).await?;
    Ok(reservation_response(StatusCode::OK, &reservation))
}

/// Cancels a reservation (and its callback in Genesys).
#[utoipa::path(delete, path = "/v1/callbacks/{id}", tag = "callbacks",
    params(("id" = String, Path, description = "Reservation id")),
    responses((status = 200, description = "The reservation, `canceled`", body = Object),
              (status = 401, description = "Missing or wrong credentials"),
              (status = 404, description = "No such reservation"),
              (status = 409, description = "`conflict`: already completed, canceled or failed"),
              (status = 502, description = "`upstream.error`: Genesys refused the disconnect"),
              (status = 503, description = "`upstream.unavailable` or `circuit.open`")))]
async fn cancel(
    State(reservations): State<Reservations>,
    Path(id): Path<String>,
    Query(_none): Query<NoQuery>,
) -> Result<Response, ReservationError> {
    let reservation = reservations.cancel(&id).await?;
    Ok(reservation_response(StatusCode::OK, &reservation))
}

/// Query of `GET /v1/callbacks/stream`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Replay every change with a greater `seq` first.
    since: Option<u64>,
    /// `json` (text frames, the default) or `msgpack` (binary frames).
    #[param(value_type = Option<String>)]
    format: Option<StreamFormat>,
}

/// Every reservation change, as a WebSocket.
#[utoipa::path(get, path = "/v1/callbacks/stream", tag = "callbacks", params(StreamQuery),
    responses((status = 101, description = "WebSocket: frames `{seq, type, reservation}`; the client may send `{\"ack\": seq}`"),
              (status = 400, description = "`bad.request`: not a WebSocket upgrade, or a bad parameter"),
              (status = 401, description = "Missing or wrong credentials")))]
async fn watch(
    State(reservations): State<Reservations>,
    Query(q): Query<StreamQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ApiError::bad_request("This endpoint is a WebSocket: send an upgrade request.")
            .into_response();
    };
    let hub = reservations.hub().clone();
    let store = reservations.store().clone();
    let format = q.format.unwrap_or_default();
    upgrade
        .max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE)
        .on_upgrade(move |socket| {
            let tracker = hub.clone();
            tracker.track(stream::serve(socket, hub, store, q.since, format))
        })
}

/// What `POST /v1/genesys/events` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsApplied {
    /// Events about reservations the gateway holds.
    pub applied: usize,
    /// Events about anything else.
    pub ignored: usize,
}

/// Applies notification envelopes pushed by a Genesys workflow, as if they came over the
/// notifications socket.
#[utoipa::path(post, path = "/v1/genesys/events", tag = "callbacks",
    request_body(content = Object, description = "`{topicName, version, eventBody, metadata}` or an array of them", content_type = "application/json"),
    security(("basic" = [])),
    responses((status = 202, description = "`{applied, ignored}`", body = Object),
              (status = 400, description = "`invalid.input`: not an envelope (details name each)"),
              (status = 401, description = "Missing or wrong credentials")))]
async fn genesys_events(State(reservations): State<Reservations>, req: Request) -> Response {
    let auth = reservations.events_auth();
    // A credential in the query string is refused first (401 `invalid.token`), then the
    // headers are checked.
    if let Err(err) = auth.check_request(req.uri(), req.headers()) {
        return err.into_response();
    }
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return ApiError::bad_request("This endpoint takes no query parameter.").into_response();
    }
    let result = async {
        let JsonBytes(body) = JsonBytes::from_request(req, &()).await?;
        let events = envelopes(&body)?;
        let mut answer = EventsApplied {
            applied: 0,
            ignored: 0,
        };
        for event in &events {
            let applied = match CallbackUpdate::from_notification(event) {
                Some(update) => reservations.apply(&update).await?,
                None => Applied::Ignored,
            };
            match applied {
                Applied::Applied => answer.applied += 1,
                Applied::Ignored => answer.ignored += 1,
            }
        }
        Ok::<_, ReservationError>(answer)
    }
    .await;
    match result {
        Ok(answer) => (StatusCode::ACCEPTED, axum::Json(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// The envelopes of a body: one object or an array of at most [`MAX_EVENTS`].
fn envelopes(body: &[u8]) -> Result<Vec<NotificationEvent>, ReservationError> {
    let value = super::request::parse_strict(body)?;
    let (items, indexed) = match value {
        Value::Array(items) => (items, true),
        one @ Value::Object(_) => (vec![one], false),
        _ => {
            return Err(CallbacksError::invalid(vec![ErrorDetail::new(
                "",
                "type",
                "must be a notification envelope or an array of them",
            )])
            .into());
        }
    };
    if items.len() > MAX_EVENTS {
        return Err(CallbacksError::invalid(vec![ErrorDetail::new(
            "",
            "maxItems",
            format!("at most {MAX_EVENTS} envelopes"),
        )])
        .into());
    }
    let mut details = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if indexed {
            format!("/{i}")
        } else {
            String::new()
        };
        match serde_json::from_value::<NotificationEvent>(item) {
            Ok(event) => events.push(event),
            Err(err) => details.push(ErrorDetail::new(
                format!("{at}/topicName"),
                "type",
                format!("not a notification envelope: {err}"),
            )),
        }
    }
    if details.is_empty() {
        Ok(events)
    } else {
        Err(CallbacksError::invalid(details).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_one_or_many() {
        let one = br#"{"topicName": "t", "eventBody": {}}"#;
        assert_eq!(envelopes(one).unwrap().len(), 1);
        let many = br#"[{"topicName": "a"}, {"topicName": "b", "version": "2"}]"#;
        assert_eq!(envelopes(many).unwrap().len(), 2);
        let Err(ReservationError::Request(CallbacksError::Invalid(details))) =
            envelopes(br#"[{"topicName": "a"}, {"eventBody": {}}]"#)
        else {
            panic!("an envelope without topicName is invalid");
        };
        assert_eq!(details[0].field_name, "/1/topicName");
        assert!(matches!(
            envelopes(b"7"),
            Err(ReservationError::Request(CallbacksError::Invalid(_)))
        ));
        assert!(matches!(
            envelopes(br#"{"topicName": "a", "topicName": "b"}"#),
            Err(ReservationError::Request(CallbacksError::DuplicateKey(_)))
        ));
    }
}
