//! Which settings a running gateway takes on reload, and which only on restart.
//!
//! A reload (`POST /admin/v1/reload`, SIGHUP) swaps the **live** keys: `[upstreams.*]`,
//! `[data_actions]`, `[[actions]]`, `[[targets]]` and `[[callbacks.queues]]`. Every other key only takes effect on
//! restart: a reload keeps running with its old value and names it in `restartRequired`
//! ([`restart_required`]; until the process is restarted, every later reload names it again).
//! The `[genesys]` section is such a key too: the built-in `genesys` upstream keeps the
//! credentials and endpoints the process started with, like the rest of the Genesys client.
//!
//! [`restart_required`] destructures every settings type without `..`, so a new key does not
//! compile until it is classified; values are compared with `==` (secrets in constant time, see
//! [`secret_eq`](super::secret_eq())), never through their redacted `Debug` text.

use secrecy::SecretString;

use super::{
    AdminAuthSettings, AdminSettings, AuditSettings, CallbacksSettings, DeliverySettings,
    GenesysSettings, IngestSettings, ServerSettings, Settings, StoreSettings, TelemetrySettings,
    secret_eq,
};

/// The settings to run with after a reload: the live sections from `loaded`, every other
/// section as it runs now.
pub fn live_parts(running: &Settings, loaded: Settings) -> Settings {
    Settings {
        upstreams: loaded.upstreams,
        data_actions: loaded.data_actions,
        actions: loaded.actions,
        targets: loaded.targets,
        source: loaded.source,
        callbacks: CallbacksSettings {
            auth: running.callbacks.auth.clone(),
            queues: loaded.callbacks.queues,
        },
        ..running.clone()
    }
}

/// Keys outside the live sections whose value changed.
///
/// Every settings type is destructured without `..`: adding a key to one of them is a compile
/// error here until it is either compared or named live.
#[allow(clippy::too_many_lines)]
pub fn restart_required(old: &Settings, new: &Settings) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cmp = |key: &str, same: bool| {
        if !same {
            keys.push(key.to_owned());
        }
    };
    let Settings {
        server,
        telemetry,
        store,
        genesys,
        admin,
        audit,
        jwt_issuers,
        // Live: swapped by the reload.
        upstreams: _,
        data_actions: _,
        actions: _,
        targets: _,
        source: _,
        ingest,
        delivery,
        callbacks,
    } = old;

    // Every field of every variant is in the effective tokens compared below.
    let AdminSettings {
        auth: admin_auth,
        max_failed_auth_per_min,
    } = admin;
    cmp(
        "admin.max_failed_auth_per_min",
        *max_failed_auth_per_min == new.admin.max_failed_auth_per_min,
    );
    let AuditSettings {
        execution_records_per_s,
    } = audit;
    cmp(
        "audit.execution_records_per_s",
        *execution_records_per_s == new.audit.execution_records_per_s,
    );
    let (AdminAuthSettings::Bearer { tokens: _ } | AdminAuthSettings::Disabled) = admin_auth;

    let ServerSettings {
        listen,
        request_timeout_ms,
        max_body_bytes,
        max_concurrent_requests,
        shutdown_grace_ms,
        io_threads,
        max_connections,
        header_read_timeout_ms,
        shutdown_delay_ms,
        max_header_bytes,
        max_connections_per_client,
    } = server;
    let n = &new.server;
    cmp("server.listen", *listen == n.listen);
    cmp(
        "server.request_timeout_ms",
        *request_timeout_ms == n.request_timeout_ms,
    );
    cmp("server.max_body_bytes", *max_body_bytes == n.max_body_bytes);
    cmp(
        "server.max_concurrent_requests",
        *max_concurrent_requests == n.max_concurrent_requests,
    );
    cmp(
        "server.shutdown_grace_ms",
        *shutdown_grace_ms == n.shutdown_grace_ms,
    );
    cmp("server.io_threads", *io_threads == n.io_threads);
    cmp(
        "server.max_connections",
        *max_connections == n.max_connections,
    );
    cmp(
        "server.header_read_timeout_ms",
        *header_read_timeout_ms == n.header_read_timeout_ms,
    );
    cmp(
        "server.shutdown_delay_ms",
        *shutdown_delay_ms == n.shutdown_delay_ms,
    );
    cmp(
        "server.max_header_bytes",
        *max_header_bytes == n.max_header_bytes,
    );
    cmp(
        "server.max_connections_per_client",
        *max_connections_per_client == n.max_connections_per_client,
    );

    let TelemetrySettings { log_format } = telemetry;
    cmp(
        "telemetry.log_format",
        *log_format == new.telemetry.log_format,
    );

    let StoreSettings {
        url,
        audit_retention_days,
    } = store;
    cmp("store.url", secret_eq(url, &new.store.url));
    cmp(
        "store.audit_retention_days",
        *audit_retention_days == new.store.audit_retention_days,
    );

    let GenesysSettings {
        region,
        api_url,
        login_url,
        client_id,
        client_secret,
        simulate,
        simulator_listen,
        notifications_heartbeat_timeout_s,
    } = genesys;
    let n = &new.genesys;
    cmp("genesys.region", *region == n.region);
    cmp("genesys.api_url", *api_url == n.api_url);
    cmp("genesys.login_url", *login_url == n.login_url);
    cmp("genesys.client_id", *client_id == n.client_id);
    cmp(
        "genesys.client_secret",
        match (client_secret, &n.client_secret) {
            (Some(a), Some(b)) => secret_eq(a, b),
            (None, None) => true,
            _ => false,
        },
    );
    cmp("genesys.simulate", *simulate == n.simulate);
    cmp(
        "genesys.simulator_listen",
        *simulator_listen == n.simulator_listen,
    );
    cmp(
        "genesys.notifications_heartbeat_timeout_s",
        *notifications_heartbeat_timeout_s == n.notifications_heartbeat_timeout_s,
    );

    cmp(
        "admin.auth.tokens",
        secrets_eq(&old.admin_tokens(), &new.admin_tokens()),
    );
    cmp("jwt_issuers", *jwt_issuers == new.jwt_issuers);

    let IngestSettings {
        auth,
        max_batch,
        max_queue_depth,
        event_schema,
        vendor,
        category,
        source,
    } = ingest;
    let n = &new.ingest;
    cmp("ingest.auth", *auth == n.auth);
    cmp("ingest.max_batch", *max_batch == n.max_batch);
    cmp(
        "ingest.max_queue_depth",
        *max_queue_depth == n.max_queue_depth,
    );
    cmp("ingest.event_schema", *event_schema == n.event_schema);
    cmp("ingest.vendor", *vendor == n.vendor);
    cmp("ingest.category", *category == n.category);
    cmp("ingest.source", *source == n.source);

    let DeliverySettings {
        workers,
        allow_private_networks,
        allow_cidrs,
    } = delivery;
    let n = &new.delivery;
    cmp("delivery.workers", *workers == n.workers);
    cmp(
        "delivery.allow_private_networks",
        *allow_private_networks == n.allow_private_networks,
    );
    cmp("delivery.allow_cidrs", *allow_cidrs == n.allow_cidrs);

    // `callbacks.queues` is live: swapped by the reload (the sync resubscribes).
    let CallbacksSettings { auth, queues: _ } = callbacks;
    cmp("callbacks.auth", *auth == new.callbacks.auth);
    keys
}

fn secrets_eq(a: &[SecretString], b: &[SecretString]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| secret_eq(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        CallbackQueueSettings, Environment, InboundAuthSettings, IngestAuthSettings,
        JwtIssuerSettings, LogFormat,
    };

    fn parse(text: &str) -> Settings {
        Settings::from_toml(
            text,
            std::path::Path::new("gateway.toml"),
            std::path::Path::new("."),
            &Environment::default(),
        )
        .unwrap()
    }

    #[test]
    fn restart_only_keys_are_listed() {
        let old = parse(
            "[genesys]\nsimulate = true\n[server]\nlisten = \"127.0.0.1:1\"\n[callbacks]\nauth = { type = \"header\", name = \"X-K\", value = \"a\" }\n",
        );
        let new = parse(
            "[genesys]\nsimulate = true\n[server]\nlisten = \"127.0.0.1:2\"\n[callbacks]\nauth = { type = \"header\", name = \"X-K\", value = \"b\" }\n[data_actions]\npublic_url = \"https://x.example\"\n",
        );
        assert_eq!(
            restart_required(&old, &new),
            ["server.listen", "callbacks.auth"]
        );
        assert!(restart_required(&old, &old).is_empty());
        let next = live_parts(&old, new);
        assert_eq!(
            next.server.listen, "127.0.0.1:1",
            "restart-only keys keep running values"
        );
        assert_eq!(
            next.data_actions.public_url.as_deref(),
            Some("https://x.example")
        );
    }

    type Change = fn(&mut Settings);

    /// One change per restart-only key (the compiler makes `restart_required` name every key;
    /// this checks each is compared and reported under its own name).
    const CHANGES: &[(&str, Change)] = &[
        ("admin.max_failed_auth_per_min", |s| {
            s.admin.max_failed_auth_per_min += 1;
        }),
        ("audit.execution_records_per_s", |s| {
            s.audit.execution_records_per_s += 1;
        }),
        ("server.listen", |s| s.server.listen = "127.0.0.1:9".into()),
        ("server.request_timeout_ms", |s| {
            s.server.request_timeout_ms += 1
        }),
        ("server.max_body_bytes", |s| s.server.max_body_bytes += 1),
        ("server.max_concurrent_requests", |s| {
            s.server.max_concurrent_requests += 1;
        }),
        ("server.shutdown_grace_ms", |s| {
            s.server.shutdown_grace_ms += 1
        }),
        ("server.io_threads", |s| s.server.io_threads += 1),
        ("server.max_connections", |s| s.server.max_connections += 1),
        ("server.header_read_timeout_ms", |s| {
            s.server.header_read_timeout_ms += 1;
        }),
        ("server.shutdown_delay_ms", |s| {
            s.server.shutdown_delay_ms += 1
        }),
        ("server.max_header_bytes", |s| {
            s.server.max_header_bytes += 1
        }),
        ("server.max_connections_per_client", |s| {
            s.server.max_connections_per_client += 1;
        }),
        ("telemetry.log_format", |s| {
            s.telemetry.log_format = LogFormat::Json;
        }),
        ("store.url", |s| s.store.url = "sqlite://other.db".into()),
        ("store.audit_retention_days", |s| {
            s.store.audit_retention_days += 1;
        }),
        ("genesys.region", |s| {
            s.genesys.region = "mypurecloud.ie".into()
        }),
        ("genesys.api_url", |s| {
            s.genesys.api_url = Some("http://127.0.0.1:1".into());
        }),
        ("genesys.login_url", |s| {
            s.genesys.login_url = Some("http://127.0.0.1:1".into());
        }),
        ("genesys.client_id", |s| {
            s.genesys.client_id = Some("id".into())
        }),
        ("genesys.client_secret", |s| {
            s.genesys.client_secret = Some("secret".into());
        }),
        ("genesys.simulate", |s| {
            s.genesys.simulate = !s.genesys.simulate
        }),
        ("genesys.simulator_listen", |s| {
            s.genesys.simulator_listen = Some("127.0.0.1:1".into());
        }),
        ("genesys.notifications_heartbeat_timeout_s", |s| {
            s.genesys.notifications_heartbeat_timeout_s += 1;
        }),
        ("admin.auth.tokens", |s| {
            s.admin.auth = AdminAuthSettings::Bearer {
                tokens: vec!["another-token".into()],
            };
        }),
        ("jwt_issuers", |s| {
            s.jwt_issuers.push(JwtIssuerSettings {
                name: "legacy".into(),
                issuer: "legacy".into(),
                audiences: vec!["gw".into()],
                algorithms: vec!["ES256".into()],
                key_file: None,
                jwks_url: Some("https://idp.example/jwks".into()),
                leeway_s: 30,
                max_token_lifetime_s: 3600,
                private_key_file: None,
            });
        }),
        ("ingest.auth", |s| {
            s.ingest.auth = IngestAuthSettings::Jwt {
                issuers: vec!["legacy".into()],
            };
        }),
        ("ingest.max_batch", |s| s.ingest.max_batch += 1),
        ("ingest.max_queue_depth", |s| s.ingest.max_queue_depth += 1),
        ("ingest.event_schema", |s| {
            s.ingest.event_schema = Some("schemas/e.json".into());
        }),
        ("ingest.vendor", |s| s.ingest.vendor.push('x')),
        ("ingest.category", |s| s.ingest.category.push('x')),
        ("ingest.source", |s| s.ingest.source.system.push('x')),
        ("delivery.workers", |s| s.delivery.workers += 1),
        ("delivery.allow_private_networks", |s| {
            s.delivery.allow_private_networks = !s.delivery.allow_private_networks;
        }),
        ("delivery.allow_cidrs", |s| {
            s.delivery.allow_cidrs.push("10.0.0.0/8".parse().unwrap());
        }),
        ("callbacks.auth", |s| {
            s.callbacks.auth = InboundAuthSettings::Header {
                name: "X-K".into(),
                value: "v".into(),
            };
        }),
    ];

    #[test]
    fn every_restart_only_key_is_reported_under_its_own_name() {
        let base = parse("[genesys]\nsimulate = true\n");
        let mut all = base.clone();
        let mut expected = Vec::new();
        for (key, change) in CHANGES {
            let mut changed = base.clone();
            change(&mut changed);
            assert_eq!(restart_required(&base, &changed), [*key], "{key}");
            change(&mut all);
            expected.push(*key);
        }
        assert_eq!(restart_required(&base, &all), expected);

        // Changes to live sections need no restart; the queues are among them.
        let mut queues = base.clone();
        queues.callbacks.queues.push(CallbackQueueSettings {
            id: "q".into(),
            name: "Q".into(),
            timezone: "UTC".into(),
            open_hours: vec!["mon 08:00-09:00".into()],
            slot_capacity: 1,
            max_slot_minutes: 30,
            booking_horizon_days: 1,
        });
        assert!(restart_required(&base, &queues).is_empty());
        assert_eq!(live_parts(&base, queues).callbacks.queues.len(), 1);
        let live = parse(
            "[genesys]\nsimulate = true\n[data_actions]\npublic_url = \"https://x.example\"\n\
             [upstreams.crm]\nbase_url = \"http://127.0.0.1:1\"\n",
        );
        assert!(restart_required(&base, &live).is_empty());
    }

    /// A secret that changed is a change, although its `Debug` text (`[REDACTED]`) is the same.
    #[test]
    fn a_changed_secret_is_a_change() {
        let old = parse(
            "[genesys]\nsimulate = true\n[callbacks]\nauth = { type = \"header\", name = \"X-K\", value = \"one\" }\n",
        );
        let mut new = old.clone();
        new.callbacks.auth = InboundAuthSettings::Header {
            name: "X-K".into(),
            value: "two".into(),
        };
        assert_eq!(
            format!("{:?}", old.callbacks),
            format!("{:?}", new.callbacks)
        );
        assert_eq!(restart_required(&old, &new), ["callbacks.auth"]);
        assert_ne!(old, new);
    }
}
