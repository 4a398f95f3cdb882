//! Configuration loading (SPEC §2): key paths, several problems at once, interpolation,
//! environment overrides, secrets kept out of `Debug` and messages, and the `check-config` CLI.

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
