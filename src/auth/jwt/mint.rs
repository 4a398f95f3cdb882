//! Minting local test tokens: what `genesys-gateway token --issuer <name>` prints.
//!
//! Only for an issuer whose `[[jwt_issuers]]` entry names a sandbox `private_key_file` (the
//! shipped configuration does, with the local-use-only key pair of `config/keys/`). The token
//! is signed with the first of the issuer's allowed algorithms that the key can sign with, and
//! carries what the verifier asks for: `iss` = the issuer's `issuer`, `aud` = its first
//! audience, `sub`, `iat` = now and `exp` = now + the lifetime (at most the issuer's
//! `max_token_lifetime_s`).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::allowed_algorithm;
use crate::config::{ConfigSource, JwtIssuerSettings};

/// Why no token was minted. The key's content never appears.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// No `[[jwt_issuers]]` entry has this name.
    #[error("no [[jwt_issuers]] entry named `{name}` (configured: {known})")]
    UnknownIssuer {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated (or `none`).
        known: String,
    },
    /// The issuer has no `private_key_file`.
    #[error(
        "issuer `{0}` has no local private key (`private_key_file`); tokens for it are signed by \
         its own identity provider"
    )]
    NoPrivateKey(String),
    /// The key file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no private key that signs with an algorithm the issuer allows.
    #[error("{0} holds no private key for any of the issuer's algorithms")]
    NoUsableKey(PathBuf),
    /// The asked lifetime is 0 or above the issuer's `max_token_lifetime_s`.
    #[error("--ttl-s must be between 1 and the issuer's max_token_lifetime_s ({max})")]
    Lifetime {
        /// The issuer's `max_token_lifetime_s`.
        max: u64,
    },
}

/// A token for the issuer `name` of `issuers`, for `subject`, valid `ttl_s` seconds from `now`.
///
/// # Errors
/// See [`MintError`].
pub fn mint(
    issuers: &[JwtIssuerSettings],
    name: &str,
    source: &ConfigSource,
    subject: &str,
    ttl_s: u64,
    now: SystemTime,
) -> Result<String, MintError> {
    let issuer =
        issuers
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| MintError::UnknownIssuer {
                name: name.to_owned(),
                known: if issuers.is_empty() {
                    "none".to_owned()
                } else {
                    issuers
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
    let file = issuer
        .private_key_file
        .as_ref()
        .ok_or_else(|| MintError::NoPrivateKey(issuer.name.clone()))?;
    if ttl_s == 0 || ttl_s > issuer.max_token_lifetime_s {
        return Err(MintError::Lifetime {
            max: issuer.max_token_lifetime_s,
        });
    }
    let path = source.resolve(file);
    let pem = std::fs::read(&path).map_err(|source| MintError::Read {
        path: path.clone(),
        source,
    })?;
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": issuer.issuer,
        "aud": issuer.audiences.first(),
        "sub": subject,
        "iat": iat,
        "exp": iat + ttl_s,
    });
    for alg in issuer
        .algorithms
        .iter()
        .filter_map(|a| allowed_algorithm(a))
    {
        use jsonwebtoken::Algorithm::{ES256, ES384, EdDSA};
        let key = match alg {
            ES256 | ES384 => EncodingKey::from_ec_pem(&pem),
            EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        };
        let Ok(key) = key else { continue };
        if let Ok(token) = jsonwebtoken::encode(&Header::new(alg), &claims, &key) {
            return Ok(token);
        }
    }
    Err(MintError::NoUsableKey(path))
}
