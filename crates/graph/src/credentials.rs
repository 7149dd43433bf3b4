//! App credentials of a tenant: a client secret, or a certificate whose key signs a client
//! assertion (RS256, `x5t#S256`).

use secrecy::{ExposeSecret, SecretString};

/// How the app proves itself to a tenant's token endpoint.
#[derive(Clone)]
pub enum Credential {
    /// `client_secret`.
    ClientSecret {
        /// Application (client) id.
        client_id: String,
        /// The secret value.
        secret: SecretString,
    },
    /// A certificate: the private key signs a JWT client assertion.
    Certificate {
        /// Application (client) id.
        client_id: String,
        /// Base64url SHA-256 of the DER certificate (`x5t#S256`).
        thumbprint_s256: String,
        /// The RSA private key, PEM (PKCS#1 or PKCS#8).
        private_key_pem: SecretString,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ClientSecret { client_id, .. } => {
                f.debug_struct("ClientSecret").field("client_id", client_id).finish_non_exhaustive()
            }
            Credential::Certificate { client_id, thumbprint_s256, .. } => f
                .debug_struct("Certificate")
                .field("client_id", client_id)
                .field("thumbprint_s256", thumbprint_s256)
                .finish_non_exhaustive(),
        }
    }
}

/// A credential that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The private key does not parse or cannot sign.
    #[error("the certificate's private key cannot sign a client assertion: {0}")]
    BadKey(String),
}

impl Credential {
    /// The application id.
    pub fn client_id(&self) -> &str {
        match self {
            Credential::ClientSecret { client_id, .. }
            | Credential::Certificate { client_id, .. } => client_id,
        }
    }

    /// The form fields that authenticate the app, for a token request to `token_url`.
    pub(crate) fn form_fields(
        &self,
        token_url: &str,
        now_unix: i64,
    ) -> Result<Vec<(&'static str, String)>, CredentialError> {
        match self {
            Credential::ClientSecret { secret, .. } => {
                Ok(vec![("client_secret", secret.expose_secret().to_owned())])
            }
            Credential::Certificate { client_id, thumbprint_s256, private_key_pem } => {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.x5t_s256 = Some(thumbprint_s256.clone());
                let claims = serde_json::json!({
                    "aud": token_url,
                    "iss": client_id,
                    "sub": client_id,
                    "jti": uuid::Uuid::new_v4().to_string(),
                    "nbf": now_unix,
                    "iat": now_unix,
                    "exp": now_unix + 600,
                });
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(
                    private_key_pem.expose_secret().as_bytes(),
                )
                .map_err(|e| CredentialError::BadKey(e.to_string()))?;
                let assertion = jsonwebtoken::encode(&header, &claims, &key)
                    .map_err(|e| CredentialError::BadKey(e.to_string()))?;
                Ok(vec![
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                    ),
                    ("client_assertion", assertion),
                ])
            }
        }
    }
}
