//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`,
//! keyed by the secret's bytes. Secrets are shown as `whsec_<base64 of 32 random bytes>`.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

/// The prefix of a webhook secret as shown to people.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of a new secret.
const SECRET_BYTES: usize = 32;

/// A webhook signing secret. Its `Debug` output never shows it.
pub struct WebhookSecret(SecretBox<Vec<u8>>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let bytes: [u8; SECRET_BYTES] = rand::random();
        Self(SecretBox::new(Box::new(bytes.to_vec())))
    }

    /// A secret from its bytes (as the vault opens them).
    pub fn from_bytes(bytes: SecretBox<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The secret's bytes: the HMAC key, and what the vault seals.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The secret as shown once to its owner: `whsec_` + base64 of its bytes.
    pub fn to_text(&self) -> SecretString {
        SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(self.expose_bytes())))
    }
}

/// The `webhook-signature` value of one secret: `v1,<base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))>`.
pub fn sign(secret: &WebhookSecret, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_bytes()) else {
        return String::new();
    };
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The whole `webhook-signature` header: one signature per secret, space-separated (the
/// current secret first; during a rotation, the previous one after it).
pub fn signature_header(
    secrets: &[&WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.iter().map(|s| sign(s, message_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(text: &str) -> WebhookSecret {
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap();
        WebhookSecret::from_bytes(SecretBox::new(Box::new(STANDARD.decode(b64).unwrap())))
    }

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = secret_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_every_secret_in_order() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        let header = signature_header(&[&a, &b], "msg_1", 10, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, vec![sign(&a, "msg_1", 10, b"{}"), sign(&b, "msg_1", 10, b"{}")]);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_32_random_bytes_shown_with_their_prefix_and_never_debugged() {
        let s = WebhookSecret::generate();
        assert_eq!(s.expose_bytes().len(), 32);
        let text = s.to_text();
        assert!(text.expose_secret().starts_with(SECRET_PREFIX));
        assert_eq!(secret_of(text.expose_secret()).expose_bytes(), s.expose_bytes());
        assert_ne!(WebhookSecret::generate().expose_bytes(), s.expose_bytes());
        let b64 = &text.expose_secret()[SECRET_PREFIX.len()..];
        assert!(!format!("{s:?}").contains(b64));
    }
}
