//! The public keys of the issuers: PEM key files and JWKS with their refetch policy.
//!
//! A [`KeySet`] is immutable; a JWKS issuer swaps in a new one (lock-free for readers) when a
//! fetch brings a different set, and keeps the current one when a fetch fails. Fetches of one
//! issuer are single-flight: concurrent tokens with an unknown `kid` wait for the one fetch in
//! progress rather than start their own, and none starts within [`JWKS_REFETCH_COOLDOWN`] of the
//! last fetch of any kind (scheduled, at start, or for an unknown `kid`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Uri, header};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::JwtRejection;
use crate::upstream::{CORRELATION_HEADER, HttpClient};

/// How often the background task refetches a JWKS.
pub(super) const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// No fetch starts sooner than this after the previous one; also the retry delay of a failed
/// background fetch.
pub(super) const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// Longest JWKS fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

const USER_AGENT: &str = concat!("genesys-gateway/", env!("CARGO_PKG_VERSION"));

/// The keys of one issuer.
pub(super) enum IssuerKeys {
    /// Read from a PEM file at build time; never changes.
    Pem(KeySet),
    /// Fetched from a JWKS URL.
    Jwks(Box<Jwks>),
}

impl IssuerKeys {
    /// Identifies the current key set: a cached verification made with another is not used.
    pub(super) fn generation(&self) -> u64 {
        match self {
            Self::Pem(_) => 0,
            Self::Jwks(jwks) => jwks.current.load().generation,
        }
    }

    /// Checks the signature of a token; answers the generation of the key set that verified it.
    /// A JWKS issuer that has no key for the token refetches its set first (when the cooldown
    /// allows).
    pub(super) async fn verify(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        signing_input: &str,
        signature: &str,
        now: SystemTime,
    ) -> Result<u64, JwtRejection> {
        match self {
            Self::Pem(set) => set.verify(alg, None, signing_input, signature).map(|()| 0),
            Self::Jwks(jwks) => {
                let set = jwks.current.load_full();
                match set.verify(alg, kid, signing_input, signature) {
                    Err(JwtRejection::UnknownKey) => {}
                    other => return other.map(|()| set.generation),
                }
                let set = jwks.refetch(set.generation, now).await;
                match set.verify(alg, kid, signing_input, signature) {
                    Err(JwtRejection::UnknownKey) if !set.loaded => {
                        Err(JwtRejection::KeysUnavailable)
                    }
                    other => other.map(|()| set.generation),
                }
            }
        }
    }
}

/// Which verification a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Rsa,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (Self::P256, Algorithm::ES256)
                | (Self::P384, Algorithm::ES384)
                | (Self::Ed25519, Algorithm::EdDSA)
                | (
                    Self::Rsa,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
        )
    }

    /// An algorithm this kind of key verifies (to probe a key at load).
    fn probe_algorithm(self) -> Algorithm {
        match self {
            Self::P256 => Algorithm::ES256,
            Self::P384 => Algorithm::ES384,
            Self::Rsa => Algorithm::RS256,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// One public key.
struct PublicKey {
    /// The JWK `kid` (PEM keys have none).
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK `alg`, when the set restricts the key to one algorithm.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The keys of an issuer at one moment.
pub(super) struct KeySet {
    keys: Vec<PublicKey>,
    /// Changes whenever a fetch brings different keys (0: PEM, or never fetched).
    generation: u64,
    /// Whether the set holds what a source gave (false: a JWKS never fetched successfully).
    loaded: bool,
}

impl KeySet {
    fn empty() -> Self {
        Self {
            keys: Vec::new(),
            generation: 0,
            loaded: false,
        }
    }

    /// `Ok` when a candidate key verifies the signature. The candidates are the keys that fit
    /// `alg` (and, with a `kid`, have that `kid`); none → [`JwtRejection::UnknownKey`], none
    /// verifying → [`JwtRejection::Signature`].
    fn verify(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        signing_input: &str,
        signature: &str,
    ) -> Result<(), JwtRejection> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg))
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtRejection::UnknownKey);
        }
        for key in candidates {
            if let Ok(true) =
                jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key.key, alg)
            {
                return Ok(());
            }
        }
        Err(JwtRejection::Signature)
    }

    /// A digest of the keys (to tell whether a fetch changed anything).
    fn digest(keys: &[PublicKey]) -> [u8; 32] {
        let mut hash = Sha256::new();
        for key in keys {
            let kid = key.kid.as_deref().unwrap_or("");
            hash.update((kid.len() as u64).to_be_bytes());
            hash.update(kid.as_bytes());
            hash.update(format!("{:?}/{:?}", key.kind, key.alg).as_bytes());
            match key.key.kind() {
                DecodingKeyKind::SecretOrDer(bytes) => {
                    hash.update((bytes.len() as u64).to_be_bytes());
                    hash.update(bytes);
                }
                DecodingKeyKind::RsaModulusExponent { n, e } => {
                    hash.update((n.len() as u64).to_be_bytes());
                    hash.update(n);
                    hash.update((e.len() as u64).to_be_bytes());
                    hash.update(e);
                }
            }
        }
        hash.finalize().into()
    }
}

/// Whether the crypto backend accepts `key` for its kind of algorithm (a malformed EC point or
/// Ed25519 key is refused when the verifier is built, not on every token). Verifying a dummy
/// signature answers `Ok(false)` for a usable key and `Err` for an unusable one.
fn usable(key: &DecodingKey, kind: KeyKind) -> bool {
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, kind.probe_algorithm()).is_ok()
}

/// Bits of a big-endian unsigned integer.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        None => 0,
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
    }
}

/// Reads the public keys of a PEM file: `PUBLIC KEY` (EC P-256/P-384, RSA, Ed25519) or
/// `RSA PUBLIC KEY` blocks.
///
/// # Errors
/// A message for the `key_file` problem: unreadable, no PEM block, a private key or a
/// certificate, an unsupported or too weak key, or no key fitting `algorithms`.
pub(super) fn load_pem(path: &Path, algorithms: &[Algorithm]) -> Result<KeySet, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let blocks =
        pem::parse_many(&text).map_err(|e| format!("{shown} is not a valid PEM file: {e}"))?;
    if blocks.is_empty() {
        return Err(format!("{shown} holds no PEM public key"));
    }
    let mut keys = Vec::with_capacity(blocks.len());
    for (n, block) in blocks.iter().enumerate() {
        let n = n + 1;
        let tag = block.tag();
        if tag.contains("PRIVATE") {
            return Err(format!(
                "{shown}: PEM block {n} is a private key ({tag}); give only public keys"
            ));
        }
        if tag != "PUBLIC KEY" && tag != "RSA PUBLIC KEY" {
            return Err(format!(
                "{shown}: PEM block {n} is a `{tag}`, not a `PUBLIC KEY`"
            ));
        }
        let key = pem_public_key(pem::encode(block).as_bytes())
            .map_err(|why| format!("{shown}: PEM block {n} {why}"))?;
        keys.push(key);
    }
    if !keys
        .iter()
        .any(|k| algorithms.iter().any(|alg| k.kind.fits(*alg)))
    {
        let allowed: Vec<String> = algorithms.iter().map(|a| format!("{a:?}")).collect();
        return Err(format!(
            "{shown}: none of its keys can verify the allowed algorithms ({})",
            allowed.join(" ")
        ));
    }
    Ok(KeySet {
        keys,
        generation: 0,
        loaded: true,
    })
}

/// One PEM public key block, classified.
fn pem_public_key(block: &[u8]) -> Result<PublicKey, String> {
    let unsupported = || "is not an EC P-256/P-384, RSA or Ed25519 public key".to_owned();
    let (key, kind) = if let Ok(key) = DecodingKey::from_ec_pem(block) {
        let kind = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => KeyKind::P256,
            Ok(97) => KeyKind::P384,
            _ => return Err(unsupported()),
        };
        (key, kind)
    } else if let Ok(key) = DecodingKey::from_ed_pem(block) {
        (key, KeyKind::Ed25519)
    } else if let Ok(key) = DecodingKey::from_rsa_pem(block) {
        let der = key.try_get_as_bytes().map_err(|_| unsupported())?;
        let provider = CryptoProvider::try_get_default().ok_or_else(unsupported)?;
        let (n, _) = (provider.key_utils.rsa_pub_components_from_public_key)(der)
            .map_err(|_| unsupported())?;
        let bits = bit_length(&n);
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
            ));
        }
        (key, KeyKind::Rsa)
    } else {
        return Err(unsupported());
    };
    if !usable(&key, kind) {
        return Err(unsupported());
    }
    Ok(PublicKey {
        kid: None,
        kind,
        alg: None,
        key,
    })
}

/// A JWK usable to verify signatures, or `None`: keys for encryption, symmetric (`oct`) keys,
/// other curves and types, RSA keys under 2048 bits, and keys whose `alg` is not an allowed
/// signature algorithm are skipped.
fn jwk_public_key(jwk: &Jwk) -> Option<PublicKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        // An `alg` that is not a signature algorithm (`RSA-OAEP`, ...) skips the key; one that
        // is not allowed (`HS256`) fits no kind below.
        Some(named) => Some(Algorithm::try_from(named).ok()?),
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return None,
        },
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(&p.n).ok()?;
            if bit_length(&n) < MIN_RSA_BITS {
                return None;
            }
            KeyKind::Rsa
        }
        _ => return None,
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    usable(&key, kind).then(|| PublicKey {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        key,
    })
}

/// The usable keys of a JWKS document (see [`jwk_public_key`]); a key that does not parse is
/// skipped, not fatal to the others.
fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body)
        .map_err(|_| "the answer is not a JWK set (`{\"keys\": [...]}`)".to_owned())?;
    let keys: Vec<PublicKey> = document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| jwk_public_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err("the JWK set holds no usable signature key".to_owned());
    }
    Ok(keys)
}

/// A JWKS source: the current key set and the fetch state.
pub(super) struct Jwks {
    issuer: Arc<str>,
    uri: Uri,
    /// The URL without user info or query, for logs.
    shown: Arc<str>,
    http: HttpClient,
    current: ArcSwap<KeySet>,
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// When the last fetch (of any kind, failed or not) started.
    last_fetch: Option<SystemTime>,
    /// The digest of the current keys.
    digest: Option<[u8; 32]>,
}

impl FetchState {
    fn cooling_down(&self, now: SystemTime) -> bool {
        self.last_fetch.is_some_and(|last| {
            // A clock that went back ends the cooldown rather than stretching it.
            now.duration_since(last)
                .is_ok_and(|since| since < JWKS_REFETCH_COOLDOWN)
        })
    }
}

impl Jwks {
    /// A source for `url`, nothing fetched yet.
    ///
    /// # Errors
    /// A message for the `jwks_url` problem when it is not an absolute http(s) URL.
    pub(super) fn new(issuer: &str, url: &str, http: HttpClient) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|_| "is not a valid URL".to_owned())?;
        let (Some(scheme @ ("http" | "https")), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err("must be an absolute http:// or https:// URL".to_owned());
        };
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = format!("{scheme}://{host}{port}{}", uri.path());
        Ok(Self {
            issuer: Arc::from(issuer),
            shown: Arc::from(shown),
            uri,
            http,
            current: ArcSwap::from_pointee(KeySet::empty()),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// The key set to use after a token found no key in the set of generation `seen`: a newer
    /// set if another fetch brought one meanwhile, else the result of a fetch now — unless the
    /// last fetch started less than the cooldown ago.
    async fn refetch(&self, seen: u64, now: SystemTime) -> Arc<KeySet> {
        let mut state = self.fetch.lock().await;
        let current = self.current.load_full();
        if current.generation != seen || state.cooling_down(now) {
            return current;
        }
        self.fetch_locked(&mut state, now).await;
        self.current.load_full()
    }

    /// A scheduled fetch (at start and every [`JWKS_REFRESH_INTERVAL`]); answers whether it
    /// succeeded.
    pub(super) async fn refresh(&self, now: SystemTime) -> bool {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state, now).await
    }

    async fn fetch_locked(&self, state: &mut FetchState, now: SystemTime) -> bool {
        state.last_fetch = Some(now);
        match self.download().await {
            Ok(keys) => {
                let digest = KeySet::digest(&keys);
                if state.digest != Some(digest) {
                    let generation = self.current.load().generation + 1;
                    tracing::info!(
                        issuer = %self.issuer,
                        url = %self.shown,
                        keys = keys.len(),
                        "JWKS key set loaded"
                    );
                    self.current.store(Arc::new(KeySet {
                        keys,
                        generation,
                        loaded: true,
                    }));
                    state.digest = Some(digest);
                }
                true
            }
            Err(error) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    url = %self.shown,
                    %error,
                    "JWKS fetch failed; the last good key set is kept"
                );
                false
            }
        }
    }

    async fn download(&self) -> Result<Vec<PublicKey>, String> {
        let mut request = http::Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .body(Bytes::new())
            .map_err(|e| e.to_string())?;
        if let Some(id) = crate::telemetry::RequestId::current() {
            request
                .headers_mut()
                .insert(CORRELATION_HEADER, id.header_value());
        }
        let response = self
            .http
            .send(request, JWKS_FETCH_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status.is_success() {
            return Err(format!("the JWKS URL answered {}", response.status));
        }
        if response.body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWK set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        parse_jwks(&response.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0xff]), 9);
    }

    #[test]
    fn only_signature_keys_of_allowed_types_are_taken_from_a_jwks() {
        let rsa_1024 = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "n": rsa_1024, "e": "AQAB", "kid": "weak"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
             "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
             "kid": "hs", "alg": "HS256"},
            {"kty": "weird"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
             "kid": "good", "use": "sig", "alg": "EdDSA"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("good")]);
        assert_eq!(keys[0].kind, KeyKind::Ed25519);
        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn the_cooldown_counts_from_the_last_fetch() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut state = FetchState::default();
        assert!(!state.cooling_down(t0));
        state.last_fetch = Some(t0);
        assert!(state.cooling_down(t0 + Duration::from_secs(29)));
        assert!(!state.cooling_down(t0 + Duration::from_secs(30)));
        assert!(!state.cooling_down(t0 - Duration::from_secs(5)));
    }
}
