//! Token verification (and dev-token minting): turns a JWT into an
//! [`Identity`] or a precise [`AuthError`] with its wire code.
//!
//! The algorithm is pinned by configuration: a token whose header names any
//! other algorithm is refused before its signature is looked at. A claim the
//! gateway is configured to check (`iss`, `aud`) is required, not only
//! checked when present. Never does network I/O; reads key files once at
//! start-up. Owns the `[auth]` settings ([`AuthConfig`]); reads nothing
//! else of the configuration.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use huddle_schema::wire::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// JWT algorithms the gateway accepts; exactly one is pinned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
    EdDSA,
}

/// The `[auth]` section: the pinned algorithm, its key, and the claims
/// every token must carry.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The one algorithm tokens must be signed with; others are refused.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret. Empty: a random one is generated once into
    /// `<data_dir>/dev-secret` — allowed only on loopback addresses.
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256 / EdDSA.
    pub public_key: Option<PathBuf>,
    /// PEM private key used only by `huddle token` to mint dev tokens for
    /// RS256 / ES256 / EdDSA. The gateway itself never signs.
    pub private_key: Option<PathBuf>,
    /// When set, every token must carry `iss` equal to it (a token without
    /// `iss` is refused); `huddle token` mints it.
    pub issuer: Option<String>,
    /// When set, every token must carry `aud`, a string equal to it or an
    /// array containing it (a token without `aud` is refused); `huddle
    /// token` mints it.
    pub audience: Option<String>,
    /// Clock skew tolerated on exp / nbf, seconds.
    pub leeway_s: u64,
    /// User ids refused with ACCOUNT_DISABLED whatever their token says.
    pub disabled_users: Vec<String>,
}

impl AuthConfig {
    /// Whether the key that verifies tokens is configured: the secret for
    /// HS256, a public key file otherwise (without it, a generated dev
    /// secret or nothing).
    pub fn has_configured_key(&self) -> bool {
        match self.algorithm {
            JwtAlgorithm::HS256 => self.secret.is_some(),
            _ => self.public_key.is_some(),
        }
    }

    /// Why these settings cannot work, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.algorithm != JwtAlgorithm::HS256 && self.public_key.is_none() {
            return Err(
                "auth.algorithm other than HS256 needs auth.public_key (a PEM file)".into(),
            );
        }
        Ok(())
    }
}

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// Skill ratings per game from the `ratings` claim (valid ones only).
    pub ratings: Vec<(Arc<str>, crate::core::engine::matchmaking::Rating)>,
}

/// A rating in a token's `ratings` claim: `{"arena": {"mu": 1620, "sigma": 80}}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RatingClaim {
    pub mu: f64,
    #[serde(default = "default_sigma")]
    pub sigma: f64,
}

fn default_sigma() -> f64 {
    crate::core::engine::matchmaking::DEFAULT_RATING.sigma
}

/// The claims Huddle reads from a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Account status; anything but `active` is ACCOUNT_DISABLED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Skill per game, set by the game backend that signs the token; the
    /// matchmaker uses it unless the backend set a newer one through the
    /// admin API. Games beyond the first 32 are ignored.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ratings: std::collections::BTreeMap<String, RatingClaim>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused; each maps to its own wire code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token: send a JWT in Hello.token (mint one with `huddle token --user ID`)")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired; fetch a fresh one and reconnect")]
    Expired,
    #[error("account {0} is disabled")]
    Disabled(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::TOKEN_MISSING,
            AuthError::Invalid(_) => ErrorCode::TOKEN_INVALID,
            AuthError::Expired => ErrorCode::TOKEN_EXPIRED,
            AuthError::Disabled(_) => ErrorCode::ACCOUNT_DISABLED,
        }
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Verifies tokens with the configured key and rules.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// `auth.issuer` and `auth.audience`, named in refusals.
    issuer: Option<String>,
    audience: Option<String>,
    disabled: HashSet<String>,
}

impl Authenticator {
    /// Builds the verifier. `dev_secret` is the generated HS256 secret used
    /// when none is configured.
    pub fn new(cfg: &AuthConfig, dev_secret: Option<&str>) -> anyhow::Result<Self> {
        let alg = algorithm(cfg.algorithm);
        let key = match cfg.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = cfg
                    .secret
                    .as_deref()
                    .or(dev_secret)
                    .ok_or_else(|| anyhow::anyhow!("auth.secret is not set"))?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            other => {
                let path = cfg
                    .public_key
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("auth.public_key is not set"))?;
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                match other {
                    JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem)?,
                    JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem)?,
                    _ => DecodingKey::from_ed_pem(&pem)?,
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway_s;
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss` and `aud` only when a token carries
        // them: a claim this gateway is configured to check is required.
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            disabled: cfg.disabled_users.iter().cloned().collect(),
        })
    }

    /// Verifies one token.
    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return Err(AuthError::Missing),
        };
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAlgorithm => AuthError::Invalid(format!(
                    "signed with an algorithm other than the configured {:?}",
                    self.validation
                        .algorithms
                        .first()
                        .copied()
                        .unwrap_or(Algorithm::HS256)
                )),
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidIssuer => {
                    AuthError::Invalid(format!("wrong issuer; {}", self.wanted("iss")))
                }
                ErrorKind::InvalidAudience => {
                    AuthError::Invalid(format!("wrong audience; {}", self.wanted("aud")))
                }
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("token has no `{c}` claim; {}", self.wanted(c)))
                }
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 128 {
            return Err(AuthError::Invalid("sub must be 1 to 128 bytes".into()));
        }
        if c.status.as_deref().is_some_and(|s| s != "active") || self.disabled.contains(&c.sub) {
            return Err(AuthError::Disabled(c.sub));
        }
        let username = c.name.unwrap_or_else(|| c.sub.clone());
        let ratings = c
            .ratings
            .iter()
            .take(32)
            .map(|(game, r)| {
                let rating = crate::core::engine::matchmaking::Rating {
                    mu: r.mu,
                    sigma: r.sigma,
                };
                (Arc::from(game.as_str()), rating)
            })
            .filter(|(_, r)| r.valid())
            .collect();
        Ok(Identity {
            ratings,
            display_name: c.display_name.unwrap_or_else(|| username.clone()),
            username,
            roles: c.roles,
            user_id: Arc::from(c.sub),
        })
    }

    /// What this gateway requires of `claim`, for a refusal's message.
    fn wanted(&self, claim: &str) -> String {
        match (claim, &self.issuer, &self.audience) {
            ("iss", Some(iss), _) => format!("this gateway requires iss = {iss:?}"),
            ("aud", _, Some(aud)) => {
                format!("this gateway requires aud = {aud:?} (or an array containing it)")
            }
            _ => format!("this gateway requires `{claim}`"),
        }
    }
}

/// Reads `<data_dir>/dev-secret`, creating it with 32 random bytes (hex) on
/// first use. Used only when no secret is configured, on loopback.
pub fn dev_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "creating the data directory {} (server.data_dir)",
            data_dir.display()
        )
    })?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    std::fs::write(&path, &secret)
        .with_context(|| format!("writing the dev secret {}", path.display()))?;
    restrict_permissions(&path);
    Ok(secret)
}

fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// What `huddle token` puts into a token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub user_id: String,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub ttl: Duration,
}

/// Mints a token with the configured algorithm: HS256 with the secret, the
/// others with `auth.private_key`.
pub fn mint(
    cfg: &AuthConfig,
    dev_secret: Option<&str>,
    req: &MintRequest,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: req.user_id.clone(),
        name: req.name.clone(),
        display_name: req.display_name.clone(),
        roles: req.roles.clone(),
        status: None,
        exp: now + req.ttl.as_secs().max(1),
        iat: Some(now),
        nbf: None,
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone().map(Audience::One),
        ratings: Default::default(),
    };
    let key = match cfg.algorithm {
        JwtAlgorithm::HS256 => {
            let secret = cfg
                .secret
                .as_deref()
                .or(dev_secret)
                .ok_or_else(|| anyhow::anyhow!("auth.secret is not set"))?;
            EncodingKey::from_secret(secret.as_bytes())
        }
        other => {
            let path = cfg.private_key.as_deref().ok_or_else(|| {
                anyhow::anyhow!("minting {other:?} tokens needs auth.private_key (a PEM file)")
            })?;
            let pem = std::fs::read(path)?;
            match other {
                JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem)?,
                JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem)?,
                _ => EncodingKey::from_ed_pem(&pem)?,
            }
        }
    };
    Ok(jsonwebtoken::encode(
        &Header::new(algorithm(cfg.algorithm)),
        &claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig {
            secret: Some("s3cret".into()),
            ..AuthConfig::default()
        }
    }

    fn token(claims: &Claims, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Claims {
            sub: "u1".into(),
            name: Some("alice".into()),
            display_name: None,
            roles: vec!["player".into()],
            status: None,
            exp: (now + exp_offset) as u64,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
            ratings: Default::default(),
        }
    }

    #[test]
    fn each_failure_has_its_code() {
        let auth = Authenticator::new(&cfg(), None).unwrap();
        assert_eq!(
            auth.verify(None).unwrap_err().code(),
            ErrorCode::TOKEN_MISSING
        );
        assert_eq!(
            auth.verify(Some("")).unwrap_err().code(),
            ErrorCode::TOKEN_MISSING
        );
        assert_eq!(
            auth.verify(Some("a.b.c")).unwrap_err().code(),
            ErrorCode::TOKEN_INVALID
        );
        let wrong_key = token(&claims(60), "other");
        assert_eq!(
            auth.verify(Some(&wrong_key)).unwrap_err().code(),
            ErrorCode::TOKEN_INVALID
        );
        let expired = token(&claims(-600), "s3cret");
        assert_eq!(
            auth.verify(Some(&expired)).unwrap_err().code(),
            ErrorCode::TOKEN_EXPIRED
        );
        let mut disabled = claims(60);
        disabled.status = Some("suspended".into());
        let disabled = token(&disabled, "s3cret");
        assert_eq!(
            auth.verify(Some(&disabled)).unwrap_err().code(),
            ErrorCode::ACCOUNT_DISABLED
        );
        let good = auth.verify(Some(&token(&claims(60), "s3cret"))).unwrap();
        assert_eq!(&*good.user_id, "u1");
        assert_eq!(good.username, "alice");
        assert_eq!(good.display_name, "alice");
    }

    /// A verifier for `alg` that checks iss = "studio" and aud contains
    /// "huddle", and a signer of tokens for it (HS256 with the test secret,
    /// RS256 with the test key pair in tests/fixtures).
    fn strict(alg: JwtAlgorithm) -> (Authenticator, impl Fn(&Claims) -> String) {
        let fixture = |name: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name)
        };
        let mut c = cfg();
        c.issuer = Some("studio".into());
        c.audience = Some("huddle".into());
        let signing = match alg {
            JwtAlgorithm::HS256 => EncodingKey::from_secret(b"s3cret"),
            JwtAlgorithm::RS256 => {
                c.public_key = Some(fixture("rs256-public.pem"));
                c.secret = None;
                EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap())
                    .unwrap()
            }
            other => unreachable!("no test key for {other:?}"),
        };
        c.algorithm = alg;
        let auth = Authenticator::new(&c, None).unwrap();
        let sign = move |claims: &Claims| {
            jsonwebtoken::encode(&Header::new(algorithm(alg)), claims, &signing).unwrap()
        };
        (auth, sign)
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required() {
        for alg in [JwtAlgorithm::HS256, JwtAlgorithm::RS256] {
            let (auth, sign) = strict(alg);
            let refusal = |claims: &Claims| {
                let err = auth.verify(Some(&sign(claims))).unwrap_err();
                assert_eq!(err.code(), ErrorCode::TOKEN_INVALID, "{alg:?}: {err}");
                err.to_string()
            };
            let mut good = claims(60);
            good.iss = Some("studio".into());
            good.aud = Some(Audience::One("huddle".into()));
            assert!(auth.verify(Some(&sign(&good))).is_ok(), "{alg:?}");

            let mut no_iss = claims(60);
            no_iss.aud = good.aud.clone();
            let why = refusal(&no_iss);
            assert!(
                why.contains("no `iss` claim") && why.contains(r#"iss = "studio""#),
                "{alg:?}: {why}"
            );

            let mut no_aud = claims(60);
            no_aud.iss = good.iss.clone();
            let why = refusal(&no_aud);
            assert!(
                why.contains("no `aud` claim") && why.contains(r#"aud = "huddle""#),
                "{alg:?}: {why}"
            );

            let mut wrong_iss = claims(60);
            wrong_iss.iss = Some("someone-else".into());
            wrong_iss.aud = good.aud.clone();
            assert!(refusal(&wrong_iss).contains("wrong issuer"), "{alg:?}");
        }
    }

    #[test]
    fn audience_may_be_a_list_that_contains_ours() {
        for alg in [JwtAlgorithm::HS256, JwtAlgorithm::RS256] {
            let (auth, sign) = strict(alg);
            let with_aud = |aud: Audience| {
                let mut c = claims(60);
                c.iss = Some("studio".into());
                c.aud = Some(aud);
                auth.verify(Some(&sign(&c)))
            };
            let ours = Audience::Many(vec!["other".into(), "huddle".into()]);
            assert!(with_aud(ours).is_ok(), "{alg:?}");
            for theirs in [
                Audience::Many(vec!["other".into(), "huddle-staging".into()]),
                Audience::Many(vec![]),
                Audience::One("other".into()),
            ] {
                let err = with_aud(theirs.clone()).unwrap_err();
                assert_eq!(err.code(), ErrorCode::TOKEN_INVALID, "{alg:?} {theirs:?}");
                assert!(err.to_string().contains("wrong audience"), "{err}");
            }
        }
    }

    #[test]
    fn tokens_need_no_iss_or_aud_when_none_is_configured() {
        let auth = Authenticator::new(&cfg(), None).unwrap();
        let mut theirs = claims(60);
        theirs.iss = Some("anyone".into());
        assert!(auth.verify(Some(&token(&claims(60), "s3cret"))).is_ok());
        assert!(auth.verify(Some(&token(&theirs, "s3cret"))).is_ok());
    }

    #[test]
    fn minted_tokens_verify() {
        let req = MintRequest {
            user_id: "42".into(),
            name: Some("bob".into()),
            display_name: Some("Bob".into()),
            roles: vec!["operator".into()],
            ttl: Duration::from_secs(60),
        };
        let mut strict = cfg();
        strict.issuer = Some("studio".into());
        strict.audience = Some("huddle".into());
        let t = mint(&strict, None, &req).unwrap();
        let id = Authenticator::new(&strict, None)
            .unwrap()
            .verify(Some(&t))
            .expect("a minted token carries the configured iss and aud");
        assert_eq!(id.roles, vec!["operator".to_string()]);
        assert_eq!(id.display_name, "Bob");
    }
}
