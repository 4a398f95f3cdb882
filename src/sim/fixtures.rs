//! The simulator's fixed data: OAuth clients, users and queues.
//!
//! A fixtures file is JSON: `{"clients": [{"id", "secret"}], "users": [{"id", "name", "email",
//! ...}], "queues": [{"id", "name", ...}]}`. Each kind present in the file (even as an empty list)
//! replaces the built-in entries of that kind; absent kinds keep the built-in ones. Users and
//! queues may carry any other field of Genesys' `User` / `Queue`; missing common fields
//! (`division`, `state`, `version`, `selfUri`, ...) are filled in like Genesys would.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The built-in client id.
pub const SIM_CLIENT_ID: &str = "sim-client";
/// The built-in client secret.
pub const SIM_CLIENT_SECRET: &str = "sim-secret";

/// The id of the simulated organisation's home division.
pub(crate) const HOME_DIVISION_ID: &str = "6f1b2a3c-0000-4000-8000-0000000000d1";

/// An OAuth client accepted by `POST /oauth/token`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientFixture {
    /// The client id.
    pub id: String,
    /// The client secret (never printed).
    pub secret: SecretString,
}

/// Why a fixtures file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixturesError {
    /// The file cannot be read.
    #[error("{}: cannot read the fixtures file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the JSON expected.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location.
        message: String,
    },
}

/// The simulator's clients, users and queues.
#[derive(Debug, Clone)]
pub struct Fixtures {
    clients: Vec<ClientFixture>,
    users: Vec<Value>,
    queues: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixturesFile {
    clients: Option<Vec<ClientFixture>>,
    users: Option<Vec<Map<String, Value>>>,
    queues: Option<Vec<Map<String, Value>>>,
}

impl Default for Fixtures {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Fixtures {
    /// The built-in fixtures: client `sim-client` / `sim-secret`, users `u-1`..`u-3`, queues
    /// "Support" (`a3b1f7c2-0000-4000-8000-000000000001`) and "Billing"
    /// (`a3b1f7c2-0000-4000-8000-000000000002`).
    pub fn builtin() -> Self {
        let users = [
            (
                "u-1",
                "Ada Lovelace",
                "ada.lovelace@example.com",
                "Engineering",
                "Principal Engineer",
            ),
            (
                "u-2",
                "Grace Hopper",
                "grace.hopper@example.com",
                "Operations",
                "Contact Center Manager",
            ),
            (
                "u-3",
                "Alan Turing",
                "alan.turing@example.com",
                "Support",
                "Support Agent",
            ),
        ]
        .into_iter()
        .map(|(id, name, email, department, title)| {
            let mut user = Map::new();
            user.insert("id".into(), json!(id));
            user.insert("name".into(), json!(name));
            user.insert("email".into(), json!(email));
            user.insert("department".into(), json!(department));
            user.insert("title".into(), json!(title));
            normalize_user(user)
        })
        .collect();
        let queues = [
            ("a3b1f7c2-0000-4000-8000-000000000001", "Support"),
            ("a3b1f7c2-0000-4000-8000-000000000002", "Billing"),
        ]
        .into_iter()
        .map(|(id, name)| {
            let mut queue = Map::new();
            queue.insert("id".into(), json!(id));
            queue.insert("name".into(), json!(name));
            normalize_queue(queue)
        })
        .collect();
        Self {
            clients: vec![ClientFixture {
                id: SIM_CLIENT_ID.to_owned(),
                secret: SecretString::from(SIM_CLIENT_SECRET),
            }],
            users,
            queues,
        }
    }

    /// Reads a fixtures file; kinds present in it replace the built-in ones.
    ///
    /// # Errors
    /// When the file cannot be read, is not JSON of the expected shape, or an entry lacks its
    /// `id` / `name` (users, queues) or `id` / `secret` (clients).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, FixturesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FixturesError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text).map_err(|message| FixturesError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: FixturesFile =
            serde_path_to_error::deserialize(de).map_err(|err| match err.path().to_string() {
                p if p == "." => err.inner().to_string(),
                p => format!("{p}: {}", err.inner()),
            })?;
        let mut fixtures = Self::builtin();
        if let Some(clients) = file.clients {
            for (i, c) in clients.iter().enumerate() {
                if c.id.is_empty() || c.secret.expose_secret().is_empty() {
                    return Err(format!("clients[{i}]: id and secret must not be empty"));
                }
            }
            fixtures.clients = clients;
        }
        if let Some(users) = file.users {
            fixtures.users = checked("users", users)?
                .into_iter()
                .map(normalize_user)
                .collect();
        }
        if let Some(queues) = file.queues {
            fixtures.queues = checked("queues", queues)?
                .into_iter()
                .map(normalize_queue)
                .collect();
        }
        Ok(fixtures)
    }

    /// The OAuth clients.
    pub fn clients(&self) -> &[ClientFixture] {
        &self.clients
    }

    /// The users, as Genesys `User` objects.
    pub fn users(&self) -> &[Value] {
        &self.users
    }

    /// The queues, as Genesys `Queue` objects.
    pub fn queues(&self) -> &[Value] {
        &self.queues
    }

    /// The queue with this id.
    pub(crate) fn queue(&self, id: &str) -> Option<&Value> {
        self.queues.iter().find(|q| q["id"] == id)
    }
}

fn checked(
    kind: &str,
    entries: Vec<Map<String, Value>>,
) -> Result<Vec<Map<String, Value>>, String> {
    for (i, entry) in entries.iter().enumerate() {
        for key in ["id", "name"] {
            match entry.get(key) {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => return Err(format!("{kind}[{i}].{key}: a non-empty string is required")),
            }
        }
    }
    Ok(entries)
}

fn home_division() -> Value {
    json!({
        "id": HOME_DIVISION_ID,
        "name": "Home",
        "selfUri": format!("/api/v2/authorization/divisions/{HOME_DIVISION_ID}"),
    })
}

const CREATED: &str = "2024-01-15T09:30:00.000Z";

fn normalize_user(mut user: Map<String, Value>) -> Value {
    let id = user["id"].as_str().unwrap_or_default().to_owned();
    let email = user.get("email").cloned().unwrap_or(Value::Null);
    user.entry("division").or_insert_with(home_division);
    user.entry("chat")
        .or_insert_with(|| json!({ "jabberId": format!("{id}@sim.orgspan.com") }));
    if let Value::String(email) = &email {
        user.entry("username").or_insert_with(|| json!(email));
        user.entry("primaryContactInfo").or_insert_with(
            || json!([{ "address": email, "mediaType": "EMAIL", "type": "PRIMARY" }]),
        );
    }
    user.entry("addresses").or_insert_with(|| json!([]));
    user.entry("state").or_insert_with(|| json!("active"));
    user.entry("version").or_insert_with(|| json!(1));
    user.entry("acdAutoAnswer").or_insert_with(|| json!(false));
    user.entry("selfUri")
        .or_insert_with(|| json!(format!("/api/v2/users/{id}")));
    Value::Object(user)
}

fn normalize_queue(mut queue: Map<String, Value>) -> Value {
    let id = queue["id"].as_str().unwrap_or_default().to_owned();
    queue.entry("division").or_insert_with(home_division);
    queue.entry("description").or_insert_with(|| json!(""));
    queue.entry("dateCreated").or_insert_with(|| json!(CREATED));
    queue
        .entry("dateModified")
        .or_insert_with(|| json!(CREATED));
    queue.entry("modifiedBy").or_insert_with(|| json!("u-2"));
    queue.entry("createdBy").or_insert_with(|| json!("u-2"));
    queue.entry("memberCount").or_insert_with(|| json!(3));
    queue.entry("userMemberCount").or_insert_with(|| json!(3));
    queue.entry("joinedMemberCount").or_insert_with(|| json!(3));
    queue.entry("mediaSettings").or_insert_with(|| {
        let media = json!({ "alertingTimeoutSeconds": 8, "serviceLevel": { "percentage": 0.8, "durationMs": 20000 } });
        json!({ "call": media, "callback": media, "chat": media, "email": media, "message": media })
    });
    queue.entry("routingRules").or_insert_with(|| json!([]));
    queue
        .entry("bullseye")
        .or_insert_with(|| json!({ "rings": [] }));
    queue
        .entry("acwSettings")
        .or_insert_with(|| json!({ "wrapupPrompt": "MANDATORY_TIMEOUT", "timeoutMs": 300000 }));
    queue
        .entry("skillEvaluationMethod")
        .or_insert_with(|| json!("ALL"));
    queue
        .entry("scoringMethod")
        .or_insert_with(|| json!("TimestampAndPriority"));
    queue
        .entry("lastAgentRoutingMode")
        .or_insert_with(|| json!("Disabled"));
    queue
        .entry("autoAnswerOnly")
        .or_insert_with(|| json!(false));
    queue
        .entry("enableTranscription")
        .or_insert_with(|| json!(false));
    queue
        .entry("enableAudioMonitoring")
        .or_insert_with(|| json!(false));
    queue
        .entry("enableManualAssignment")
        .or_insert_with(|| json!(false));
    queue
        .entry("suppressInQueueCallRecording")
        .or_insert_with(|| json!(true));
    queue
        .entry("selfUri")
        .or_insert_with(|| json!(format!("/api/v2/routing/queues/{id}")));
    Value::Object(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_kind_replaces_the_builtin_one_even_when_empty() {
        let f = Fixtures::from_json(r#"{"users": [], "queues": [{"id": "q", "name": "Q"}]}"#)
            .expect("valid");
        assert!(f.users().is_empty());
        assert_eq!(f.queues().len(), 1);
        assert_eq!(f.queues()[0]["selfUri"], "/api/v2/routing/queues/q");
        assert_eq!(f.clients()[0].id, SIM_CLIENT_ID);
    }

    #[test]
    fn entries_without_a_name_are_refused_with_their_index() {
        let err = Fixtures::from_json(r#"{"users": [{"id": "a", "name": "A"}, {"id": "b"}]}"#)
            .expect_err("invalid");
        assert_eq!(err, "users[1].name: a non-empty string is required");
        let err = Fixtures::from_json(r#"{"clients": [{"id": "a"}]}"#).expect_err("invalid");
        assert!(err.contains("clients[0]"), "{err}");
    }
}
