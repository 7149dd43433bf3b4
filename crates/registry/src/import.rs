//! Bulk import of tenants from CSV or JSON: parsed and checked row by row, then applied row by
//! row with a result for each (never all-or-nothing: one bad row does not hold back the rest).
//! Importing the same file again changes nothing.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    Registry, RegistryError, Upserted,
    onboarding::{CredentialInput, FieldProblem, TenantInput},
};

/// The columns a CSV import may have. `entra_tenant`, `display_name` and `client_id` are
/// required; `kind` defaults to `client_secret`; `tags` are separated by `;`; `external_refs`
/// are `name=value` pairs separated by `;`.
pub const CSV_COLUMNS: &[&str] = &[
    "entra_tenant",
    "display_name",
    "tags",
    "external_refs",
    "kind",
    "client_id",
    "client_secret",
    "certificate_pem",
    "private_key_pem",
];

/// Most rows one import may carry.
pub const MAX_IMPORT_ROWS: usize = 10_000;

/// A whole-file problem: nothing was imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportFileError {
    /// The CSV header names a column that does not exist, or lacks a required one.
    #[error("{0}")]
    Header(String),
    /// The file is not CSV or JSON of the expected shape.
    #[error("{0}")]
    Malformed(String),
    /// Too many rows.
    #[error("at most {MAX_IMPORT_ROWS} rows per import")]
    TooManyRows,
}

/// One parsed row.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// 1-based row number (CSV: the line's record number after the header).
    pub row: usize,
    /// The `entra_tenant` of the row, as written, when it has one.
    pub entra_tenant: Option<String>,
    /// The row, or why it could not be read.
    pub parsed: Result<TenantInput, Vec<FieldProblem>>,
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ImportOutcome {
    /// 1-based row number.
    pub row: usize,
    /// The row's `entra_tenant`, normalised; absent when the cell is not a tenant id or domain.
    pub entra_tenant: Option<String>,
    /// `created`, `updated`, `unchanged`, `invalid`, `conflict` or `failed`; with `dry_run`,
    /// `valid` instead of the first three.
    pub outcome: String,
    /// The tenant the row created or matched.
    pub tenant_id: Option<String>,
    /// Field problems of an invalid row, or the reason of a failed one.
    pub errors: Vec<RowError>,
}

/// A problem with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct RowError {
    /// The field (`credentials.client_id`, `tags[1]`, ...).
    pub field: String,
    /// Stable code.
    pub code: String,
    /// For a human; never contains a secret.
    pub message: String,
}

impl From<FieldProblem> for RowError {
    fn from(p: FieldProblem) -> Self {
        Self { field: p.field, code: p.code.to_owned(), message: p.message }
    }
}

/// The row's tenant as it may be shown back: only a well-formed tenant id or domain (anything
/// else in that cell may be a secret in the wrong column).
fn shown_entra(cell: &str) -> Option<String> {
    crate::onboarding::EntraTenantRef::parse("entra_tenant", cell)
        .ok()
        .map(|e| e.as_str().to_owned())
}

fn problem(field: &str, code: &'static str, message: impl Into<String>) -> FieldProblem {
    FieldProblem { field: field.to_owned(), code, message: message.into() }
}

/// Reads a CSV file (UTF-8, header row first).
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<ImportRow>, ImportFileError> {
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| ImportFileError::Malformed(format!("cannot read the CSV header: {e}")))?
        .clone();
    let columns: Vec<String> = headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    for c in &columns {
        if !CSV_COLUMNS.contains(&c.as_str()) {
            return Err(ImportFileError::Header(format!(
                "unknown column {c:?}; the columns are {}",
                CSV_COLUMNS.join(", ")
            )));
        }
    }
    for required in ["entra_tenant", "display_name", "client_id"] {
        if !columns.iter().any(|c| c == required) {
            return Err(ImportFileError::Header(format!("the column {required:?} is required")));
        }
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        if rows.len() >= MAX_IMPORT_ROWS {
            return Err(ImportFileError::TooManyRows);
        }
        let row = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                // A record the CSV reader cannot read (wrong number of fields, bad UTF-8).
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8",
                    _ => "the row cannot be read as CSV",
                };
                rows.push(ImportRow {
                    row,
                    entra_tenant: None,
                    parsed: Err(vec![problem("row", "invalid_format", message)]),
                });
                continue;
            }
        };
        if record.len() != columns.len() {
            let entra = columns
                .iter()
                .position(|c| c == "entra_tenant")
                .and_then(|i| record.get(i))
                .and_then(shown_entra);
            rows.push(ImportRow {
                row,
                entra_tenant: entra,
                parsed: Err(vec![problem(
                    "row",
                    "invalid_format",
                    format!("expected {} fields, found {}", columns.len(), record.len()),
                )]),
            });
            continue;
        }
        let field: HashMap<&str, &str> =
            columns.iter().map(String::as_str).zip(record.iter()).collect();
        let get = |name: &str| field.get(name).copied().unwrap_or("").to_owned();
        let entra_tenant = get("entra_tenant");
        rows.push(ImportRow {
            row,
            entra_tenant: shown_entra(&entra_tenant),
            parsed: csv_row(&get, entra_tenant),
        });
    }
    Ok(rows)
}

fn csv_row(
    get: &dyn Fn(&str) -> String,
    entra_tenant: String,
) -> Result<TenantInput, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let tags: Vec<String> = get("tags")
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let mut external_refs = BTreeMap::new();
    for pair in get("external_refs").split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) => {
                external_refs.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            None => problems.push(problem(
                "external_refs",
                "invalid_format",
                "expected name=value pairs separated by ';'",
            )),
        }
    }
    let kind = get("kind");
    let client_id = get("client_id");
    let credentials = match kind.as_str() {
        "" | "client_secret" => Some(CredentialInput::ClientSecret {
            client_id,
            client_secret: get("client_secret").into(),
        }),
        "certificate" => Some(CredentialInput::Certificate {
            client_id,
            certificate_pem: get("certificate_pem"),
            private_key_pem: get("private_key_pem").into(),
        }),
        _ => {
            // The cell is not repeated: it may be a secret in the wrong column.
            problems.push(problem(
                "credentials.kind",
                "invalid_value",
                "unknown kind: expected client_secret or certificate",
            ));
            None
        }
    };
    match credentials {
        Some(credentials) if problems.is_empty() => Ok(TenantInput {
            entra_tenant,
            display_name: get("display_name"),
            tags,
            external_refs,
            credentials,
        }),
        _ => Err(problems),
    }
}

/// Reads a JSON import: an array of tenants shaped like `POST /v1/tenants`, or an object with
/// such an array under `tenants`.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<ImportRow>, ImportFileError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ImportFileError::Malformed(format!("not valid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.len() == 1 && o.contains_key("tenants") => {
            match o.remove("tenants") {
                Some(Value::Array(items)) => items,
                _ => return Err(ImportFileError::Malformed("`tenants` must be an array".into())),
            }
        }
        _ => {
            return Err(ImportFileError::Malformed(
                "expected an array of tenants, or {\"tenants\": [...]}".into(),
            ));
        }
    };
    if items.len() > MAX_IMPORT_ROWS {
        return Err(ImportFileError::TooManyRows);
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let entra_tenant =
                item.get("entra_tenant").and_then(Value::as_str).and_then(shown_entra);
            let parsed = serde_path_to_error::deserialize::<_, TenantInput>(item).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "row".to_owned()
                } else {
                    sspr_domain::redact_field_path(&path)
                };
                vec![problem(
                    &field,
                    "invalid_value",
                    sspr_domain::redact_serde_message(&e.inner().to_string()),
                )]
            });
            ImportRow { row: i + 1, entra_tenant, parsed }
        })
        .collect())
}

impl Registry {
    /// Applies parsed rows one by one, calling `progress(done, total)` after each. With
    /// `dry_run`, rows are only checked.
    pub async fn import(
        &self,
        rows: Vec<ImportRow>,
        dry_run: bool,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<ImportOutcome>, RegistryError> {
        let total = rows.len();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut outcomes = Vec::with_capacity(total);
        for (done, row) in rows.into_iter().enumerate() {
            let mut outcome = ImportOutcome {
                row: row.row,
                entra_tenant: row.entra_tenant.clone(),
                outcome: String::new(),
                tenant_id: None,
                errors: Vec::new(),
            };
            match row.parsed.and_then(TenantInput::validate) {
                Err(problems) => {
                    outcome.outcome = "invalid".into();
                    outcome.errors = problems.into_iter().map(Into::into).collect();
                }
                Ok(valid) => {
                    let key = valid.entra.as_str().to_owned();
                    if let Some(first) = seen.insert(key, row.row) {
                        outcome.outcome = "invalid".into();
                        outcome.errors.push(RowError {
                            field: "entra_tenant".into(),
                            code: "duplicate_in_file".into(),
                            message: format!("row {first} already names this tenant"),
                        });
                    } else if dry_run {
                        outcome.outcome = "valid".into();
                    } else {
                        match self.upsert(valid).await {
                            Ok((tenant, done)) => {
                                outcome.tenant_id = Some(tenant.id.to_string());
                                outcome.outcome = match done {
                                    Upserted::Created => "created",
                                    Upserted::Updated => "updated",
                                    Upserted::Unchanged => "unchanged",
                                }
                                .into();
                            }
                            Err(RegistryError::AlreadyRegistered { existing }) => {
                                outcome.outcome = "conflict".into();
                                outcome.tenant_id = Some(existing);
                            }
                            Err(RegistryError::Invalid(problems)) => {
                                outcome.outcome = "invalid".into();
                                outcome.errors = problems.into_iter().map(Into::into).collect();
                            }
                            // The database is gone: stop, the caller reports what was done.
                            Err(e @ RegistryError::Store(_)) => return Err(e),
                            Err(e) => {
                                outcome.outcome = "failed".into();
                                outcome.errors.push(RowError {
                                    field: "row".into(),
                                    code: "failed".into(),
                                    message: e.to_string(),
                                });
                            }
                        }
                    }
                }
            }
            outcomes.push(outcome);
            progress(done + 1, total);
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn csv_rows_are_read_with_tags_refs_and_default_kind() {
        let csv = format!(
            "entra_tenant,display_name,tags,external_refs,client_id,client_secret\n\
             contoso.onmicrosoft.com,Contoso,wave-1; eu ,connectwise=42;halo=7,{GUID},s3cret\n\
             ,Nameless,,,{GUID},x\n"
        );
        let rows = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        let first = rows[0].parsed.as_ref().unwrap();
        assert_eq!(first.tags, vec!["wave-1", "eu"]);
        assert_eq!(first.external_refs.get("connectwise").map(String::as_str), Some("42"));
        assert!(matches!(first.credentials, CredentialInput::ClientSecret { .. }));
        // The second row parses; it fails validation later, field by field.
        let invalid = rows[1].parsed.clone().unwrap().validate().unwrap_err();
        assert_eq!(invalid[0].field, "entra_tenant");
    }

    #[test]
    fn unknown_or_missing_columns_refuse_the_file() {
        assert!(matches!(
            parse_csv(b"entra_tenant,display_name,client_id,password\n"),
            Err(ImportFileError::Header(m)) if m.contains("password")
        ));
        assert!(matches!(
            parse_csv(b"entra_tenant,client_id\n"),
            Err(ImportFileError::Header(m)) if m.contains("display_name")
        ));
    }

    #[test]
    fn a_short_row_is_reported_without_stopping_the_rest() {
        let csv = format!(
            "entra_tenant,display_name,client_id,client_secret\na.com,A\nb.com,B,{GUID},x\n"
        );
        let rows = parse_csv(csv.as_bytes()).unwrap();
        assert!(rows[0].parsed.is_err());
        assert_eq!(rows[0].entra_tenant.as_deref(), Some("a.com"));
        assert!(rows[1].parsed.is_ok());
    }

    #[test]
    fn json_rows_report_the_failing_field_and_never_the_secret() {
        let json = serde_json::json!({"tenants": [
            {"entra_tenant": "a.com", "display_name": "A", "credentials": {"kind": "client_secret", "client_id": GUID, "client_secret": "hunter2-secret"}},
            {"entra_tenant": "b.com", "display_name": "B", "credentials": {"kind": "password", "client_secret": "hunter2-secret"}},
            {"entra_tenant": "c.com", "display_name": "C", "extra": 1, "credentials": {"kind": "client_secret", "client_id": GUID, "client_secret": "hunter2-secret"}},
            {"entra_tenant": "d.com", "display_name": "D", "tags": "hunter2-secret", "credentials": {"kind": "client_secret", "client_id": GUID, "client_secret": "x"}},
        ]});
        let rows = parse_json(json.to_string().as_bytes()).unwrap();
        assert!(rows[0].parsed.is_ok());
        let b = rows[1].parsed.as_ref().unwrap_err();
        assert_eq!(b[0].field, "credentials.kind");
        let c = rows[2].parsed.as_ref().unwrap_err();
        assert!(c[0].message.contains("extra"), "{c:?}");
        for r in &rows {
            if let Err(p) = &r.parsed {
                assert!(!format!("{p:?}").contains("hunter2"));
            }
        }
        assert!(parse_json(b"{\"x\": 1}").is_err());
    }
}
