//! Signed, expiring bearer tokens: `v1.<claims>.<signature>`, where claims
//! is base64url JSON and the signature is HMAC-SHA256 over `v1.<claims>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused; shown to the client as-is (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Issues and checks tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }

    /// Signs `claims` into a token.
    pub fn issue(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signed = format!("v1.{body}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Checks signature and expiry at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let body = signed.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
        let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// A keyed digest of a password, compared in constant time by [`Signer::password_matches`].
    pub fn password_digest(&self, password: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(b"password:");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn password_matches(&self, password: &str, digest: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(b"password:");
        mac.update(password.as_bytes());
        mac.verify_slice(digest).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u-1001".into(),
            name: "alice".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let signer = Signer::new("0123456789abcdef");
        let token = signer.issue(&claims(100));
        assert_eq!(signer.verify(&token, 50).unwrap(), claims(100));
        assert_eq!(signer.verify(&token, 100), Err(TokenError::Expired));
        assert_eq!(
            Signer::new("another-secret-xyz").verify(&token, 50),
            Err(TokenError::BadSignature)
        );
        let forged = token.replacen("v1.", "v1.e30", 1);
        assert!(signer.verify(&forged, 50).is_err());
        assert_eq!(signer.verify("garbage", 50), Err(TokenError::Malformed));
    }

    #[test]
    fn passwords() {
        let signer = Signer::new("0123456789abcdef");
        let digest = signer.password_digest("alice-password");
        assert!(signer.password_matches("alice-password", &digest));
        assert!(!signer.password_matches("alice-passwore", &digest));
    }
}
