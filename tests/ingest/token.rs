//! `genesys-gateway token`: a token minted with the sandbox issuer's local private key is
//! accepted by the verifier of the shipped configuration; an issuer without one cannot mint.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use genesys_gateway::auth::jwt::JwtVerifier;
use genesys_gateway::auth::jwt::mint::{MintError, mint};
use genesys_gateway::config::{ConfigSource, JwtIssuerSettings};
use genesys_gateway::upstream::{HttpClient, HttpClientOptions, NetworkPolicy};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn legacy() -> JwtIssuerSettings {
    JwtIssuerSettings {
        name: "legacy".into(),
        issuer: "legacy-ordering".into(),
        audiences: vec!["genesys-gateway".into()],
        algorithms: vec!["ES256".into()],
        key_file: Some("keys/legacy.pub.pem".into()),
        jwks_url: None,
        leeway_s: 30,
        max_token_lifetime_s: 3600,
        private_key_file: Some("keys/legacy.key.pem".into()),
    }
}

fn source() -> ConfigSource {
    ConfigSource {
        file: shipped().join("gateway.toml"),
        base_dir: shipped(),
    }
}

#[tokio::test]
async fn a_minted_token_verifies_with_the_issuers_public_key() {
    let token = mint(
        &[legacy()],
        "legacy",
        &source(),
        "tester",
        600,
        SystemTime::now(),
    )
    .expect("minted");
    let verifier = JwtVerifier::from_settings(
        &[legacy()],
        &["legacy".to_owned()],
        &source(),
        HttpClient::new(NetworkPolicy::Trusted, &HttpClientOptions::default()),
    )
    .unwrap();
    let verified = verifier.verify_token(&token).await.expect("verifies");
    assert_eq!(&*verified.iss, "legacy-ordering");
    assert_eq!(verified.sub.as_deref(), Some("tester"));
}

#[test]
fn an_issuer_without_a_private_key_or_a_lifetime_out_of_range_cannot_mint() {
    let mut no_key = legacy();
    no_key.private_key_file = None;
    let err = mint(&[no_key], "legacy", &source(), "s", 600, SystemTime::now()).unwrap_err();
    assert!(matches!(err, MintError::NoPrivateKey(_)), "{err}");
    let err = mint(
        &[legacy()],
        "legacy",
        &source(),
        "s",
        3601,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, MintError::Lifetime { max: 3600 }), "{err}");
    let err = mint(&[legacy()], "nobody", &source(), "s", 60, SystemTime::now()).unwrap_err();
    assert!(err.to_string().contains("legacy"), "{err}");
}

#[test]
fn the_token_command_prints_a_token_of_the_shipped_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["token", "--issuer", "legacy", "--config"])
        .arg(shipped().join("gateway.toml"))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    let output = Command::new(env!("CARGO_BIN_EXE_genesys-gateway"))
        .args(["token", "--issuer", "missing", "--config"])
        .arg(shipped().join("gateway.toml"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no [[jwt_issuers]] entry named `missing`")
    );
}
