//! The built-in `genesys` upstream: where Genesys Cloud is, how the gateway authenticates to it,
//! and its retry and breaker defaults.
//!
//! Every call to Genesys goes through the process's upstream registry under the name
//! [`UPSTREAM`], built from `[genesys]`: the API base URL and the login (token) URL come from
//! the region (`api.<region>`, `login.<region>`) or from the explicit `api_url` / `login_url`;
//! OAuth2 client credentials from `client_id` / `client_secret`; retries on 429/502/503/504 and
//! connection errors, `Retry-After` honoured up to 180 s, `max_attempts = 3, base_delay_ms =
//! 200, max_delay_ms = 5000`; the breaker opens after 5 consecutive failed attempts for 30 s.

use std::sync::Arc;

use super::region::RegionHosts;
use crate::config::{
    CircuitBreakerSettings, ClientAuthMethod, GenesysSettings, Problem, RetrySettings, Settings,
    UpstreamAuthSettings, UpstreamSettings,
};
use crate::telemetry::Metrics;
use crate::upstream::{Definitions, KeyPaths, UpstreamDefinition, Upstreams};

/// The name of the built-in Genesys Cloud upstream.
pub const UPSTREAM: &str = "genesys";

/// Per-attempt timeout of the built-in `genesys` upstream.
const TIMEOUT_MS: u64 = 10_000;

/// The Genesys Cloud base URLs, derived from `[genesys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesysEndpoints {
    /// API base (`https://api.<region>`), no trailing slash.
    pub api_url: String,
    /// Login base (`https://login.<region>`), no trailing slash; tokens come from
    /// `<login_url>/oauth/token`.
    pub login_url: String,
}

impl GenesysEndpoints {
    /// From the region, or the explicit `api_url` / `login_url` when set.
    pub fn from_settings(g: &GenesysSettings) -> Self {
        let hosts = RegionHosts::of(&g.region);
        let pick = |explicit: &Option<String>, derived: String| {
            explicit
                .as_deref()
                .map_or(derived, |url| url.trim_end_matches('/').to_owned())
        };
        Self {
            api_url: pick(&g.api_url, hosts.api),
            login_url: pick(&g.login_url, hosts.login),
        }
    }

    /// `<login_url>/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.login_url)
    }
}

/// The definition of the built-in `genesys` upstream against `endpoints`, with the
/// credentials of `g`.
pub fn upstream_definition(
    g: &GenesysSettings,
    endpoints: &GenesysEndpoints,
) -> UpstreamDefinition {
    let auth = match (&g.client_id, &g.client_secret) {
        (Some(id), Some(secret)) if !id.is_empty() => {
            UpstreamAuthSettings::Oauth2ClientCredentials {
                token_url: endpoints.token_url(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                scopes: Vec::new(),
                client_auth: ClientAuthMethod::Basic,
            }
        }
        _ => UpstreamAuthSettings::None,
    };
    UpstreamDefinition {
        name: UPSTREAM.to_owned(),
        settings: UpstreamSettings {
            base_url: endpoints.api_url.clone(),
            timeout_ms: TIMEOUT_MS,
            auth,
            retry: RetrySettings {
                max_attempts: 3,
                base_delay_ms: 200,
                max_delay_ms: 5000,
                max_retry_after_s: 180,
            },
            circuit_breaker: CircuitBreakerSettings {
                failure_threshold: 5,
                open_ms: 30_000,
            },
            idempotent: false,
        },
        paths: KeyPaths::under("genesys")
            .rename("base_url", "genesys.api_url")
            .rename("auth.token_url", "genesys.login_url")
            .rename("auth.client_id", "genesys.client_id")
            .rename("auth.client_secret", "genesys.client_secret"),
    }
}

/// Every upstream of `settings`: the built-in `genesys` one (against `endpoints`, which a
/// running process keeps: `[genesys]` only changes on restart) first, then each configured
/// `[upstreams.<name>]` (a configured `genesys` is ignored: the built-in one is always it).
pub fn upstream_definitions(
    settings: &Settings,
    genesys: &GenesysSettings,
    endpoints: &GenesysEndpoints,
) -> Vec<UpstreamDefinition> {
    std::iter::once(upstream_definition(genesys, endpoints))
        .chain(
            settings
                .upstreams
                .iter()
                .filter(|(name, _)| name.as_str() != UPSTREAM)
                .map(|(name, u)| UpstreamDefinition::configured(name, u)),
        )
        .collect()
}

/// The [`Definitions`] of a running process: its `[upstreams.*]` as reloaded, plus the
/// built-in `genesys` upstream with the `[genesys]` settings and endpoints it started with.
pub fn definitions(genesys: GenesysSettings, endpoints: GenesysEndpoints) -> Definitions {
    Arc::new(move |settings: &Settings| upstream_definitions(settings, &genesys, &endpoints))
}

/// Builds every upstream of `settings` (the built-in `genesys` one against `endpoints`), with
/// one connection pool per server thread of `settings`.
///
/// # Errors
/// Every upstream setting that cannot be used, with its key path.
pub fn build_upstreams(
    settings: &Settings,
    endpoints: &GenesysEndpoints,
    metrics: Arc<Metrics>,
) -> Result<Upstreams, Vec<Problem>> {
    Upstreams::build(
        upstream_definitions(settings, &settings.genesys, endpoints),
        settings.server.io_thread_count(),
        metrics,
    )
}

/// [`Upstreams::rebuild`] of `upstreams` for `settings` (what a reload does).
///
/// # Errors
/// As [`build_upstreams`].
pub fn rebuild_upstreams(
    upstreams: &Upstreams,
    settings: &Settings,
    endpoints: &GenesysEndpoints,
) -> Result<Upstreams, Vec<Problem>> {
    upstreams.rebuild(upstream_definitions(settings, &settings.genesys, endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesys_endpoints_from_region_or_explicit_urls() {
        let mut g = GenesysSettings {
            region: "mypurecloud.de".to_owned(),
            ..GenesysSettings::default()
        };
        let e = GenesysEndpoints::from_settings(&g);
        assert_eq!(e.api_url, "https://api.mypurecloud.de");
        assert_eq!(e.login_url, "https://login.mypurecloud.de");
        assert_eq!(e.token_url(), "https://login.mypurecloud.de/oauth/token");
        g.api_url = Some("http://127.0.0.1:9100/".to_owned());
        g.login_url = Some("http://127.0.0.1:9101".to_owned());
        let e = GenesysEndpoints::from_settings(&g);
        assert_eq!(e.api_url, "http://127.0.0.1:9100");
        assert_eq!(e.token_url(), "http://127.0.0.1:9101/oauth/token");
    }
}
