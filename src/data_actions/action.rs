//! One data action: its definition, compiled plans and schemas, and the builder that makes it.
//!
//! Every action — written in code with [`DataAction::builder`] or read from `[[actions]]` with
//! [`DataAction::from_settings`] — goes through the same [`DataActionBuilder::build`], which
//! checks every rule and compiles everything once: the path template, every pointer, header
//! names and literal values, both schemas. A built action never parses anything per request.

use std::fmt;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use super::mapping::{OutputPlan, RequestPlan, RequestSpec, key_path};
use crate::config::{ActionSettings, ConfigSource, MappingSource, Problem};
use crate::json::Schema;

/// Genesys' own limit on a data action's duration, and so the largest action deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The deadline of an action that does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Methods an action may use towards its upstream.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The name of a data action: `[A-Za-z0-9_-]{1,64}`, served at `POST /v1/actions/<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionName(Box<str>);

impl ActionName {
    /// Parses a name.
    ///
    /// # Errors
    /// When it does not match `[A-Za-z0-9_-]{1,64}`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name.into()))
        } else {
            Err("must match [A-Za-z0-9_-]{1,64}".to_owned())
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionName({})", self.0)
    }
}

/// A compiled data action.
///
/// Its `Debug` shows the definition but never a mapping literal or default (they may hold
/// credentials from `${VAR}`), nor the example input.
#[derive(Clone)]
pub struct DataAction {
    name: ActionName,
    upstream: String,
    method: Method,
    path: String,
    timeout: Duration,
    input_schema: Option<Schema>,
    output_schema: Option<Schema>,
    example_input: Option<Value>,
    request: RequestPlan,
    output: OutputPlan,
}

impl fmt::Debug for DataAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataAction")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("input_schema", &self.input_schema.is_some())
            .field("output_schema", &self.output_schema.is_some())
            .field("example_input", &self.example_input.is_some())
            .field("request", &self.request)
            .field("output", &self.output)
            .finish()
    }
}

impl DataAction {
    /// Starts describing an action named `name`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use genesys_gateway::config::MappingSource;
    /// use genesys_gateway::data_actions::DataAction;
    /// use http::Method;
    /// use serde_json::json;
    ///
    /// let action = DataAction::builder("lookupOrder")
    ///     .upstream("crm")
    ///     .method(Method::GET)
    ///     .path("/orders/{id}")
    ///     .param("id", "/orderId")
    ///     .query("expand", MappingSource::literal("lines"))
    ///     .header("X-Tenant", MappingSource::or_default("/tenant", json!("default")))
    ///     .output_field("/status", "/state")
    ///     .output_field("/total", MappingSource::required("/amounts/total"))
    ///     .input_schema(json!({
    ///         "type": "object",
    ///         "required": ["orderId"],
    ///         "properties": {"orderId": {"type": "string", "minLength": 1}}
    ///     }))
    ///     .timeout(Duration::from_secs(5))
    ///     .build()
    ///     .expect("a valid action");
    /// assert_eq!(action.name().as_str(), "lookupOrder");
    ///
    /// // Problems are reported all at once, with key paths.
    /// let problems = DataAction::builder("bad name!").path("/x/{y}").build().unwrap_err();
    /// let keys: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(keys, ["name", "upstream", "path"]);
    /// ```
    pub fn builder(name: impl Into<String>) -> DataActionBuilder {
        DataActionBuilder {
            name: name.into(),
            upstream: None,
            method: Method::GET,
            path: None,
            timeout: DEFAULT_TIMEOUT,
            params: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            output: None,
            input_schema: None,
            output_schema: None,
            example_input: None,
            problems: Vec::new(),
        }
    }

    /// Builds the action `[[actions]]` entry number `index` describes, with schema files
    /// resolved against the config folder.
    ///
    /// # Errors
    /// Every problem, with its full key path (`actions[2].params.userId`).
    pub fn from_settings(
        settings: &ActionSettings,
        index: usize,
        source: &ConfigSource,
    ) -> Result<Self, Vec<Problem>> {
        let mut builder = Self::builder(&settings.name)
            .upstream(&settings.upstream)
            .path(&settings.path)
            .timeout(settings.timeout());
        match Method::from_bytes(settings.method.as_bytes()) {
            Ok(m) => builder = builder.method(m),
            Err(_) => builder.problem("method", method_message()),
        }
        for (name, pointer) in &settings.params {
            builder = builder.param(name, pointer);
        }
        for (name, src) in &settings.query {
            builder = builder.query(name, src.clone());
        }
        for (name, src) in &settings.headers {
            builder = builder.header(name, src.clone());
        }
        if let Some(body) = &settings.body {
            builder.body = Some(body.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        if let Some(output) = &settings.output {
            builder.output = Some(output.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        for (key, schema, slot) in [
            (
                "input_schema",
                &settings.input_schema,
                &mut builder.input_schema,
            ),
            (
                "output_schema",
                &settings.output_schema,
                &mut builder.output_schema,
            ),
        ] {
            if let Some(schema) = schema {
                match Schema::load(schema, source) {
                    Ok(doc) => *slot = Some(doc),
                    Err(message) => builder.problems.push(Problem::new(key, message)),
                }
            }
        }
        if let Some(example) = &settings.example_input {
            builder = builder.example_input(example.clone());
        }
        builder.build().map_err(|problems| {
            problems
                .into_iter()
                .map(|p| Problem::new(format!("actions[{index}].{}", p.path), p.message))
                .collect()
        })
    }

    /// The name.
    pub fn name(&self) -> &ActionName {
        &self.name
    }

    /// The upstream it calls.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The method of the upstream call.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template as written.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The whole-action deadline, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The compiled input schema.
    pub fn input_schema(&self) -> Option<&Schema> {
        self.input_schema.as_ref()
    }

    /// The compiled output schema.
    pub fn output_schema(&self) -> Option<&Schema> {
        self.output_schema.as_ref()
    }

    /// The example input `actions publish` tests the action with.
    pub fn example_input(&self) -> Option<&Value> {
        self.example_input.as_ref()
    }

    /// The compiled request side.
    pub fn request(&self) -> &RequestPlan {
        &self.request
    }

    /// The compiled output side.
    pub fn output(&self) -> &OutputPlan {
        &self.output
    }
}

/// Describes a [`DataAction`] step by step; [`DataActionBuilder::build`] checks and compiles.
///
/// Its `Debug` shows no mapping source (literals may hold credentials).
#[derive(Clone)]
#[must_use]
pub struct DataActionBuilder {
    name: String,
    upstream: Option<String>,
    method: Method,
    path: Option<String>,
    timeout: Duration,
    params: Vec<(String, String)>,
    query: Vec<(String, MappingSource)>,
    headers: Vec<(String, MappingSource)>,
    body: Option<Vec<(String, MappingSource)>>,
    output: Option<Vec<(String, MappingSource)>>,
    input_schema: Option<Value>,
    output_schema: Option<Value>,
    example_input: Option<Value>,
    problems: Vec<Problem>,
}

impl fmt::Debug for DataActionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataActionBuilder")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DataActionBuilder {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// The upstream to call (`genesys` or a `[upstreams.<name>]`).
    pub fn upstream(mut self, upstream: impl Into<String>) -> Self {
        self.upstream = Some(upstream.into());
        self
    }

    /// The method of the upstream call (GET, POST, PUT, PATCH or DELETE; default GET).
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The path appended to the upstream's base URL, with `{placeholder}`s.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The whole-action deadline, retries included (at most 60 s; default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fills `{placeholder}` from the input value at `pointer` (always required).
    pub fn param(mut self, placeholder: impl Into<String>, pointer: impl Into<String>) -> Self {
        self.params.push((placeholder.into(), pointer.into()));
        self
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: impl Into<String>, source: impl Into<MappingSource>) -> Self {
        self.query.push((name.into(), source.into()));
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, source: impl Into<MappingSource>) -> Self {
        self.headers.push((name.into(), source.into()));
        self
    }

    /// Writes a field of the request body (the first call replaces forwarding the input).
    pub fn body_field(
        mut self,
        target: impl Into<String>,
        source: impl Into<MappingSource>,
    ) -> Self {
        self.body
            .get_or_insert_with(Vec::new)
            .push((target.into(), source.into()));
        self
    }

    /// Writes a field of the output (the first call replaces passing the answer through).
    pub fn output_field(
        mut self,
        target: impl Into<String>,
        source: impl Into<MappingSource>,
    ) -> Self {
        self.output
            .get_or_insert_with(Vec::new)
            .push((target.into(), source.into()));
        self
    }

    /// The JSON Schema the input must satisfy.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// The JSON Schema the output must satisfy.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// An input `actions publish` tests the action with in Genesys.
    pub fn example_input(mut self, input: Value) -> Self {
        self.example_input = Some(input);
        self
    }

    /// Checks every rule and compiles the action.
    ///
    /// # Errors
    /// Every problem found, each with its key path relative to the action (`params.userId`,
    /// `input_schema`, `body."/customer/id"`).
    pub fn build(mut self) -> Result<DataAction, Vec<Problem>> {
        let name = ActionName::parse(&self.name).map_err(|m| self.problem("name", m));
        let upstream = match self.upstream.take() {
            Some(u) if !u.is_empty() => Some(u),
            _ => {
                self.problem("upstream", "is required");
                None
            }
        };
        if !METHODS.contains(&self.method) {
            self.problem("method", method_message());
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            self.problem("timeout_ms", "must be between 1 and 60000");
        }
        let mut duplicates = Vec::new();
        for (table, keys) in [
            (
                "params",
                self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ),
            ("query", self.query.iter().map(|(k, _)| k).collect()),
            ("headers", self.headers.iter().map(|(k, _)| k).collect()),
            ("body", self.body.iter().flatten().map(|(k, _)| k).collect()),
            (
                "output",
                self.output.iter().flatten().map(|(k, _)| k).collect(),
            ),
        ] {
            let mut seen = std::collections::HashSet::new();
            duplicates.extend(
                keys.into_iter()
                    .filter(|k| {
                        let key = if table == "headers" {
                            k.to_ascii_lowercase()
                        } else {
                            (*k).clone()
                        };
                        !seen.insert(key)
                    })
                    .map(|k| key_path(table, k)),
            );
        }
        for key in duplicates {
            self.problem(key, "is given twice");
        }

        let path = self.path.take();
        let request = match &path {
            None => {
                self.problem("path", "is required");
                None
            }
            Some(path) => {
                let allows_body = self.method != Method::GET;
                let has_body = matches!(self.method, Method::POST | Method::PUT | Method::PATCH);
                match RequestPlan::compile(RequestSpec {
                    path,
                    params: &self.params,
                    query: &self.query,
                    headers: &self.headers,
                    body: self.body.as_deref(),
                    method_has_body: has_body,
                    method_allows_body: allows_body,
                }) {
                    Ok(plan) => Some(plan),
                    Err(problems) => {
                        for (key, message) in problems {
                            self.problem(key, message);
                        }
                        None
                    }
                }
            }
        };
        let output = match OutputPlan::compile(self.output.as_deref()) {
            Ok(plan) => Some(plan),
            Err(problems) => {
                for (key, message) in problems {
                    self.problem(key, message);
                }
                None
            }
        };
        let mut compile = |key: &str, doc: Option<Value>| match doc.map(Schema::compile) {
            None => None,
            Some(Ok(schema)) => Some(schema),
            Some(Err(message)) => {
                self.problems.push(Problem::new(key, message));
                None
            }
        };
        let input_schema = compile("input_schema", self.input_schema.take());
        let output_schema = compile("output_schema", self.output_schema.take());
        if let (Some(example), Some(schema)) = (&self.example_input, &input_schema) {
            let violations = schema.violations(example);
            if let Some(first) = violations.first() {
                self.problem(
                    "example_input",
                    format!(
                        "does not satisfy input_schema at `{}`: {}",
                        first.field_name, first.message
                    ),
                );
            }
        }
        if self.example_input.as_ref().is_some_and(|e| !e.is_object()) {
            self.problem("example_input", "must be an object");
        }

        match (name, upstream, path, request, output) {
            (Ok(name), Some(upstream), Some(path), Some(request), Some(output))
                if self.problems.is_empty() =>
            {
                Ok(DataAction {
                    name,
                    upstream,
                    method: self.method,
                    path,
                    timeout: self.timeout,
                    input_schema,
                    output_schema,
                    example_input: self.example_input,
                    request,
                    output,
                })
            }
            _ => {
                // Report in the order of the `[[actions]]` keys.
                const ORDER: &[&str] = &[
                    "name",
                    "upstream",
                    "method",
                    "path",
                    "timeout_ms",
                    "input_schema",
                    "output_schema",
                    "example_input",
                    "params",
                    "query",
                    "headers",
                    "body",
                    "output",
                ];
                let rank = |p: &Problem| {
                    let head = p.path.split(['.', '[']).next().unwrap_or("");
                    ORDER.iter().position(|k| *k == head).unwrap_or(ORDER.len())
                };
                self.problems.sort_by_key(rank);
                Err(self.problems)
            }
        }
    }
}

fn method_message() -> String {
    "must be one of GET, POST, PUT, PATCH, DELETE".to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::SchemaSource;

    fn settings() -> ActionSettings {
        ActionSettings {
            name: "fetchUserProfile".into(),
            upstream: "genesys".into(),
            method: "GET".into(),
            path: "/api/v2/users/{userId}".into(),
            timeout_ms: 10_000,
            input_schema: Some(SchemaSource::Inline(json!({
                "type": "object", "required": ["userId"],
                "properties": {"userId": {"type": "string", "minLength": 1}}
            }))),
            output_schema: None,
            example_input: Some(json!({"userId": "u-1"})),
            params: BTreeMap::from([("userId".into(), "/userId".into())]),
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            body: None,
            output: Some(BTreeMap::from([
                ("/id".into(), MappingSource::pointer("/id")),
                ("/name".into(), MappingSource::pointer("/name")),
            ])),
        }
    }

    #[test]
    fn settings_go_through_the_builder() {
        let action = DataAction::from_settings(&settings(), 0, &ConfigSource::default()).unwrap();
        assert_eq!(action.name().as_str(), "fetchUserProfile");
        assert_eq!(action.timeout(), Duration::from_secs(10));
        assert!(action.input_schema().is_some());
        assert!(matches!(action.output(), OutputPlan::Mapped(p) if p.len() == 2));
    }

    #[test]
    fn problems_carry_full_key_paths() {
        let mut s = settings();
        s.method = "TRACE".into();
        s.timeout_ms = 90_000;
        s.params = BTreeMap::from([("userId".into(), "userId".into())]);
        s.input_schema = Some(SchemaSource::Inline(json!({"type": 12})));
        s.output_schema = Some(SchemaSource::File("missing/schema.json".into()));
        s.example_input = Some(json!([1]));
        s.output = Some(BTreeMap::from([(
            "bad".into(),
            MappingSource::pointer("/x"),
        )]));
        let problems = DataAction::from_settings(&s, 2, &ConfigSource::default()).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "actions[2].method",
                "actions[2].timeout_ms",
                "actions[2].input_schema",
                "actions[2].output_schema",
                "actions[2].example_input",
                "actions[2].params.userId",
                "actions[2].output.bad",
            ]
        );
    }

    #[test]
    fn schema_files_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/out.json"),
            r#"{"type":"object","required":["id"]}"#,
        )
        .unwrap();
        let source = ConfigSource {
            file: dir.path().join("gateway.toml"),
            base_dir: dir.path().to_path_buf(),
        };
        let mut s = settings();
        s.output_schema = Some(SchemaSource::File("schemas/out.json".into()));
        let action = DataAction::from_settings(&s, 0, &source).unwrap();
        assert_eq!(
            action.output_schema().unwrap().document(),
            &json!({"type":"object","required":["id"]})
        );
    }

    #[test]
    fn example_input_must_satisfy_the_input_schema() {
        let mut s = settings();
        s.example_input = Some(json!({"userId": ""}));
        let problems = DataAction::from_settings(&s, 0, &ConfigSource::default()).unwrap_err();
        assert_eq!(problems[0].path, "actions[0].example_input");
    }

    #[test]
    fn duplicate_builder_keys_are_problems() {
        let problems = DataAction::builder("x")
            .upstream("crm")
            .path("/a/{id}")
            .param("id", "/id")
            .param("id", "/other")
            .header("X-A", "/a")
            .header("x-a", "/b")
            .build()
            .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(keys, ["params.id", "headers.x-a"]);
    }
}
