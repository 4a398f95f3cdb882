//! Configuration loading: key paths, every problem of a file at once and each once, syntax
//! positions, suggestions, interpolation, environment overrides, secrets kept out of `Debug` and
//! messages, the `check-config` CLI, and a reference (`docs/configuration.md`) that documents
//! every key.

use std::path::Path;
use std::process::Command;

use genesys_gateway::config::{ConfigError, Environment, InboundAuthSettings, Settings};
use secrecy::ExposeSecret;

const MINIMAL: &str = r#"
[genesys]
simulate = true
"#;

fn load(toml: &str, env: &Environment) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    Settings::from_toml(toml, Path::new("gw.toml"), dir.path(), env)
}

fn problems(toml: &str) -> Vec<(String, String)> {
    problems_with(toml, &Environment::default())
}

fn problems_with(toml: &str, env: &Environment) -> Vec<(String, String)> {
    let err = load(toml, env).expect_err("config should be rejected");
    err.problems
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

fn has(problems: &[(String, String)], path: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|(p, m)| p == path && m.contains(needle))
}

#[test]
fn minimal_config_loads_with_defaults() {
    let s = load(MINIMAL, &Environment::default()).unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:8080");
    assert_eq!(s.server.request_timeout_ms, 30_000);
    assert_eq!(s.server.max_body_bytes, 1_048_576);
    assert_eq!(s.genesys.notifications_heartbeat_timeout_s, 35);
    assert!(s.admin_tokens().is_empty());
}

#[test]
fn the_shipped_configs_are_valid() {
    let env = Environment::default();
    let sandbox = Settings::load(Path::new("config/gateway.toml"), &env).unwrap();
    assert!(sandbox.genesys.simulate);
    assert!(!sandbox.actions.is_empty());
    let prod_env = Environment::from_pairs([
        ("GATEWAY_DATABASE_URL", "postgres://gw:pw@db/gw"),
        ("GENESYS_CLIENT_ID", "id"),
        ("GENESYS_CLIENT_SECRET", "secret"),
        ("ADMIN_TOKEN", "0123456789abcdef0123"),
        ("CRM_SECRET", "c"),
        ("DATA_ACTION_PASSWORD", "p"),
        ("EVENTS_CLIENT_SECRET", "e"),
        (
            "ORDER_EVENTS_SECRET",
            "whsec_UBaVFOnYgW8ew5k9ywpCE/a+7VRWKymegwmSkvzy2fs=",
        ),
        ("PORTAL_API_KEY", "k"),
        ("SUPPORT_QUEUE_ID", "q"),
    ]);
    let prod = Settings::load(Path::new("config/production.example.toml"), &prod_env).unwrap();
    assert!(!prod.genesys.simulate);
    assert_eq!(
        prod.admin_tokens().len(),
        1,
        "the empty rotation slot is ignored"
    );
}

#[test]
fn unknown_keys_are_reported_with_their_path() {
    let p = problems(
        r#"
bogus = 1
[server]
listen = "127.0.0.1:0"
colour = "blue"
[genesys]
simulate = true
[upstreams.crm]
base_url = "https://crm.example.com"
retry = { max_attempts = 3, typo = 1 }
[[actions]]
name = "a"
upstream = "crm"
path = "/x"
extra = true
"#,
    );
    assert!(has(&p, "bogus", "unknown key"), "{p:?}");
    assert!(has(&p, "server.colour", "unknown key"), "{p:?}");
    assert!(has(&p, "upstreams.crm.retry.typo", "unknown key"), "{p:?}");
    assert!(has(&p, "actions[0].extra", "unknown key"), "{p:?}");
}

#[test]
fn type_errors_and_missing_fields_name_the_key() {
    let p = problems(
        r#"
[server]
request_timeout_ms = "soon"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
[[actions]]
name = "b"
upstream = "genesys"
path = "/x"
timeout_ms = -5
"#,
    );
    assert!(
        has(&p, "server.request_timeout_ms", "invalid type"),
        "{p:?}"
    );
    assert!(has(&p, "actions[0]", "missing field `path`"), "{p:?}");
    assert!(has(&p, "actions[1].timeout_ms", "expected"), "{p:?}");
}

#[test]
fn rule_violations_are_all_reported_together() {
    let p = problems(
        r#"
[server]
listen = "not an address"
max_concurrent_requests = 0
[genesys]
region = "example.com"
[upstreams.crm]
base_url = "ftp://crm"
retry = { max_attempts = 0 }
[[actions]]
name = "bad name!"
upstream = "nowhere"
method = "FETCH"
path = "x"
timeout_ms = 70000
[[jwt_issuers]]
name = "legacy"
issuer = "i"
audiences = ["a"]
algorithms = ["HS256"]
leeway_s = 120
[ingest]
auth = { type = "jwt", issuers = ["ghost"] }
[[targets]]
name = "t"
endpoint_url = "https://x.example.com"
event_types = []
secret = "plain"
retry_policy = { max_retries = 11, initial_delay_s = 0 }
[[callbacks.queues]]
id = "q"
name = "Q"
timezone = "Mars/Olympus"
open_hours = ["mon-fri 20:00-08:00", "someday"]
slot_capacity = 51
"#,
    );
    for (path, needle) in [
        ("server.listen", "address"),
        ("server.max_concurrent_requests", "greater than 0"),
        ("genesys.region", "unknown region"),
        ("genesys.client_id", "required"),
        ("genesys.client_secret", "required"),
        ("upstreams.crm.base_url", "http(s)"),
        ("upstreams.crm.retry.max_attempts", "between 1 and 10"),
        ("actions[0].name", "[A-Za-z0-9_-]"),
        ("actions[0].upstream", "no upstream named `nowhere`"),
        ("actions[0].method", "one of"),
        ("actions[0].path", "start with /"),
        ("actions[0].timeout_ms", "60000"),
        ("jwt_issuers[0].algorithms[0]", "not allowed"),
        ("jwt_issuers[0].key_file", "required"),
        ("jwt_issuers[0].leeway_s", "at most 60"),
        ("ingest.auth.issuers[0]", "ghost"),
        ("targets[0].event_types", "at least one"),
        ("targets[0].secret", "whsec_"),
        ("targets[0].retry_policy.max_retries", "between 0 and 10"),
        (
            "targets[0].retry_policy.initial_delay_s",
            "between 1 and 30",
        ),
        ("callbacks.queues[0].timezone", "IANA"),
        ("callbacks.queues[0].open_hours[0]", "before the end"),
        ("callbacks.queues[0].open_hours[1]", "does not match"),
        ("callbacks.queues[0].slot_capacity", "between 1 and 50"),
    ] {
        assert!(
            has(&p, path, needle),
            "expected {path}: …{needle}… in {p:#?}"
        );
    }
}

#[test]
fn variables_are_interpolated_with_defaults() {
    let env = Environment::from_pairs([("LISTEN_PORT", "9999"), ("EMPTY", "")]);
    let s = load(
        r#"
[server]
listen = "127.0.0.1:${LISTEN_PORT}"
[store]
url = "${STORE_URL:-sqlite://data/x.db}"
[genesys]
simulate = true
region = "${REGION:-mypurecloud.de}"
[data_actions]
public_url = "${EMPTY:-https://gw.example.com}"
"#,
        &env,
    )
    .unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:9999");
    assert_eq!(s.store.url.expose_secret(), "sqlite://data/x.db");
    assert_eq!(s.genesys.region, "mypurecloud.de");
    assert_eq!(
        s.data_actions.public_url.as_deref(),
        Some("https://gw.example.com")
    );
}

#[test]
fn a_missing_variable_is_named() {
    let p = problems(
        r#"
[genesys]
simulate = true
[data_actions]
auth = { type = "header", name = "X-Key", value = "${GW_KEY}" }
"#,
    );
    assert!(
        has(
            &p,
            "data_actions.auth.value",
            "environment variable GW_KEY is not set"
        ),
        "{p:?}"
    );
}

#[test]
fn gateway_overrides_replace_keys_of_any_type() {
    let env = Environment::from_pairs([
        ("GATEWAY_SERVER__LISTEN", "0.0.0.0:7000"),
        ("GATEWAY_SERVER__MAX_BODY_BYTES", "2048"),
        ("GATEWAY_GENESYS__SIMULATE", "false"),
        ("GATEWAY_GENESYS__CLIENT_ID", "from-env"),
        ("GATEWAY_GENESYS__CLIENT_SECRET", "12345"),
        ("GATEWAY_UPSTREAMS__CRM__TIMEOUT_MS", "750"),
        ("GATEWAY_CONFIG", "ignored.toml"),
    ]);
    let s = load(
        r#"
[server]
listen = "127.0.0.1:8080"
[genesys]
simulate = true
[upstreams.crm]
base_url = "https://crm.example.com"
"#,
        &env,
    )
    .unwrap();
    assert_eq!(s.server.listen, "0.0.0.0:7000");
    assert_eq!(s.server.max_body_bytes, 2048);
    assert!(!s.genesys.simulate);
    assert_eq!(s.genesys.client_id.as_deref(), Some("from-env"));
    assert_eq!(
        s.genesys.client_secret.as_ref().unwrap().expose_secret(),
        "12345",
        "a numeric-looking secret stays a string"
    );
    assert_eq!(s.upstreams["crm"].timeout_ms, 750);
}

#[test]
fn overrides_of_the_wrong_type_and_unknown_sections_are_errors() {
    let env = Environment::from_pairs([
        ("GATEWAY_SERVER__MAX_BODY_BYTES", "lots"),
        ("GATEWAY_NOPE__KEY", "1"),
    ]);
    let p = problems_with(MINIMAL, &env);
    assert!(
        has(
            &p,
            "server.max_body_bytes",
            "GATEWAY_SERVER__MAX_BODY_BYTES"
        ),
        "{p:?}"
    );
    assert!(has(&p, "nope.key", "unknown section"), "{p:?}");
}

#[test]
fn secrets_never_appear_in_debug_output_or_messages() {
    let secrets = [
        "sup3r-s3cret-password",
        "admin-token-abcdef-123456",
        "crm-client-secret-xyz",
        "whsec_UBaVFOnYgW8ew5k9ywpCE/a+7VRWKymegwmSkvzy2fs=",
        "postgres-password-42",
    ];
    let toml = format!(
        r#"
[store]
url = "postgres://gw:{pg}@db/gw"
[genesys]
simulate = true
[admin.auth]
type = "bearer"
tokens = ["{admin}"]
[upstreams.crm]
base_url = "https://crm.example.com"
auth = {{ type = "oauth2_client_credentials", token_url = "https://crm.example.com/t", client_id = "gw", client_secret = "{crm}" }}
[data_actions]
auth = {{ type = "basic", username = "genesys", password = "{pw}" }}
[[targets]]
name = "t"
endpoint_url = "https://t.example.com"
event_types = ["*"]
secret = "{whsec}"
"#,
        pg = secrets[4],
        admin = secrets[1],
        crm = secrets[2],
        pw = secrets[0],
        whsec = secrets[3],
    );
    let s = load(&toml, &Environment::default()).unwrap();
    let debug = format!("{s:?}");
    for secret in secrets {
        assert!(!debug.contains(secret), "{secret} leaked into Debug output");
    }
    assert!(debug.contains("REDACTED"));
    assert!(matches!(
        s.data_actions.auth,
        InboundAuthSettings::Basic { .. }
    ));
    assert!(!s.summary().contains(secrets[4]));

    // A secret of the wrong type is reported without its value.
    let bad = toml.replace(
        &format!("password = \"{}\"", secrets[0]),
        "password = 1234567",
    );
    let err = load(&bad, &Environment::default()).unwrap_err().to_string();
    assert!(err.contains("data_actions.auth"), "{err}");
    assert!(!err.contains("1234567"), "{err}");
}

#[test]
fn errors_print_one_line_per_problem_with_the_file() {
    let err = load(
        "[server]\nlisten = 1\nmax_body_bytes = \"x\"\n[genesys]\nsimulate = true\n",
        &Environment::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|l| l.starts_with("gw.toml: server.")),
        "{text}"
    );
}

#[test]
fn check_config_cli_exits_64_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"nope\"\n[genesys]\nsimulate = true\n[[actions]]\nname = \"x\"\nupstream = \"ghost\"\npath = \"/a\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}: ", file.display());
    assert!(
        stderr.contains(&format!("{prefix}server.listen: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{prefix}actions[0] (x).upstream: ")),
        "{stderr}"
    );
}

#[test]
fn check_config_cli_prints_a_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config", "config/gateway.toml"])
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for section in ["actions", "upstreams", "issuers", "targets", "store"] {
        assert!(
            stdout.contains(section),
            "{section} missing from:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("sandbox-admin-token"),
        "no secret in the summary"
    );
}

#[test]
fn gateway_config_variable_locates_the_file() {
    let env = Environment::from_pairs([("GATEWAY_CONFIG", "/etc/gw.toml")]);
    assert_eq!(Settings::locate(None, &env), Path::new("/etc/gw.toml"));
    assert_eq!(
        Settings::locate(Some(Path::new("x.toml")), &env),
        Path::new("x.toml")
    );
    assert_eq!(
        Settings::locate(None, &Environment::default()),
        Path::new("config/gateway.toml")
    );
}

#[test]
fn mapping_sources_reject_unknown_keys_and_mixed_forms() {
    let p = problems(
        r#"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
path = "/x"
[actions.query]
good = "/q"
typo = { from = "/x", requried = true }
mixed = { from = "/x", value = 1 }
bad = 42
"#,
    );
    assert!(
        has(&p, "actions[0].query.typo", "unknown key `requried`"),
        "{p:?}"
    );
    assert!(
        has(&p, "actions[0].query.mixed", "exclude each other"),
        "{p:?}"
    );
    assert!(has(&p, "actions[0].query.bad", "mapping source"), "{p:?}");
}

#[test]
fn mapping_sources_parse_every_form() {
    use genesys_gateway::config::MappingSource;
    let s = load(
        r#"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
path = "/x"
[actions.query]
p = "/p"
f = { from = "/f", default = "d", required = true }
v = { value = [1, 2] }
"#,
        &Environment::default(),
    )
    .unwrap();
    let q = &s.actions[0].query;
    assert_eq!(q["p"], MappingSource::Pointer("/p".into()));
    assert_eq!(
        q["f"],
        MappingSource::From {
            from: "/f".into(),
            default: Some(serde_json::json!("d")),
            required: true
        }
    );
    assert_eq!(
        q["v"],
        MappingSource::Value {
            value: serde_json::json!([1, 2])
        }
    );
}

#[test]
fn override_values_are_taken_literally() {
    let env = Environment::from_pairs([
        (
            "GATEWAY_DATA_ACTIONS__PUBLIC_URL",
            "https://gw.example.com/${NOT_A_VAR",
        ),
        ("GATEWAY_GENESYS__CLIENT_SECRET", "abc${HOME}def"),
    ]);
    let s = load(MINIMAL, &env).unwrap();
    assert_eq!(
        s.genesys.client_secret.as_ref().unwrap().expose_secret(),
        "abc${HOME}def"
    );
}

#[test]
fn interpolation_errors_do_not_echo_the_value() {
    let p = problems(
        r#"
[genesys]
simulate = true
client_secret = "s3cr3t-${unterminated"
"#,
    );
    assert!(has(&p, "genesys.client_secret", "unterminated"), "{p:?}");
    assert!(!format!("{p:?}").contains("s3cr3t"), "{p:?}");
}

#[test]
fn check_config_reports_rule_action_and_upstream_problems_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        r#"
[server]
max_concurrent_requests = 0
[genesys]
simulate = true
[upstreams.crm]
base_url = "https://crm.example.com"
auth = { type = "api_key", header = "X-Key", key = "line1\nline2" }
[[actions]]
name = "a"
upstream = "crm"
path = "/x/{id}"
input_schema = { type = 12 }
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.max_concurrent_requests",
        "actions[0] (a).input_schema",
        "actions[0] (a).path",
        "upstreams.crm.auth",
    ] {
        assert!(
            stderr.contains(&format!(": {path}")),
            "{path} missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("line1"), "no secret echoed: {stderr}");
}

#[test]
fn serve_exits_64_on_a_problem_found_while_building() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(
        &file,
        r#"
[server]
listen = "127.0.0.1:0"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
path = "/x"
output_schema = "schemas/missing.json"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("actions[0] (a).output_schema"));
}

#[test]
fn literal_mapping_values_never_appear_in_debug_output() {
    let s = load(
        r#"
[genesys]
simulate = true
[[actions]]
name = "a"
upstream = "genesys"
path = "/x"
[actions.headers]
X-Key = { value = "literal-key-should-not-print" }
X-Other = { from = "/o", default = "default-should-not-print" }
"#,
        &Environment::default(),
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(!debug.contains("literal-key-should-not-print"), "{debug}");
    assert!(!debug.contains("default-should-not-print"), "{debug}");
}

// ---- Every problem of a file in one run, each once -------------------------------------------

/// Runs `check-config` on `toml` written to a temporary `gw.toml`; (exit status, stdout,
/// stderr, the file's path as printed).
fn check_config_cli(toml: &str) -> (Option<i32>, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

/// Every problem `load_report` and the data actions' own checks find, as (path, message).
fn report_with_action_checks(toml: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, toml).unwrap();
    let mut report = Settings::load_report(&file, &Environment::default());
    let found = genesys_gateway::data_actions::check(report.settings().expect("readable"));
    report.add(found);
    report
        .problems()
        .iter()
        .map(|p| (p.path.clone(), p.message.clone()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
        .collect()
}

/// An unknown key, a wrong type, a bad value, two dangling references and a bad placeholder.
const EVERY_KIND: &str = r#"
[server]
request_timeot_ms = 5000

[genesys]
simulate = true

[upstreams.crm]
base_url = "https://crm.example.com"
timeout_ms = "fast"

[[actions]]
name = "fetchUser"
upstream = "genesys"
path = "/api/v2/users/{userId}"
[actions.params]
userId = "/userId"

[[actions]]
name = "lookupOrder"
upstream = "simdirr"
method = "GTE"
path = "/orders/{orderid}"
[actions.params]
orderId = "/orderId"

[ingest]
auth = { type = "jwt", issuers = ["legacy"] }
"#;

const EVERY_KIND_PROBLEMS: &[(&str, &str)] = &[
    (
        "server.request_timeot_ms",
        "unknown key, did you mean request_timeout_ms?",
    ),
    (
        "upstreams.crm.timeout_ms",
        "invalid type: string, expected a non-negative integer",
    ),
    (
        "actions[1].upstream",
        "no upstream named `simdirr` (upstreams: genesys, crm)",
    ),
    (
        "actions[1].method",
        "must be one of GET, POST, PUT, PATCH, DELETE",
    ),
    (
        "actions[1].path",
        "placeholder `{orderid}` has no entry in params",
    ),
    (
        "actions[1].params.orderId",
        "the path has no placeholder `{orderId}`",
    ),
    (
        "ingest.auth.issuers[0]",
        "no [[jwt_issuers]] entry named `legacy` (jwt_issuers: none configured)",
    ),
];

#[test]
fn every_kind_of_problem_is_reported_together_each_once() {
    assert_eq!(
        report_with_action_checks(EVERY_KIND),
        pairs(EVERY_KIND_PROBLEMS)
    );

    // The loader's problems no longer hide the rules' (the placeholder is the actions' own
    // check, added above).
    let loaded: Vec<(String, String)> = problems(EVERY_KIND);
    let without_placeholders: Vec<_> = pairs(EVERY_KIND_PROBLEMS)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("actions[1].p"))
        .collect();
    assert_eq!(loaded, without_placeholders);
}

#[test]
fn check_config_prints_every_kind_of_problem_once_with_action_names() {
    let (status, stdout, stderr, file) = check_config_cli(EVERY_KIND);
    assert_eq!(status, Some(64), "{stderr}");
    assert_eq!(stdout, "");
    let expected: Vec<String> = EVERY_KIND_PROBLEMS
        .iter()
        .map(|(path, message)| {
            let path = path.replace("actions[1]", "actions[1] (lookupOrder)");
            format!("{file}: {path}: {message}")
        })
        .collect();
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_missing_key_does_not_hide_the_other_problems_of_its_entry() {
    let p = problems(
        r#"
[genesys]
simulate = true
[[actions]]
name = "noUpstream"
method = "FETCH"
path = "x"
timeout_ms = 0
"#,
    );
    assert_eq!(
        p,
        pairs(&[
            ("actions[0]", "missing field `upstream`"),
            (
                "actions[0].method",
                "must be one of GET, POST, PUT, PATCH, DELETE"
            ),
            ("actions[0].path", "must start with /"),
            ("actions[0].timeout_ms", "must be between 1 and 60000"),
        ])
    );
}

#[test]
fn wrong_values_inside_tables_are_all_found_and_named() {
    let p = problems(
        r#"
[telemetry]
log_format = "jsn"
[genesys]
simulate = true
[upstreams.erp]
base_url = "https://erp.example.com"
auth = { type = "basic", username = "u", password = 42 }
retry = { max_attempts = "3", base_delay = 5 }
[delivery]
allow_cidrs = ["10.0.0.0/8", 5, "192.168.0.0/16", true]
[[callbacks.queues]]
name = "Q"
timezone = "UTC"
open_hours = ["mon 08:00-10:00"]
"#,
    );
    assert_eq!(
        p,
        pairs(&[
            (
                "telemetry.log_format",
                "must be one of text, json (did you mean json?)"
            ),
            (
                "upstreams.erp.auth.password",
                "invalid type: integer, expected a string"
            ),
            (
                "upstreams.erp.retry.max_attempts",
                "invalid type: string, expected a non-negative integer"
            ),
            (
                "upstreams.erp.retry.base_delay",
                "unknown key, did you mean base_delay_ms?"
            ),
            (
                "delivery.allow_cidrs[1]",
                "invalid type: integer, expected IPv4 or IPv6 network address"
            ),
            (
                "delivery.allow_cidrs[3]",
                "invalid type: boolean, expected IPv4 or IPv6 network address"
            ),
            ("callbacks.queues[0]", "missing field `id`"),
        ])
    );
    assert!(!format!("{p:?}").contains("42"), "no value echoed: {p:?}");
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let (status, _, stderr, file) = check_config_cli(
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = = 5\n[genesys]\nsimulate = true\n",
    );
    assert_eq!(status, Some(64));
    assert_eq!(
        stderr,
        format!("{file}:3:22: not valid TOML: invalid string; expected `\"`, `'`\n")
    );

    // Columns count characters, not bytes.
    let err = load("[server]\nlisten = \"café\" x\n", &Environment::default()).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let location = err.problems[0].location.expect("a location");
    assert_eq!((location.line, location.column), (2, 17));
    assert!(err.problems[0].message.starts_with("not valid TOML: "));
    assert!(
        err.to_string()
            .starts_with("gw.toml:2:17: not valid TOML: ")
    );
}

#[test]
fn a_syntax_error_does_not_echo_the_line() {
    let err = load(
        "[genesys]\nclient_secret = \"s3cr3t-value\" trailing\n",
        &Environment::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("gw.toml:2:"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn unknown_keys_suggest_the_nearest_known_key() {
    let env = Environment::from_pairs([("GATEWAY_SERVR__LISTEN", "127.0.0.1:0")]);
    let p = problems_with(
        r#"
[sever]
listen = "127.0.0.1:0"
[server]
request_timeout = 5000
colour = "blue"
[genesys]
simulate = true
[upstreams.crm]
base_url = "https://crm.example.com"
timout_ms = 100
auth = { type = "oauth2", token_url = "https://crm.example.com/t" }
[ingest]
auth = { typ = "jwt", issuers = [] }
"#,
        &env,
    );
    let expect = [
        ("sever", "unknown key, did you mean server?"),
        (
            "server.request_timeout",
            "unknown key, did you mean request_timeout_ms?",
        ),
        (
            "server.colour",
            "unknown key; known keys: listen, request_timeout_ms, max_body_bytes, \
             max_concurrent_requests, shutdown_grace_ms, io_threads, max_connections, \
             header_read_timeout_ms, shutdown_delay_ms, max_header_bytes, \
             max_connections_per_client",
        ),
        (
            "upstreams.crm.timout_ms",
            "unknown key, did you mean timeout_ms?",
        ),
        (
            "upstreams.crm.auth.type",
            "must be one of none, oauth2_client_credentials, api_key, basic, bearer \
             (did you mean oauth2_client_credentials?)",
        ),
        ("ingest.auth.typ", "unknown key, did you mean type?"),
        (
            "servr.listen",
            "GATEWAY_SERVR__LISTEN overrides an unknown section, did you mean SERVER?",
        ),
    ];
    for (path, message) in expect {
        assert!(
            p.iter().any(|(pp, m)| pp == path && m == message),
            "expected {path}: {message} in {p:#?}"
        );
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
}

#[test]
fn dangling_references_list_the_names_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), "not checked here").unwrap();
    let issuer = |name: &str| {
        format!(
            "[[jwt_issuers]]\nname = \"{name}\"\nissuer = \"i\"\naudiences = [\"a\"]\n\
             algorithms = [\"ES256\"]\nkey_file = \"k.pem\"\n"
        )
    };
    let toml = format!(
        r#"
[genesys]
simulate = true
{}{}
[upstreams.erp]
base_url = "https://erp.example.com"
[upstreams.crm]
base_url = "https://crm.example.com"
[[actions]]
name = "lookupOrder"
upstream = "simdirr"
path = "/orders"
[ingest]
auth = {{ type = "jwt", issuers = ["legacy", "partnr"] }}
"#,
        issuer("legacy"),
        issuer("partner"),
    );
    let err = Settings::from_toml(
        &toml,
        Path::new("gw.toml"),
        dir.path(),
        &Environment::default(),
    )
    .unwrap_err();
    let p: Vec<(String, String)> = err
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.message.clone()))
        .collect();
    assert_eq!(
        p,
        pairs(&[
            (
                "actions[0].upstream",
                "no upstream named `simdirr` (upstreams: genesys, crm, erp)"
            ),
            (
                "ingest.auth.issuers[1]",
                "no [[jwt_issuers]] entry named `partnr` (jwt_issuers: legacy, partner)"
            ),
        ])
    );
}

#[test]
fn actions_are_named_by_name_in_messages_but_not_in_key_paths() {
    let toml = r#"
[genesys]
simulate = true
[[actions]]
name = "lookupOrder"
upstream = "genesys"
method = "GTE"
path = "/orders"
[[actions]]
upstream = "genesys"
method = "GTE"
path = "/orders"
[[actions]]
name = "bad name!"
upstream = "genesys"
path = "/orders"
"#;
    let err = load(toml, &Environment::default()).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "actions[0].method",
            "actions[1]",
            "actions[1].method",
            "actions[2].name"
        ]
    );
    assert_eq!(
        err.to_string().lines().collect::<Vec<_>>(),
        [
            "gw.toml: actions[0] (lookupOrder).method: must be one of GET, POST, PUT, PATCH, DELETE",
            "gw.toml: actions[1]: missing field `name`",
            "gw.toml: actions[1].method: must be one of GET, POST, PUT, PATCH, DELETE",
            "gw.toml: actions[2].name: must match [A-Za-z0-9_-]{1,64}",
        ]
    );
    assert_eq!(
        err.problems[0].label(&err.action_names),
        "actions[0] (lookupOrder).method"
    );
}

#[test]
fn a_problem_two_checks_find_is_printed_once() {
    let (status, _, stderr, _) = check_config_cli(
        r#"
[genesys]
simulate = true
api_url = "ftp://sim"
login_url = "http://127.0.0.1:9"
[upstreams.crm]
base_url = "ftp://crm"
auth = { type = "oauth2_client_credentials", token_url = "nope", client_id = "gw", client_secret = "s" }
[[actions]]
name = "a"
upstream = "ghost"
path = "x"
timeout_ms = 70000
"#,
    );
    assert_eq!(status, Some(64));
    let paths: Vec<&str> = stderr
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap_or(l))
        .collect();
    assert_eq!(
        paths,
        [
            "genesys.api_url",
            "upstreams.crm.base_url",
            "upstreams.crm.auth.token_url",
            "actions[0] (a).upstream",
            "actions[0] (a).path",
            "actions[0] (a).timeout_ms",
        ],
        "{stderr}"
    );
}

#[test]
fn check_config_exits_0_with_the_summary_for_a_valid_file() {
    let (status, stdout, stderr, file) =
        check_config_cli("[server]\nlisten = \"127.0.0.1:0\"\n[genesys]\nsimulate = true\n");
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stderr, "");
    assert!(
        stdout.starts_with(&format!("{file}: configuration is valid\nactions (0): -\n")),
        "{stdout}"
    );
}

// ---- The configuration reference documents every key --------------------------------------

/// Finds every table of the configuration and the keys it takes from the code itself — by
/// writing an unknown key into each and reading which keys the loader says it knows — and
/// checks them against `docs/configuration.md`.
mod reference {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use genesys_gateway::config::{Environment, Settings};
    use toml::{Table, Value};

    const PROBE: &str = "zzzz_probe";

    /// A table: its key path as the reference writes it (`upstreams.<name>.retry`; an array of
    /// tables by its own name) and, for one form of a `type`-tagged table, that `type`.
    type TableId = (String, Option<String>);

    #[derive(Clone)]
    enum Seg {
        Key(String),
        /// The first element of an array.
        First,
    }

    fn key_path(place: &[Seg]) -> String {
        let mut out = String::new();
        for seg in place {
            match seg {
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::First => out.push_str("[0]"),
            }
        }
        out
    }

    /// The problems of a file with `value` at `place` and nothing else.
    fn problems_with(place: &[Seg], value: Value) -> Vec<(String, String)> {
        let mut v = value;
        for seg in place.iter().rev() {
            v = match seg {
                Seg::Key(k) => Value::Table(Table::from_iter([(k.clone(), v)])),
                Seg::First => Value::Array(vec![v]),
            };
        }
        let text = toml::to_string(&v).unwrap();
        let report = Settings::report_from_toml(
            &text,
            Path::new("probe.toml"),
            Path::new("."),
            &Environment::default(),
        );
        report
            .problems()
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect()
    }

    /// The keys of the table at `place` (with `fixed` keys in it), when there is one.
    fn keys_at(place: &[Seg], mut fixed: Table) -> Option<BTreeSet<String>> {
        fixed.insert(PROBE.to_owned(), Value::Integer(1));
        let at = match key_path(place) {
            p if p.is_empty() => PROBE.to_owned(),
            p => format!("{p}.{PROBE}"),
        };
        let problems = problems_with(place, Value::Table(fixed));
        let (_, message) = problems.iter().find(|(p, _)| *p == at)?;
        if message == "unknown key; this table takes no keys" {
            return Some(BTreeSet::new());
        }
        let list = message.strip_prefix("unknown key; known keys: ")?;
        Some(list.split(", ").map(str::to_owned).collect())
    }

    /// The `type`s of the `type`-tagged table at `place`, when it is one.
    fn types_at(place: &[Seg]) -> Option<Vec<String>> {
        let at = key_path(place);
        let untyped = problems_with(
            place,
            Value::Table(Table::from_iter([(PROBE.into(), 1.into())])),
        );
        untyped
            .iter()
            .find(|(p, m)| *p == at && m == "missing field `type`")?;
        let typed = problems_with(
            place,
            Value::Table(Table::from_iter([("type".into(), PROBE.into())])),
        );
        let (_, message) = typed.iter().find(|(p, _)| *p == format!("{at}.type"))?;
        let list = message.strip_prefix("must be one of ")?;
        let list = list.split(" (").next().unwrap_or(list);
        Some(list.split(", ").map(str::to_owned).collect())
    }

    fn discover(
        place: Vec<Seg>,
        id: String,
        keys: BTreeSet<String>,
        out: &mut BTreeMap<TableId, BTreeSet<String>>,
    ) {
        out.insert((id.clone(), None), keys.clone());
        for key in keys {
            let mut child = place.clone();
            child.push(Seg::Key(key.clone()));
            let child_id = if id.is_empty() {
                key
            } else {
                format!("{id}.{key}")
            };
            classify(child, child_id, out);
        }
    }

    /// Finds what the key at `place` holds: a table, a `type`-tagged table, an array of tables,
    /// a table of tables under names the file chooses (`[upstreams.<name>]`) — or a value, or a
    /// table of names to values (`[actions.params]`), which its row in its table documents.
    fn classify(place: Vec<Seg>, id: String, out: &mut BTreeMap<TableId, BTreeSet<String>>) {
        let mut first = place.clone();
        first.push(Seg::First);
        let mut entry = place.clone();
        entry.push(Seg::Key("zzzz_entry".to_owned()));
        if let Some(keys) = keys_at(&place, Table::new()) {
            discover(place, id, keys, out);
        } else if let Some(types) = types_at(&place) {
            // (No form of a tagged table has a nested table today; its keys are checked here.)
            for t in types {
                let fixed = Table::from_iter([("type".to_owned(), Value::String(t.clone()))]);
                // A form without keys of its own accepts none or, serde being lenient with
                // those, ignores them.
                let keys = keys_at(&place, fixed).unwrap_or_default();
                out.insert((id.clone(), Some(t)), keys);
            }
        } else if let Some(keys) = keys_at(&first, Table::new()) {
            discover(first, id, keys, out);
        } else if let Some(keys) = keys_at(&entry, Table::new()) {
            discover(entry, format!("{id}.<name>"), keys, out);
        }
    }

    /// The reference's tables: a heading naming a table in a code span (`[server]`,
    /// `[[actions]]`, `upstreams.<name>.auth`, several allowed), optionally with
    /// `type = "…"`, and the rows `| \`key\` | …` below it.
    fn documented(markdown: &str) -> BTreeMap<TableId, BTreeSet<String>> {
        let mut out: BTreeMap<TableId, BTreeSet<String>> = BTreeMap::new();
        let mut current: Vec<TableId> = Vec::new();
        let mut in_code = false;
        for line in markdown.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            if line.starts_with('#') {
                let spans: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
                let types: Vec<&str> = spans
                    .iter()
                    .filter_map(|s| s.strip_prefix("type = \"")?.strip_suffix('"'))
                    .collect();
                let tables = spans
                    .iter()
                    .filter(|s| !s.starts_with("type = "))
                    .map(|s| s.trim_matches(['[', ']']).to_owned());
                current = if types.is_empty() {
                    tables.map(|t| (t, None)).collect()
                } else {
                    tables
                        .flat_map(|t| {
                            types
                                .iter()
                                .map(move |ty| (t.clone(), Some((*ty).to_owned())))
                        })
                        .collect()
                };
                for id in &current {
                    out.entry(id.clone()).or_default();
                }
            } else if let Some(row) = line.strip_prefix("| `") {
                let key = row.split('`').next().unwrap_or_default();
                for id in &current {
                    out.entry(id.clone()).or_default().insert(key.to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn every_key_of_every_table_is_documented() {
        let mut found = BTreeMap::new();
        let sections = keys_at(&[], Table::new()).expect("the top-level keys");
        discover(Vec::new(), String::new(), sections, &mut found);
        found.remove(&(String::new(), None));

        // The discovery itself works (a change of the loader's messages must not make this
        // test pass by finding nothing).
        assert!(found.len() >= 30, "{found:#?}");
        assert!(found[&("upstreams.<name>.retry".to_owned(), None)].contains("max_attempts"));
        assert!(found[&("callbacks.queues".to_owned(), None)].contains("open_hours"));
        assert!(found.contains_key(&("targets.auth".to_owned(), Some("OAUTH2".to_owned()))));

        let markdown = std::fs::read_to_string("docs/configuration.md").unwrap();
        let documented = documented(&markdown);
        let mut wrong = Vec::new();
        for (id, keys) in &found {
            match documented.get(id) {
                None => wrong.push(format!("{id:?}: no heading in the reference")),
                Some(doc) if doc != keys => {
                    let missing: Vec<_> = keys.difference(doc).collect();
                    let stale: Vec<_> = doc.difference(keys).collect();
                    wrong.push(format!(
                        "{id:?}: undocumented {missing:?}, not keys {stale:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        for id in documented.keys().filter(|id| !found.contains_key(*id)) {
            wrong.push(format!(
                "{id:?}: documented, but the configuration has no such table"
            ));
        }
        assert!(
            wrong.is_empty(),
            "docs/configuration.md:\n{}",
            wrong.join("\n")
        );
    }
}

// ---- Whatever the damage, a report -----------------------------------------------------------

mod damage {
    use std::path::Path;
    use std::sync::Arc;

    use genesys_gateway::config::{Environment, Settings};
    use genesys_gateway::genesys::GenesysEndpoints;
    use genesys_gateway::telemetry::Metrics;
    use proptest::prelude::*;
    use toml::{Table, Value};

    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    fn every_path(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        match value {
            Value::Table(t) => {
                for (k, v) in t {
                    at.push(Step::Key(k.clone()));
                    out.push(at.clone());
                    every_path(v, at, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(Step::Index(i));
                    out.push(at.clone());
                    every_path(v, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    /// Replaces (or, with `None`, removes) the value at `path`.
    fn edit(doc: &mut Value, path: &[Step], new: Option<Value>) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = doc;
        for step in parents {
            node = match (step, node) {
                (Step::Key(k), Value::Table(t)) => t.get_mut(k).unwrap(),
                (Step::Index(i), Value::Array(a)) => &mut a[*i],
                _ => unreachable!(),
            };
        }
        match (last, node, new) {
            (Step::Key(k), Value::Table(t), Some(v)) => {
                t.insert(k.clone(), v);
            }
            (Step::Key(k), Value::Table(t), None) => {
                t.remove(k);
            }
            (Step::Index(i), Value::Array(a), Some(v)) => a[*i] = v,
            (Step::Index(i), Value::Array(a), None) => {
                a.remove(*i);
            }
            _ => unreachable!(),
        }
    }

    fn damage(kind: u8) -> Option<Value> {
        Some(match kind {
            0 => Value::String(String::new()),
            1 => Value::String("zzzz".into()),
            2 => Value::Integer(-7),
            3 => Value::Boolean(true),
            4 => Value::Array(vec![Value::Integer(1)]),
            5 => Value::Table(Table::from_iter([("zzzz".to_owned(), Value::Integer(1))])),
            _ => return None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn damage_to_a_valid_file_is_reported_each_problem_once(
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..7), 1..4)
        ) {
            let text = std::fs::read_to_string("config/gateway.toml").unwrap();
            let mut doc = Value::Table(toml::from_str(&text).unwrap());
            for (index, kind) in edits {
                let mut paths = Vec::new();
                every_path(&doc, &mut Vec::new(), &mut paths);
                let path = index.get(&paths).clone();
                edit(&mut doc, &path, damage(kind));
            }
            let text = toml::to_string(&doc).unwrap();
            let mut report = Settings::report_from_toml(
                &text,
                Path::new("gw.toml"),
                Path::new("config"),
                &Environment::default(),
            );
            // What check-config runs on what was read, stand-ins included.
            let settings = report.settings().expect("still TOML").clone();
            let mut found = genesys_gateway::data_actions::check(&settings);
            let genesys = GenesysEndpoints::from_settings(&settings.genesys);
            if let Err(p) = genesys_gateway::genesys::build_upstreams(&settings, &genesys, Arc::new(Metrics::new())) {
                found.extend(p);
            }
            report.add(found);
            let problems = report.problems();
            for (i, p) in problems.iter().enumerate() {
                prop_assert!(!p.message.is_empty());
                prop_assert!(!p.message.contains('\n'), "{:?}", p);
                prop_assert!(!problems[..i].contains(p), "twice: {:?}", p);
            }
        }
    }
}
