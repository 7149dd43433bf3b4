//! What an MSP sends to onboard a tenant, checked field by field before anything is stored or
//! sent to Microsoft, and the stable codes a failed connectivity check is reported with.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sspr_graph::GraphError;

pub use sspr_domain::FieldProblem;

/// How a tenant is named: its Entra tenant id, or one of its verified domains (resolved to the
/// id at verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntraTenantRef {
    /// The directory (tenant) id, lowercase.
    Id(String),
    /// A domain such as `contoso.onmicrosoft.com`, lowercase.
    Domain(String),
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

impl EntraTenantRef {
    /// Parses a tenant id or a domain.
    pub fn parse(field: &str, text: &str) -> Result<Self, FieldProblem> {
        let t = text.trim().to_ascii_lowercase();
        if t.is_empty() {
            Err(FieldProblem::new(
                field,
                "required",
                "an Entra tenant id (GUID) or verified domain is required",
            ))
        } else if is_guid(&t) {
            Ok(Self::Id(t))
        } else if is_domain(&t) {
            Ok(Self::Domain(t))
        } else {
            Err(FieldProblem::new(
                field,
                "invalid_format",
                "expected a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47 or a domain such as contoso.onmicrosoft.com",
            ))
        }
    }

    /// The value to put in the token endpoint's URL.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Id(s) | Self::Domain(s) => s,
        }
    }
}

/// The base64url SHA-256 of a certificate's DER bytes (the `x5t#S256` of client assertions),
/// from its PEM.
pub fn certificate_thumbprint_s256(pem: &str) -> Result<String, String> {
    let der = pem_body(pem, &["CERTIFICATE"])?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)))
}

/// The first certificate of a PEM text, alone, re-encoded: what is stored, so that nothing else
/// a PEM bundle may carry (a private key above all) reaches the database in clear.
pub fn certificate_only(pem: &str) -> Result<String, String> {
    let der = pem_body(pem, &["CERTIFICATE"])?;
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    Ok(out)
}

/// The bytes of the first PEM block with one of `labels`.
fn pem_body(pem: &str, labels: &[&str]) -> Result<Vec<u8>, String> {
    let start = labels
        .iter()
        .find_map(|l| pem.find(&format!("-----BEGIN {l}-----")).map(|i| (i, *l)))
        .ok_or_else(|| format!("expected a PEM block -----BEGIN {}-----", labels[0]))?;
    let (i, label) = start;
    let header = format!("-----BEGIN {label}-----");
    let footer = format!("-----END {label}-----");
    let rest = &pem[i + header.len()..];
    let end = rest.find(&footer).ok_or_else(|| format!("the PEM block has no {footer} line"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD.decode(body).map_err(|_| "the PEM body is not base64".to_owned())?;
    if bytes.len() < 64 {
        return Err("the PEM body is too short to be a key or certificate".into());
    }
    Ok(bytes)
}

/// Checks a display name: 1 to 200 characters after trimming, no control characters.
pub fn check_display_name(field: &str, value: &str, problems: &mut Vec<FieldProblem>) -> String {
    let v = value.trim();
    if v.is_empty() {
        problems.push(FieldProblem::new(field, "required", "a display name is required"));
    } else if v.chars().count() > 200 {
        problems.push(FieldProblem::new(field, "too_long", "at most 200 characters"));
    } else if v.chars().any(char::is_control) {
        problems.push(FieldProblem::new(
            field,
            "invalid_format",
            "control characters are not allowed",
        ));
    }
    v.to_owned()
}

/// Checks tags: at most 50, each 1 to 64 of `a-z 0-9 . _ : -` (lowercased), deduplicated and
/// sorted.
pub fn check_tags(field: &str, tags: &[String], problems: &mut Vec<FieldProblem>) -> Vec<String> {
    if tags.len() > 50 {
        problems.push(FieldProblem::new(field, "too_many", "at most 50 tags"));
    }
    let mut out = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let t = tag.trim().to_ascii_lowercase();
        if t.is_empty()
            || t.len() > 64
            || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
        {
            problems.push(FieldProblem::new(
                format!("{field}[{i}]"),
                "invalid_format",
                "a tag is 1 to 64 characters of a-z, 0-9, '.', '_', ':' and '-'",
            ));
        } else {
            out.push(t);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Checks external references (PSA company ids): at most 20; keys 1 to 64 of `a-z 0-9 . _ -`
/// (lowercased), values 1 to 256 characters without control characters.
pub fn check_external_refs(
    field: &str,
    refs: &std::collections::BTreeMap<String, String>,
    problems: &mut Vec<FieldProblem>,
) -> std::collections::BTreeMap<String, String> {
    if refs.len() > 20 {
        problems.push(FieldProblem::new(field, "too_many", "at most 20 external references"));
    }
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in refs {
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty()
            || key.len() > 64
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            // The name is not repeated, not even in the path: it may be a secret.
            problems.push(FieldProblem::new(
                field,
                "invalid_format",
                "a reference name is 1 to 64 characters of a-z, 0-9, '.', '_' and '-'",
            ));
            continue;
        }
        let path = format!("{field}.{key}");
        let value = v.trim();
        if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
            problems.push(FieldProblem::new(
                &path,
                "invalid_format",
                "a reference value is 1 to 256 characters without control characters",
            ));
            continue;
        }
        out.insert(key, value.to_owned());
    }
    out
}

/// A tenant to onboard, as sent to `POST /v1/tenants` and as one row of an import.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// The Entra tenant id (GUID), or one of the tenant's verified domains (resolved to the id
    /// by the first verification).
    #[schema(example = "72f988bf-86f1-41af-91ab-2d7cd011db47")]
    pub entra_tenant: String,
    /// The customer's name as the MSP knows it.
    #[schema(example = "Contoso Ltd")]
    pub display_name: String,
    /// Free tags for selecting tenants in rollouts, e.g. `wave-1`, `region:eu`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Company ids in PSA tools, e.g. `{"connectwise": "19283"}`.
    #[serde(default)]
    pub external_refs: std::collections::BTreeMap<String, String>,
    /// How sspr-fleet signs in to the tenant's Graph.
    pub credentials: CredentialInput,
}

/// A [`TenantInput`] that passed every check, normalised.
#[derive(Debug, Clone)]
pub struct ValidTenant {
    /// The Entra tenant as given, lowercase.
    pub entra: EntraTenantRef,
    /// Trimmed display name.
    pub display_name: String,
    /// Normalised tags.
    pub tags: Vec<String>,
    /// Normalised references.
    pub external_refs: std::collections::BTreeMap<String, String>,
    /// The credentials.
    pub credentials: CredentialInput,
}

impl TenantInput {
    /// Checks every field; every problem is reported, not just the first.
    pub fn validate(self) -> Result<ValidTenant, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let entra = EntraTenantRef::parse("entra_tenant", &self.entra_tenant)
            .map_err(|p| problems.push(p))
            .ok();
        let display_name = check_display_name("display_name", &self.display_name, &mut problems);
        let tags = check_tags("tags", &self.tags, &mut problems);
        let external_refs =
            check_external_refs("external_refs", &self.external_refs, &mut problems);
        problems.extend(self.credentials.problems("credentials"));
        if matches!(self.credentials, CredentialInput::DelegatedRefreshToken { .. }) {
            problems.push(FieldProblem::new(
                "credentials.kind",
                "not_app_only",
                "Graph calls need client_secret or certificate credentials; a delegated refresh token for the portal adapter goes to PUT /v1/tenants/{id}/portal-credentials",
            ));
        }
        match entra {
            Some(entra) if problems.is_empty() => Ok(ValidTenant {
                entra,
                display_name,
                tags,
                external_refs,
                credentials: self.credentials,
            }),
            _ => Err(problems),
        }
    }
}

/// Credentials as submitted (before they are sealed in the vault).
#[derive(Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialInput {
    /// An app registration's client secret.
    ClientSecret {
        /// Application (client) id.
        client_id: String,
        /// The secret value. Stored encrypted; never returned.
        #[schema(value_type = String, format = Password)]
        client_secret: SecretString,
    },
    /// A certificate and its private key (client assertion, RS256, `x5t#S256`).
    Certificate {
        /// Application (client) id.
        client_id: String,
        /// The certificate, PEM.
        certificate_pem: String,
        /// Its RSA private key, PEM (PKCS#1 or PKCS#8). Stored encrypted; never returned.
        #[schema(value_type = String, format = Password)]
        private_key_pem: SecretString,
    },
    /// A delegated refresh token for the opt-in, unsupported portal adapter.
    DelegatedRefreshToken {
        /// The client id the refresh token was issued to.
        client_id: String,
        /// The refresh token. Stored encrypted; never returned.
        #[schema(value_type = String, format = Password)]
        refresh_token: SecretString,
    },
}

impl std::fmt::Debug for CredentialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, client_id) = match self {
            Self::ClientSecret { client_id, .. } => ("client_secret", client_id),
            Self::Certificate { client_id, .. } => ("certificate", client_id),
            Self::DelegatedRefreshToken { client_id, .. } => ("delegated_refresh_token", client_id),
        };
        f.debug_struct("CredentialInput")
            .field("kind", &kind)
            .field("client_id", client_id)
            .finish_non_exhaustive()
    }
}

impl CredentialInput {
    /// Every problem with the credentials, field by field (`prefix` is the path of the object).
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let field = |name: &str| format!("{prefix}.{name}");
        let mut problems = Vec::new();
        let client_id = match self {
            Self::ClientSecret { client_id, .. }
            | Self::Certificate { client_id, .. }
            | Self::DelegatedRefreshToken { client_id, .. } => client_id,
        };
        if !is_guid(&client_id.trim().to_ascii_lowercase()) {
            problems.push(FieldProblem::new(
                field("client_id"),
                "invalid_format",
                "the application (client) id must be a GUID",
            ));
        }
        let secret_ok = |s: &SecretString, name: &str, problems: &mut Vec<FieldProblem>| {
            let v = s.expose_secret();
            if v.trim().is_empty() {
                problems.push(FieldProblem::new(
                    field(name),
                    "required",
                    format!("{name} must not be empty"),
                ));
            } else if v.len() > 16 * 1024 {
                problems.push(FieldProblem::new(
                    field(name),
                    "too_long",
                    format!("{name} is longer than 16 KiB"),
                ));
            }
        };
        match self {
            Self::ClientSecret { client_secret, .. } => {
                secret_ok(client_secret, "client_secret", &mut problems)
            }
            Self::DelegatedRefreshToken { refresh_token, .. } => {
                secret_ok(refresh_token, "refresh_token", &mut problems)
            }
            Self::Certificate { certificate_pem, private_key_pem, .. } => {
                // A bundle (certificate and key in one PEM, as many .pem files are) is
                // accepted: only its certificate is kept (see `certificate_only`).
                if let Err(e) = certificate_thumbprint_s256(certificate_pem) {
                    problems.push(FieldProblem::new(field("certificate_pem"), "invalid_format", e));
                }
                let key = private_key_pem.expose_secret();
                let parsed = pem_body(key, &["PRIVATE KEY", "RSA PRIVATE KEY"]).and_then(|_| {
                    jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes())
                        .map(|_| ())
                        .map_err(|_| String::new())
                });
                if parsed.is_err() {
                    // The message never repeats any of the key.
                    problems.push(FieldProblem::new(
                        field("private_key_pem"),
                        "invalid_format",
                        "expected an RSA private key in PEM (PKCS#1 or PKCS#8)",
                    ));
                }
            }
        }
        problems
    }
}

/// The stable code of a failed connectivity check, from the identity platform's or Graph's
/// answer.
pub fn failure_code(error: &GraphError) -> &'static str {
    match error {
        GraphError::Token { codes, error, .. } => {
            let has = |c: u64| codes.contains(&c);
            if has(90002) {
                "tenant_not_found"
            } else if has(700016) || has(7000229) || has(65001) {
                "consent_missing"
            } else if has(7000222) {
                "credentials_expired"
            } else if has(7000215) || has(700027) || has(7000218) || error == "invalid_client" {
                "credentials_invalid"
            } else {
                "token_refused"
            }
        }
        GraphError::Graph { status: 403, code, .. } if code == "Authorization_RequestDenied" => {
            "permission_missing"
        }
        GraphError::Graph { status: 401, .. } => "consent_missing",
        GraphError::CircuitOpen { .. } => "tenant_set_aside",
        e if e.is_transient() => "graph_unavailable",
        _ => "graph_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_refs_accept_guids_and_domains_only() {
        assert_eq!(
            EntraTenantRef::parse("tenant", " 72F988BF-86F1-41AF-91AB-2D7CD011DB47 ").unwrap(),
            EntraTenantRef::Id("72f988bf-86f1-41af-91ab-2d7cd011db47".into())
        );
        assert_eq!(
            EntraTenantRef::parse("tenant", "Contoso.onmicrosoft.com").unwrap(),
            EntraTenantRef::Domain("contoso.onmicrosoft.com".into())
        );
        for bad in [
            "",
            "contoso",
            "72f988bf-86f1-41af-91ab",
            "con toso.com",
            "-x.com",
            "x.123",
            "a..b.com",
        ] {
            let p = EntraTenantRef::parse("tenant", bad).unwrap_err();
            assert_eq!(p.field, "tenant", "{bad:?}");
        }
    }

    fn input(json: serde_json::Value) -> Result<CredentialInput, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn credential_kinds_parse_and_unknown_kinds_or_fields_are_refused() {
        let ok = input(serde_json::json!({"kind": "client_secret", "client_id": "11111111-2222-3333-4444-555555555555", "client_secret": "s3cret!"})).unwrap();
        assert!(ok.problems("credentials").is_empty());
        assert!(!format!("{ok:?}").contains("s3cret"));
        assert!(input(serde_json::json!({"kind": "password", "client_id": "x"})).is_err());
        assert!(input(serde_json::json!({"kind": "client_secret", "client_id": "x", "client_secret": "y", "extra": 1})).is_err());
    }

    #[test]
    fn every_invalid_field_is_named() {
        let bad = input(serde_json::json!({"kind": "client_secret", "client_id": "not-a-guid", "client_secret": "  "})).unwrap();
        let problems = bad.problems("credentials");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["credentials.client_id", "credentials.client_secret"]);
        let cert = input(serde_json::json!({"kind": "certificate", "client_id": "11111111-2222-3333-4444-555555555555",
            "certificate_pem": "not pem", "private_key_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"})).unwrap();
        let problems = cert.problems("credentials");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.code == "invalid_format"));
        assert!(problems.iter().all(|p| !p.message.contains("AAAA")));
    }

    #[test]
    fn a_real_key_and_certificate_pass_and_the_thumbprint_is_sha256_of_the_der() {
        let key = include_str!("../../graph-sim/tests/data/test-app-key.pem");
        // Any DER will do for the thumbprint rule; use the public key's as a stand-in body.
        let der_pem = include_str!("../../graph-sim/tests/data/test-app-key.pub.pem")
            .replace("PUBLIC KEY", "CERTIFICATE");
        let cert = input(serde_json::json!({"kind": "certificate", "client_id": "11111111-2222-3333-4444-555555555555",
            "certificate_pem": der_pem, "private_key_pem": key})).unwrap();
        assert!(cert.problems("credentials").is_empty());
        let der = pem_body(&der_pem, &["CERTIFICATE"]).unwrap();
        assert_eq!(
            certificate_thumbprint_s256(&der_pem).unwrap(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(&der))
        );
    }

    #[test]
    fn only_the_certificate_of_a_bundle_is_kept() {
        let key = include_str!("../../graph-sim/tests/data/test-app-key.pem");
        let cert = include_str!("../../graph-sim/tests/data/test-app-key.pub.pem")
            .replace("PUBLIC KEY", "CERTIFICATE");
        let kept = certificate_only(&format!("{cert}{key}")).unwrap();
        assert!(!kept.contains("PRIVATE KEY"));
        assert_eq!(
            certificate_thumbprint_s256(&kept).unwrap(),
            certificate_thumbprint_s256(&cert).unwrap()
        );
        let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!kept.replace('\n', "").contains(&key_body[10..40]));
    }

    #[test]
    fn token_failures_map_to_stable_codes() {
        let token = |codes: Vec<u64>| GraphError::Token {
            status: 400,
            error: "x".into(),
            codes,
            description: String::new(),
        };
        assert_eq!(failure_code(&token(vec![700016])), "consent_missing");
        assert_eq!(failure_code(&token(vec![7000215])), "credentials_invalid");
        assert_eq!(failure_code(&token(vec![7000222])), "credentials_expired");
        assert_eq!(failure_code(&token(vec![90002])), "tenant_not_found");
        let denied = GraphError::Graph {
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: String::new(),
            request_id: None,
            client_request_id: String::new(),
            retry_after: None,
        };
        assert_eq!(failure_code(&denied), "permission_missing");
    }
}
