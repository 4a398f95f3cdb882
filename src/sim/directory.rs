//! Users and routing queues from the fixtures: `GET /api/v2/users[/{id}]`,
//! `GET /api/v2/routing/queues[/{id}]`, with Genesys paging and the common filters
//! (`id` for both, `state` for users, `name` with `*` wildcards for queues).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use super::error::GenesysError;
use super::extract::QueryPairs;
use super::paging::Page;
use super::state::Sim;

/// `GET /api/v2/users/{userId}`.
pub(crate) async fn get_user(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    sim.fixtures
        .users()
        .iter()
        .find(|u| u["id"] == id.as_str())
        .cloned()
        .map(Json)
        .ok_or_else(|| GenesysError::not_found(format!("User {id} not found")))
}

/// `GET /api/v2/users`.
pub(crate) async fn list_users(
    State(sim): State<Arc<Sim>>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    let ids = query.all("id");
    let state = query.first("state").unwrap_or("active").to_owned();
    let users: Vec<Value> = sim
        .fixtures
        .users()
        .iter()
        .filter(|u| ids.is_empty() || ids.iter().any(|id| u["id"] == id.as_str()))
        .filter(|u| state == "any" || u["state"] == state.as_str())
        .cloned()
        .collect();
    Ok(Json(page.envelope(users, "/api/v2/users", "")))
}

/// `GET /api/v2/routing/queues/{queueId}`.
pub(crate) async fn get_queue(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, GenesysError> {
    sim.fixtures
        .queue(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| GenesysError::not_found(format!("Queue {id} not found")))
}

/// `GET /api/v2/routing/queues`.
pub(crate) async fn list_queues(
    State(sim): State<Arc<Sim>>,
    query: QueryPairs,
) -> Result<Json<Value>, GenesysError> {
    let page = Page::from_query(&query)?;
    let ids = query.all("id");
    let name = query.first("name").map(str::to_lowercase);
    let queues: Vec<Value> = sim
        .fixtures
        .queues()
        .iter()
        .filter(|q| ids.is_empty() || ids.iter().any(|id| q["id"] == id.as_str()))
        .filter(|q| {
            name.as_ref().is_none_or(|pattern| {
                let actual = q["name"].as_str().unwrap_or_default().to_lowercase();
                wildmatch::WildMatch::new(pattern).matches(&actual)
            })
        })
        .cloned()
        .collect();
    let mut sorted = queues;
    if query
        .first("sortOrder")
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"))
    {
        sorted.sort_by(|a, b| b["name"].as_str().cmp(&a["name"].as_str()));
    } else {
        sorted.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    Ok(Json(page.envelope(sorted, "/api/v2/routing/queues", "")))
}
