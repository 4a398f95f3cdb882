//! The rules a configuration must follow beyond its types (ranges, formats, references between
//! sections), each reported with the key path it is about.
//!
//! Rules that need a capability's own compiler (JSON Schemas, mapping plans, PEM keys) are
//! checked where those are built, with the same key paths, so `check-config` reports them too.

use std::collections::HashSet;

use chrono::{NaiveTime, Weekday};
use secrecy::ExposeSecret;

use super::{
    GENESYS_UPSTREAM, InboundAuthSettings, IngestAuthSettings, Problem, Settings,
    TargetAuthSettings, UpstreamAuthSettings,
};

/// Genesys Cloud region domains.
pub const REGIONS: &[&str] = &[
    "mypurecloud.com",
    "mypurecloud.ie",
    "mypurecloud.de",
    "mypurecloud.com.au",
    "mypurecloud.jp",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "apne2.pure.cloud",
    "euw2.pure.cloud",
    "aps1.pure.cloud",
    "use2.us-gov-pure.cloud",
    "sae1.pure.cloud",
    "mec1.pure.cloud",
    "apne3.pure.cloud",
    "euc2.pure.cloud",
];

/// JWT algorithms an issuer may allow (never `none` or `HS*`).
const JWT_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The open-hours grammar, for messages.
pub const OPEN_HOURS_GRAMMAR: &str = "\"<day>[-<day>] HH:MM-HH:MM\" with days mon..sun";

pub(super) fn validate(s: &Settings) -> Vec<Problem> {
    let mut p = Vec::new();
    server(s, &mut p);
    positive(
        &mut p,
        "admin.max_failed_auth_per_min",
        u64::from(s.admin.max_failed_auth_per_min),
    );
    store(s, &mut p);
    genesys(s, &mut p);
    issuers(s, &mut p);
    upstreams(s, &mut p);
    data_actions(s, &mut p);
    actions(s, &mut p);
    ingest(s, &mut p);
    targets(s, &mut p);
    callbacks(s, &mut p);
    p
}

fn server(s: &Settings, p: &mut Vec<Problem>) {
    let v = &s.server;
    if v.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(Problem::new(
            "server.listen",
            "must be an address with a port, like 127.0.0.1:8080",
        ));
    }
    positive(p, "server.request_timeout_ms", v.request_timeout_ms);
    positive(p, "server.max_body_bytes", v.max_body_bytes as u64);
    positive(
        p,
        "server.max_concurrent_requests",
        v.max_concurrent_requests as u64,
    );
    positive(p, "server.max_connections", v.max_connections as u64);
    positive(p, "server.header_read_timeout_ms", v.header_read_timeout_ms);
    if v.shutdown_delay_ms >= v.shutdown_grace_ms && v.shutdown_delay_ms > 0 {
        p.push(Problem::new(
            "server.shutdown_delay_ms",
            "must be shorter than server.shutdown_grace_ms",
        ));
    }
    if v.max_header_bytes < 1024 {
        p.push(Problem::new(
            "server.max_header_bytes",
            "must be at least 1024 (a request line and its usual headers)",
        ));
    }
    if v.io_threads > 256 {
        p.push(Problem::new("server.io_threads", "must be at most 256"));
    }
}

fn store(s: &Settings, p: &mut Vec<Problem>) {
    let url = s.store.url.expose_secret();
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|k| url.starts_with(k)) {
        p.push(Problem::new(
            "store.url",
            "must start with sqlite:, postgres:// or postgresql://",
        ));
    }
}

fn genesys(s: &Settings, p: &mut Vec<Problem>) {
    let g = &s.genesys;
    let explicit = g.api_url.is_some() && g.login_url.is_some();
    if !g.simulate && !explicit && !REGIONS.contains(&g.region.as_str()) {
        p.push(Problem::new(
            "genesys.region",
            format!(
                "unknown region `{}`; one of {}",
                g.region,
                REGIONS.join(", ")
            ),
        ));
    }
    for (key, url) in [
        ("genesys.api_url", &g.api_url),
        ("genesys.login_url", &g.login_url),
    ] {
        if let Some(url) = url {
            http_url(p, key, url);
        }
    }
    if !g.simulate {
        if g.client_id.as_deref().is_none_or(str::is_empty) {
            p.push(Problem::new(
                "genesys.client_id",
                "required unless genesys.simulate = true",
            ));
        }
        if g.client_secret
            .as_ref()
            .is_none_or(|s| s.expose_secret().is_empty())
        {
            p.push(Problem::new(
                "genesys.client_secret",
                "required unless genesys.simulate = true",
            ));
        }
    }
    if let Some(listen) = &g.simulator_listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        p.push(Problem::new(
            "genesys.simulator_listen",
            "must be an address with a port, like 127.0.0.1:9100",
        ));
    }
    positive(
        p,
        "genesys.notifications_heartbeat_timeout_s",
        g.notifications_heartbeat_timeout_s,
    );
}

fn issuers(s: &Settings, p: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, iss) in s.jwt_issuers.iter().enumerate() {
        let at = |k: &str| format!("jwt_issuers[{i}].{k}");
        if iss.name.is_empty() {
            p.push(Problem::new(at("name"), "must not be empty"));
        } else if !names.insert(iss.name.as_str()) {
            p.push(Problem::new(
                at("name"),
                format!("`{}` is used twice", iss.name),
            ));
        }
        if iss.issuer.is_empty() {
            p.push(Problem::new(at("issuer"), "must not be empty"));
        }
        if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
            p.push(Problem::new(
                at("audiences"),
                "must list at least one non-empty audience",
            ));
        }
        if iss.algorithms.is_empty() {
            p.push(Problem::new(
                at("algorithms"),
                "must list at least one algorithm",
            ));
        }
        for (j, alg) in iss.algorithms.iter().enumerate() {
            if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                p.push(Problem::new(
                    format!("jwt_issuers[{i}].algorithms[{j}]"),
                    format!(
                        "`{alg}` is not allowed; one of {}",
                        JWT_ALGORITHMS.join(" ")
                    ),
                ));
            }
        }
        match (&iss.key_file, &iss.jwks_url) {
            (Some(_), Some(_)) => p.push(Problem::new(
                at("key_file"),
                "give either key_file or jwks_url, not both",
            )),
            (None, None) => p.push(Problem::new(
                at("key_file"),
                "key_file or jwks_url is required",
            )),
            (Some(file), None) => {
                if !s.source.resolve(file).is_file() {
                    p.push(Problem::new(
                        at("key_file"),
                        format!("file not found: {}", s.source.resolve(file).display()),
                    ));
                }
            }
            (None, Some(url)) => http_url(p, &at("jwks_url"), url),
        }
        if iss.leeway_s > 60 {
            p.push(Problem::new(at("leeway_s"), "must be at most 60"));
        }
        positive(p, &at("max_token_lifetime_s"), iss.max_token_lifetime_s);
    }
}

fn upstreams(s: &Settings, p: &mut Vec<Problem>) {
    for (name, u) in &s.upstreams {
        let at = |k: &str| format!("upstreams.{name}.{k}");
        if name == "genesys" {
            p.push(Problem::new(
                "upstreams.genesys",
                "`genesys` is built in (configure it under [genesys])",
            ));
        }
        http_url(p, &at("base_url"), &u.base_url);
        positive(p, &at("timeout_ms"), u.timeout_ms);
        if !(1..=10).contains(&u.retry.max_attempts) {
            p.push(Problem::new(
                at("retry.max_attempts"),
                "must be between 1 and 10",
            ));
        }
        if u.retry.base_delay_ms > u.retry.max_delay_ms {
            p.push(Problem::new(
                at("retry.base_delay_ms"),
                "must not exceed retry.max_delay_ms",
            ));
        }
        positive(
            p,
            &at("circuit_breaker.failure_threshold"),
            u.circuit_breaker.failure_threshold.into(),
        );
        positive(p, &at("circuit_breaker.open_ms"), u.circuit_breaker.open_ms);
        match &u.auth {
            UpstreamAuthSettings::Oauth2ClientCredentials {
                token_url,
                client_id,
                ..
            } => {
                http_url(p, &at("auth.token_url"), token_url);
                if client_id.is_empty() {
                    p.push(Problem::new(at("auth.client_id"), "must not be empty"));
                }
            }
            UpstreamAuthSettings::ApiKey { header, .. } => {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    p.push(Problem::new(
                        at("auth.header"),
                        "is not a valid header name",
                    ));
                }
            }
            UpstreamAuthSettings::Basic { .. }
            | UpstreamAuthSettings::Bearer { .. }
            | UpstreamAuthSettings::None => {}
        }
    }
}

fn inbound_auth(p: &mut Vec<Problem>, path: &str, auth: &InboundAuthSettings) {
    match auth {
        InboundAuthSettings::None => {}
        InboundAuthSettings::Basic { username, password } => {
            if username.is_empty() || username.contains(':') {
                p.push(Problem::new(
                    format!("{path}.username"),
                    "must be non-empty and contain no `:`",
                ));
            }
            if password.expose_secret().is_empty() {
                p.push(Problem::new(
                    format!("{path}.password"),
                    "must not be empty",
                ));
            }
        }
        InboundAuthSettings::Header { name, value } => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(Problem::new(
                    format!("{path}.name"),
                    "is not a valid header name",
                ));
            }
            if value.expose_secret().is_empty() {
                p.push(Problem::new(format!("{path}.value"), "must not be empty"));
            }
        }
    }
}

fn data_actions(s: &Settings, p: &mut Vec<Problem>) {
    inbound_auth(p, "data_actions.auth", &s.data_actions.auth);
    if let Some(url) = &s.data_actions.public_url {
        http_url(p, "data_actions.public_url", url);
    }
}

fn actions(s: &Settings, p: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, a) in s.actions.iter().enumerate() {
        let at = |k: &str| format!("actions[{i}].{k}");
        if !is_action_name(&a.name) {
            p.push(Problem::new(at("name"), "must match [A-Za-z0-9_-]{1,64}"));
        } else if !names.insert(a.name.as_str()) {
            p.push(Problem::new(
                at("name"),
                format!("`{}` is used twice", a.name),
            ));
        }
        if a.upstream != GENESYS_UPSTREAM && !s.upstreams.contains_key(&a.upstream) {
            p.push(Problem::new(
                at("upstream"),
                no_upstream_named(&a.upstream, s.upstream_names()),
            ));
        }
        if !HTTP_METHODS.contains(&a.method.as_str()) {
            p.push(Problem::new(
                at("method"),
                format!("must be one of {}", HTTP_METHODS.join(", ")),
            ));
        }
        if !a.path.starts_with('/') {
            p.push(Problem::new(at("path"), "must start with /"));
        }
        if !(1..=60_000).contains(&a.timeout_ms) {
            p.push(Problem::new(
                at("timeout_ms"),
                "must be between 1 and 60000",
            ));
        }
    }
}

fn ingest(s: &Settings, p: &mut Vec<Problem>) {
    let i = &s.ingest;
    if let IngestAuthSettings::Jwt { issuers } = &i.auth {
        if issuers.is_empty() {
            p.push(Problem::new(
                "ingest.auth.issuers",
                "must name at least one issuer",
            ));
        }
        for (j, name) in issuers.iter().enumerate() {
            if !s.jwt_issuers.iter().any(|iss| &iss.name == name) {
                let known = s.jwt_issuers.iter().map(|iss| iss.name.as_str());
                p.push(Problem::new(
                    format!("ingest.auth.issuers[{j}]"),
                    format!(
                        "no [[jwt_issuers]] entry named `{name}` ({})",
                        listing("jwt_issuers", known)
                    ),
                ));
            }
        }
    }
    positive(p, "ingest.max_batch", i.max_batch as u64);
    positive(p, "ingest.max_queue_depth", i.max_queue_depth);
    if let Some(file) = &i.event_schema
        && !s.source.resolve(file).is_file()
    {
        p.push(Problem::new(
            "ingest.event_schema",
            format!("file not found: {}", s.source.resolve(file).display()),
        ));
    }
    for (key, value) in [
        ("ingest.vendor", &i.vendor),
        ("ingest.category", &i.category),
    ] {
        let ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            p.push(Problem::new(key, "must match [a-z0-9_]+"));
        }
    }
    positive(p, "delivery.workers", s.delivery.workers as u64);
}

fn targets(s: &Settings, p: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, t) in s.targets.iter().enumerate() {
        let at = |k: &str| format!("targets[{i}].{k}");
        if !(1..=100).contains(&t.name.chars().count()) {
            p.push(Problem::new(at("name"), "must be 1 to 100 characters"));
        } else if !names.insert(t.name.as_str()) {
            p.push(Problem::new(
                at("name"),
                format!("`{}` is used twice", t.name),
            ));
        }
        http_url(p, &at("endpoint_url"), &t.endpoint_url);
        match &t.auth {
            TargetAuthSettings::None | TargetAuthSettings::Jwt { .. } => {}
            TargetAuthSettings::Basic { username, .. } => {
                if username.is_empty() {
                    p.push(Problem::new(at("auth.username"), "must not be empty"));
                }
            }
            TargetAuthSettings::Oauth2 { token_url, .. } => {
                http_url(p, &at("auth.token_url"), token_url);
            }
        }
        if t.retry_policy.max_retries > 10 {
            p.push(Problem::new(
                at("retry_policy.max_retries"),
                "must be between 0 and 10",
            ));
        }
        if !(1..=30).contains(&t.retry_policy.initial_delay_s) {
            p.push(Problem::new(
                at("retry_policy.initial_delay_s"),
                "must be between 1 and 30",
            ));
        }
        for name in t.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(Problem::new(
                    format!("targets[{i}].headers.{name}"),
                    "is not a valid header name",
                ));
            }
        }
        if t.event_types.is_empty() {
            p.push(Problem::new(
                at("event_types"),
                "must list at least one event type",
            ));
        }
        if !webhook_secret_ok(t.secret.expose_secret()) {
            p.push(Problem::new(
                at("secret"),
                "must be whsec_ followed by base64 of 24 to 64 bytes",
            ));
        }
    }
}

/// A Standard Webhooks secret: `whsec_` + base64 of 24..=64 random bytes.
fn webhook_secret_ok(secret: &str) -> bool {
    use base64::Engine;
    secret.strip_prefix("whsec_").is_some_and(|b64| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok_and(|bytes| (24..=64).contains(&bytes.len()))
    })
}

fn callbacks(s: &Settings, p: &mut Vec<Problem>) {
    inbound_auth(p, "callbacks.auth", &s.callbacks.auth);
    let mut ids = HashSet::new();
    for (i, q) in s.callbacks.queues.iter().enumerate() {
        let at = |k: &str| format!("callbacks.queues[{i}].{k}");
        if q.id.is_empty() {
            p.push(Problem::new(at("id"), "must not be empty"));
        } else if !ids.insert(q.id.as_str()) {
            p.push(Problem::new(at("id"), format!("`{}` is used twice", q.id)));
        }
        if q.timezone.parse::<chrono_tz::Tz>().is_err() {
            p.push(Problem::new(
                at("timezone"),
                format!("`{}` is not an IANA time zone", q.timezone),
            ));
        }
        if q.open_hours.is_empty() {
            p.push(Problem::new(
                at("open_hours"),
                "must list at least one entry",
            ));
        }
        for (j, entry) in q.open_hours.iter().enumerate() {
            if let Err(message) = OpenHours::parse(entry) {
                p.push(Problem::new(
                    format!("callbacks.queues[{i}].open_hours[{j}]"),
                    message,
                ));
            }
        }
        if !(1..=50).contains(&q.slot_capacity) {
            p.push(Problem::new(
                at("slot_capacity"),
                "must be between 1 and 50",
            ));
        }
        positive(p, &at("max_slot_minutes"), q.max_slot_minutes.into());
        positive(
            p,
            &at("booking_horizon_days"),
            q.booking_horizon_days.into(),
        );
    }
}

/// One `open_hours` entry: a day range and a time range in the queue's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenHours {
    /// First day of the range.
    pub first_day: Weekday,
    /// Last day of the range (not before `first_day` in mon..sun order).
    pub last_day: Weekday,
    /// Opening time.
    pub start: NaiveTime,
    /// Closing time; `None` is 24:00 (end of day).
    pub end: Option<NaiveTime>,
}

impl OpenHours {
    /// Parses `"<day>[-<day>] HH:MM-HH:MM"`.
    ///
    /// # Errors
    /// A message saying what is wrong with the entry.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = || format!("`{entry}` does not match {OPEN_HOURS_GRAMMAR}");
        let (days, times) = entry.trim().split_once(' ').ok_or_else(bad)?;
        let (first, last) = match days.split_once('-') {
            Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
            None => {
                let d = day(days).ok_or_else(bad)?;
                (d, d)
            }
        };
        if last.num_days_from_monday() < first.num_days_from_monday() {
            return Err(format!("`{entry}`: a day range does not wrap past sun"));
        }
        let (start, end) = times.trim().split_once('-').ok_or_else(bad)?;
        let start = NaiveTime::parse_from_str(start, "%H:%M").map_err(|_| bad())?;
        let end = if end == "24:00" {
            None
        } else {
            Some(NaiveTime::parse_from_str(end, "%H:%M").map_err(|_| bad())?)
        };
        if end.is_some_and(|end| end <= start) {
            return Err(format!(
                "`{entry}`: the start must be before the end (write overnight opening as two entries)"
            ));
        }
        Ok(Self {
            first_day: first,
            last_day: last,
            start,
            end,
        })
    }

    /// Whether `day` is inside the entry's day range.
    pub fn includes(&self, day: Weekday) -> bool {
        let d = day.num_days_from_monday();
        self.first_day.num_days_from_monday() <= d && d <= self.last_day.num_days_from_monday()
    }
}

fn day(s: &str) -> Option<Weekday> {
    Some(match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// Whether `name` is a valid action name: `[A-Za-z0-9_-]{1,64}`.
pub(super) fn is_action_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The message of an action's `upstream` that names no upstream, listing those that exist
/// (`genesys` first): ``no upstream named `simdirr` (upstreams: genesys, crm)``; an empty name is
/// `is required`. Every check of that reference uses it, so that the problem is reported once.
pub fn no_upstream_named<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    if name.is_empty() {
        return "is required".to_owned();
    }
    let mut known: Vec<&str> = known.into_iter().collect();
    known.sort_unstable_by_key(|n| (*n != GENESYS_UPSTREAM, *n));
    known.dedup();
    format!(
        "no upstream named `{name}` ({})",
        listing("upstreams", known)
    )
}

/// `what: a, b, c` (at most 20 names), or that there is none.
fn listing<'a>(what: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 20;
    let names: Vec<&str> = names.into_iter().filter(|n| !n.is_empty()).collect();
    match names.len() {
        0 => format!("{what}: none configured"),
        n if n > SHOWN => format!(
            "{what}: {} and {} more",
            names[..SHOWN].join(", "),
            n - SHOWN
        ),
        _ => format!("{what}: {}", names.join(", ")),
    }
}

fn positive(p: &mut Vec<Problem>, path: &str, value: u64) {
    if value == 0 {
        p.push(Problem::new(path, "must be greater than 0"));
    }
}

fn http_url(p: &mut Vec<Problem>, path: &str, url: &str) {
    match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => p.push(Problem::new(path, "must be an absolute http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_hours_grammar() {
        let h = OpenHours::parse("mon-fri 08:00-20:00").unwrap();
        assert_eq!(h.first_day, Weekday::Mon);
        assert_eq!(h.last_day, Weekday::Fri);
        assert!(h.includes(Weekday::Wed));
        assert!(!h.includes(Weekday::Sat));
        assert_eq!(OpenHours::parse("sat 00:00-24:00").unwrap().end, None);
        assert!(OpenHours::parse("sun-mon 08:00-10:00").is_err());
        assert!(OpenHours::parse("mon 20:00-08:00").is_err());
        assert!(OpenHours::parse("monday 08:00-10:00").is_err());
        assert!(OpenHours::parse("mon 8-10").is_err());
    }

    #[test]
    fn webhook_secrets() {
        assert!(webhook_secret_ok("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!webhook_secret_ok("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert!(!webhook_secret_ok("whsec_short"));
    }
}
