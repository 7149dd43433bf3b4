//! OData query options: `$filter` (eq/ne/ge/le/gt/lt joined by `and`, `startswith`), `$top`,
//! `$select`, `$skiptoken`, and the opaque paging links.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;

use crate::response::SimResponse;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Bool(bool),
    Num(f64),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Clause {
    Cmp { property: String, op: String, value: Literal },
    StartsWith { property: String, prefix: String },
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub(crate) filter: Option<Vec<Clause>>,
    pub(crate) raw_filter: Option<String>,
    pub(crate) top: Option<usize>,
    pub(crate) select: Option<Vec<String>>,
    pub(crate) skiptoken: Option<String>,
    /// Every parameter except `$skiptoken`, to rebuild the next link.
    pub(crate) others: Vec<(String, String)>,
}

fn unsupported(message: impl Into<String>) -> SimResponse {
    SimResponse::error(400, "Request_UnsupportedQuery", message)
}

impl Query {
    pub(crate) fn parse(query: &str) -> Result<Self, SimResponse> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| SimResponse::error(400, "BadRequest", "The query string is malformed."))?;
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.as_str() {
                "$filter" => {
                    q.filter = Some(parse_filter(&v)?);
                    q.raw_filter = Some(v.clone());
                    q.others.push((k, v));
                }
                "$top" => {
                    let n: usize = v.parse().map_err(|_| {
                        SimResponse::error(
                            400,
                            "BadRequest",
                            format!("Invalid value '{v}' for query option $top."),
                        )
                    })?;
                    if n == 0 || n > 999 {
                        return Err(SimResponse::error(
                            400,
                            "BadRequest",
                            "Invalid page size specified: must be 1 to 999.",
                        ));
                    }
                    q.top = Some(n);
                    q.others.push((k, v));
                }
                "$select" => {
                    q.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    );
                    q.others.push((k, v));
                }
                "$skiptoken" => q.skiptoken = Some(v),
                _ => q.others.push((k, v)),
            }
        }
        Ok(q)
    }

    /// The position to start from, from `$skiptoken`.
    pub(crate) fn start(&self) -> Result<usize, SimResponse> {
        match &self.skiptoken {
            None => Ok(0),
            Some(t) => URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse().ok()))
                .ok_or_else(|| {
                    SimResponse::error(400, "BadRequest", "The $skiptoken is not valid.")
                }),
        }
    }

    pub(crate) fn page_size(&self, default: usize) -> usize {
        self.top.unwrap_or(default)
    }

    /// The `@odata.nextLink` continuing at `next`.
    pub(crate) fn next_link(&self, base_url: &str, path: &str, next: usize) -> String {
        let mut params = self.others.clone();
        params.push(("$skiptoken".into(), URL_SAFE_NO_PAD.encode(format!("sim:{next}"))));
        let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
        format!("{base_url}/v1.0{path}?{qs}")
    }

    /// Whether `item` passes the filter; properties are matched case-insensitively.
    pub(crate) fn matches(&self, item: &Value) -> bool {
        let Some(clauses) = &self.filter else { return true };
        clauses.iter().all(|c| match c {
            Clause::Cmp { property, op, value } => {
                let actual = lookup(item, property);
                compare(actual, op, value)
            }
            Clause::StartsWith { property, prefix } => lookup(item, property)
                .and_then(Value::as_str)
                .is_some_and(|s| s.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase())),
        })
    }

    /// Refuses filters on properties other than `allowed`.
    pub(crate) fn only_filter_on(&self, allowed: &[&str]) -> Result<(), SimResponse> {
        for c in self.filter.iter().flatten() {
            let p = match c {
                Clause::Cmp { property, .. } | Clause::StartsWith { property, .. } => property,
            };
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(p)) {
                return Err(unsupported(format!(
                    "Unsupported or invalid query filter clause specified for property '{p}'."
                )));
            }
        }
        Ok(())
    }

    /// Keeps only the `$select`ed properties (and `id`).
    pub(crate) fn project(&self, item: Value) -> Value {
        match (&self.select, item) {
            (Some(fields), Value::Object(map)) => Value::Object(
                map.into_iter()
                    .filter(|(k, _)| {
                        k == "id"
                            || k.starts_with('@')
                            || fields.iter().any(|f| f.eq_ignore_ascii_case(k))
                    })
                    .collect(),
            ),
            (_, item) => item,
        }
    }
}

fn lookup<'a>(item: &'a Value, property: &str) -> Option<&'a Value> {
    let mut current = item;
    for part in property.split('/') {
        current = current
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(part))
            .map(|(_, v)| v)?;
    }
    Some(current)
}

fn compare(actual: Option<&Value>, op: &str, expected: &Literal) -> bool {
    use std::cmp::Ordering;
    let ordering = match (actual, expected) {
        (None | Some(Value::Null), Literal::Null) => Some(Ordering::Equal),
        (Some(Value::String(a)), Literal::Str(b)) => {
            Some(a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase()))
        }
        (Some(Value::Bool(a)), Literal::Bool(b)) => Some(a.cmp(b)),
        (Some(Value::Number(a)), Literal::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        _ => None,
    };
    match (op, ordering) {
        ("eq", Some(o)) => o == Ordering::Equal,
        ("ne", Some(o)) => o != Ordering::Equal,
        ("ne", None) => true,
        ("ge", Some(o)) => o != Ordering::Less,
        ("le", Some(o)) => o != Ordering::Greater,
        ("gt", Some(o)) => o == Ordering::Greater,
        ("lt", Some(o)) => o == Ordering::Less,
        _ => false,
    }
}

fn parse_literal(text: &str) -> Result<Literal, SimResponse> {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return Ok(Literal::Str(inner.replace("''", "'")));
    }
    match t {
        "true" => Ok(Literal::Bool(true)),
        "false" => Ok(Literal::Bool(false)),
        "null" => Ok(Literal::Null),
        _ => {
            if let Ok(n) = t.parse::<f64>() {
                Ok(Literal::Num(n))
            } else if chrono::DateTime::parse_from_rfc3339(t).is_ok() {
                // Date-time literals are unquoted in OData; compare them as normalised text.
                let dt =
                    chrono::DateTime::parse_from_rfc3339(t).map_err(|_| unsupported("bad date"))?;
                Ok(Literal::Str(
                    dt.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ))
            } else {
                Err(unsupported(format!("Invalid filter literal '{t}'.")))
            }
        }
    }
}

/// Splits on ` and ` outside quotes.
fn split_and(filter: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && chars[i..].iter().take(5).collect::<String>().eq_ignore_ascii_case(" and ") {
            parts.push(std::mem::take(&mut current));
            i += 5;
            continue;
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

pub(crate) fn parse_filter(filter: &str) -> Result<Vec<Clause>, SimResponse> {
    let mut clauses = Vec::new();
    for part in split_and(filter) {
        let part = part.trim();
        if let Some(args) = part.strip_prefix("startswith(").and_then(|s| s.strip_suffix(')')) {
            let (property, prefix) =
                args.split_once(',').ok_or_else(|| unsupported("Invalid startswith clause."))?;
            let Literal::Str(prefix) = parse_literal(prefix)? else {
                return Err(unsupported("startswith needs a string"));
            };
            clauses.push(Clause::StartsWith { property: property.trim().to_owned(), prefix });
            continue;
        }
        let mut words = part.splitn(3, ' ');
        let (Some(property), Some(op), Some(value)) = (words.next(), words.next(), words.next())
        else {
            return Err(unsupported(format!("Invalid filter clause '{part}'.")));
        };
        let op = op.to_ascii_lowercase();
        if !matches!(op.as_str(), "eq" | "ne" | "ge" | "le" | "gt" | "lt") {
            return Err(unsupported(format!("Unsupported operator '{op}'.")));
        }
        clauses.push(Clause::Cmp {
            property: property.to_owned(),
            op,
            value: parse_literal(value)?,
        });
    }
    Ok(clauses)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let q = Query::parse("%24filter=displayName%20eq%20%27SSPR%20pilot%27").unwrap();
        assert!(q.matches(&json!({"displayName": "sspr pilot"})));
        assert!(!q.matches(&json!({"displayName": "other"})));
        let q = Query::parse("$filter=isSsprEnabled eq true and userType eq 'member'").unwrap();
        assert!(q.matches(&json!({"isSsprEnabled": true, "userType": "member"})));
        assert!(!q.matches(&json!({"isSsprEnabled": false, "userType": "member"})));
        let q = Query::parse("$filter=activityDateTime ge 2026-01-01T00:00:00Z").unwrap();
        assert!(q.matches(&json!({"activityDateTime": "2026-02-01T00:00:00Z"})));
        assert!(!q.matches(&json!({"activityDateTime": "2025-12-31T23:59:59Z"})));
        let q = Query::parse("$filter=displayName eq 'O''Brien and co'").unwrap();
        assert!(q.matches(&json!({"displayName": "O'Brien and co"})));
    }

    #[test]
    fn bad_queries_are_400() {
        assert_eq!(Query::parse("$top=0").unwrap_err().status, 400);
        assert_eq!(Query::parse("$filter=displayName like 'x'").unwrap_err().status, 400);
        let q = Query::parse("$skiptoken=garbage").unwrap();
        assert_eq!(q.start().unwrap_err().status, 400);
    }

    #[test]
    fn next_links_round_trip() {
        let q = Query::parse("$top=5&$filter=isAdmin%20eq%20false").unwrap();
        let link = q.next_link("http://h", "/users", 10);
        let query = link.split_once('?').unwrap().1;
        let next = Query::parse(query).unwrap();
        assert_eq!(next.start().unwrap(), 10);
        assert_eq!(next.top, Some(5));
        assert!(next.filter.is_some());
    }
}
