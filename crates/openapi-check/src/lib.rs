//! Test-only checker for the Graph simulator: validates JSON responses against the OpenAPI 3.0
//! document `data/graph-v1.0-sspr-subset.openapi.yaml` of this crate (a Microsoft Graph v1.0
//! subset generated from Graph's CSDL; its header says where it came from and how to refresh it).
//!
//! ```no_run
//! use serde_json::json;
//! use sspr_openapi_check::Spec;
//!
//! let spec = Spec::graph_subset();
//! let body = json!({"id": "0d1b3c84-5b71-4a9b-b1c3-3e0c1f2e4d55", "displayName": "SSPR pilot"});
//! if let Err(errors) = spec.validate_response("POST", "/groups", 201, &body) {
//!     panic!("simulator response does not match Graph:\n{}", errors.join("\n"));
//! }
//! ```
//!
//! # What is checked
//!
//! The validator implements the part of the OpenAPI 3.0 Schema Object that the document uses:
//!
//! - `type` (`string`, `integer`, `number`, `boolean`, `object`, `array`) with `nullable`.
//!   `integer` means a JSON number written without fraction or exponent (`1.0` is rejected).
//! - `enum`; `minimum`/`maximum`; `maxItems`/`minItems`/`uniqueItems`.
//! - `format`: `date-time` (RFC 3339, also within the document's `pattern`: four-digit year, a real
//!   calendar day, upper-case `T`/`Z`, 1-12 fraction digits), `uuid` (hex 8-4-4-4-12, either case),
//!   `time` (`hh:mm:ss[.fffffff]`), `int32` and `int64` (range). Other formats are not checked.
//! - `pattern` is **not** evaluated: in this document it appears only next to `format: date-time`
//!   and `format: uuid`, and the format checks above implement the same grammar.
//! - `$ref` to any `#/...` place of the document (siblings of `$ref` ignored, as OpenAPI 3.0 says).
//! - `allOf` (every branch must pass), `anyOf` (at least one), `oneOf` (exactly one).
//! - `properties`, `required`, `additionalProperties`.
//!
//! Graph-specific reading, because the document is generated from CSDL by Microsoft's converter:
//!
//! - **Annotations**: keys containing `@odata.` (`@odata.context`, `@odata.nextLink`,
//!   `members@odata.bind`, ...) are always allowed. If the schema declares one (every type declares
//!   `@odata.type: string`, collections declare `@odata.count` and `@odata.nextLink`) it is checked.
//! - **Unknown plain properties** are allowed unless `additionalProperties` is `false`. With an
//!   `additionalProperties` schema they are validated against it, except `{type: object}`, which the
//!   converter writes for CSDL open types (`group`, `user`, `organization`, ...) and which is taken
//!   to mean "any dynamic property". The set of declared properties is merged across `allOf` (base
//!   and derived types), so `id` from `entity` is not "additional" inside `group`.
//! - **Nullable references**: `anyOf: [{$ref: X}, {type: object, nullable: true}]` is read as
//!   "`X` or `null`". Read literally its second branch would accept any object instead of `X`.
//! - **Polymorphism**: when a value reached through a `$ref` to component `B` carries
//!   `"@odata.type": "#microsoft.graph.D"` and component `microsoft.graph.D` exists (or `B`'s
//!   `discriminator.mapping` names it), the value is validated against `D`, which must reach `B`
//!   through `allOf` `$ref`s; otherwise that is reported. An `@odata.type` naming a type the
//!   document lacks is accepted and the value checked against `B`. An `@odata.type` without the
//!   leading `#` is reported. A value for a component marked `x-ms-abstract: true` (e.g.
//!   `authenticationMethodConfiguration`) must carry `@odata.type`, as Graph always writes it.
//! - Recursion is bounded: a `$ref` met again for the same value (a cycle that does not descend
//!   into the value) is not followed again, and values nested deeper than 128 levels are reported.
//!
//! # Errors
//!
//! Every failure is one human-readable line with the JSON pointer of the failing place in the
//! body and the document location of the failing keyword, e.g.
//! `at "/mailEnabled": expected boolean, found string "no" [schema #/components/schemas/microsoft.graph.group/allOf/1/properties/mailEnabled]`.

mod formats;
mod paths;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::paths::PathTemplate;
use crate::validate::{Failure, Validator};

/// The Graph subset document, compiled in so that no test depends on a file's location.
const GRAPH_SUBSET: &str = include_str!("../data/graph-v1.0-sspr-subset.openapi.yaml");

/// Where [`GRAPH_SUBSET`] lives, relative to this crate (for [`Spec::load`] and error messages).
pub const GRAPH_SUBSET_PATH: &str = "data/graph-v1.0-sspr-subset.openapi.yaml";

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Why a document could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The text is not YAML (or not YAML that maps to JSON, e.g. a non-string key).
    #[error("{origin} is not valid YAML for an OpenAPI document: {source}")]
    Yaml {
        /// The file, or `<string>`.
        origin: String,
        /// The YAML parser's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The YAML is not an OpenAPI 3.0 document this crate can use.
    #[error("{origin} is not a usable OpenAPI 3.0 document: {reason}")]
    Invalid {
        /// The file, or `<string>`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// A loaded OpenAPI 3.0 document. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Spec {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    doc: Value,
    paths: Vec<PathTemplate>,
}

impl Spec {
    /// Loads an OpenAPI 3.0 YAML (or JSON) document from a file.
    ///
    /// Fails when the file cannot be read or parsed, when `openapi` is not `3.0.x`, when `paths`
    /// or `components.schemas` is missing, or when any `$ref` does not resolve inside the document.
    pub fn load(path: impl AsRef<Path>) -> Result<Spec, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Spec::parse(&text, &path.display().to_string())
    }

    /// Parses a document from YAML (or JSON) text; the same checks as [`Spec::load`].
    pub fn from_yaml_str(text: &str) -> Result<Spec, Error> {
        Spec::parse(text, "<string>")
    }

    /// The Graph v1.0 SSPR subset in this crate's `data/` (compiled in). Parsed once per process,
    /// then shared.
    ///
    /// # Panics
    ///
    /// When the document is unusable: this is a test utility, and a test cannot go on.
    pub fn graph_subset() -> Spec {
        static CACHE: OnceLock<Spec> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                Spec::parse(GRAPH_SUBSET, GRAPH_SUBSET_PATH)
                    .unwrap_or_else(|e| panic!("Graph subset document: {e}"))
            })
            .clone()
    }

    fn parse(text: &str, origin: &str) -> Result<Spec, Error> {
        let doc: Value = yaml_serde::from_str(text)
            .map_err(|e| Error::Yaml { origin: origin.to_owned(), source: Box::new(e) })?;
        let invalid = |reason: String| Error::Invalid { origin: origin.to_owned(), reason };
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or_default();
        if !version.starts_with("3.0") {
            return Err(invalid(format!("\"openapi\" is {version:?}, expected 3.0.x")));
        }
        let Some(path_map) = doc.get("paths").and_then(Value::as_object) else {
            return Err(invalid("no \"paths\" mapping".into()));
        };
        if !doc.pointer("/components/schemas").is_some_and(Value::is_object) {
            return Err(invalid("no \"components.schemas\" mapping".into()));
        }
        let mut broken = Vec::new();
        collect_broken_refs(&doc, &doc, "#", &mut broken);
        if !broken.is_empty() {
            let shown: Vec<&str> = broken.iter().take(10).map(String::as_str).collect();
            return Err(invalid(format!(
                "{} $ref(s) do not resolve: {}",
                broken.len(),
                shown.join("; ")
            )));
        }
        let paths = path_map.keys().map(|k| PathTemplate::parse(k)).collect();
        Ok(Spec { inner: Arc::new(Inner { doc, paths }) })
    }

    /// The whole document as JSON.
    pub fn document(&self) -> &Value {
        &self.inner.doc
    }

    /// The templated paths of the document, in no particular order.
    pub fn path_templates(&self) -> impl Iterator<Item = &str> {
        self.inner.paths.iter().map(|p| p.raw.as_str())
    }

    /// The names under `components.schemas`, e.g. `microsoft.graph.group`.
    pub fn schema_names(&self) -> impl Iterator<Item = &str> {
        self.inner
            .doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// The templated path that a concrete path resolves to, e.g. `/groups/abc/members/$ref` to
    /// `/groups/{group-id}/members/$ref`.
    ///
    /// `path` is the request path without the `/v1.0` prefix and without a query string (both are
    /// tolerated and stripped, as is a trailing `/`). Literal segments compare ASCII
    /// case-insensitively, as Graph does. A template segment `name()` (a function) also matches a
    /// concrete `name(args...)`; when the document also has a template spelling the arguments out,
    /// such as `name(a='{a}')`, the more specific one wins. Among several matches, the one with
    /// literal text earliest wins.
    pub fn match_path(&self, path: &str) -> Option<&str> {
        paths::find(&self.inner.paths, path).map(|m| m.template.raw.as_str())
    }

    /// Validates a response body of the operation `method` `path` with HTTP `status`.
    ///
    /// - `path` as for [`Spec::match_path`]; `method` is case-insensitive.
    /// - Path parameters captured from `path` are checked against their declared schemas (e.g.
    ///   `includedUserTypes='bogus'` fails the `includedUserTypes` enum).
    /// - The response is the one listed for `status` exactly, else for its range (`2XX`), else
    ///   `default`. A status below 400 that only `default` would cover is reported as undocumented:
    ///   in this document `default` is always the `odata.error` response.
    /// - Pass `Value::Null` for an empty body. An empty body is fine for a response that documents
    ///   no content (every 204 here); a body there is an error, and so is an empty body where the
    ///   response documents an `application/json` schema.
    ///
    /// Returns every failure found, one line each (see the crate docs for the format).
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), Vec<String>> {
        let doc = &self.inner.doc;
        let validator = Validator::new(doc);
        let Some(found) = paths::find(&self.inner.paths, path) else {
            return Err(vec![format!(
                "no path of the document matches {path:?} (looked up as {:?})",
                paths::normalize(path)
            )]);
        };
        let template = found.template.raw.as_str();
        let item_loc = format!("#/paths/{}", escape(template));
        let Some(item) = doc.get("paths").and_then(|p| p.get(template)) else {
            return Err(vec![format!("path item {template:?} vanished from the document")]);
        };
        let method_key = method.to_ascii_lowercase();
        let Some(op) = item.get(&method_key).filter(|_| METHODS.contains(&method_key.as_str()))
        else {
            let documented: Vec<String> = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_ascii_uppercase())
                .collect();
            return Err(vec![format!(
                "{} is not documented for {template:?} (documented: {})",
                method.to_ascii_uppercase(),
                documented.join(", ")
            )]);
        };
        let op_name = format!("{} {template}", method.to_ascii_uppercase());
        let op_loc = format!("{item_loc}/{method_key}");
        let mut errors = Vec::new();

        for (name, raw) in &found.params {
            if let Some((schema, loc)) = self.path_param(item, &item_loc, op, &op_loc, name) {
                let failures = validator.validate_at(schema, &loc, &Value::String(raw.clone()));
                errors.extend(failures.iter().map(|f| {
                    format!(
                        "path parameter {name:?} of {op_name}: {} [schema {}]",
                        f.message, f.schema
                    )
                }));
            }
        }

        let responses = op.get("responses").and_then(Value::as_object);
        let status_text = status.to_string();
        let range = format!("{}XX", status / 100);
        let picked = responses.and_then(|r| {
            r.get_key_value(&status_text)
                .or_else(|| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(&range)))
                .or_else(|| r.get_key_value("default"))
        });
        let documented = || {
            responses.map(|r| r.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()
        };
        let Some((key, response)) = picked else {
            errors.push(format!(
                "status {status} is not documented for {op_name} (documented: {})",
                documented()
            ));
            return Err(errors);
        };
        if key == "default" && status < 400 {
            errors.push(format!(
                "status {status} is not documented for {op_name} (documented: {}); only \
                 `default` would cover it, and `default` is the error response",
                documented()
            ));
            return Err(errors);
        }
        let mut response_loc = format!("{op_loc}/responses/{}", escape(key));
        let mut response = response;
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            match validator.resolve(reference) {
                Some(target) => {
                    response = target;
                    response_loc = reference.to_owned();
                }
                None => {
                    errors.push(format!("unresolvable $ref {reference:?} at {response_loc}"));
                    return Err(errors);
                }
            }
        }
        let json = response.get("content").and_then(Value::as_object).and_then(|c| {
            c.iter().find(|(media, _)| {
                media
                    .split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            })
        });
        let schema = json.and_then(|(media, c)| {
            c.get("schema").map(|s| (s, format!("{response_loc}/content/{}/schema", escape(media))))
        });
        match (schema, body.is_null()) {
            (None, true) => {}
            (None, false) => errors.push(format!(
                "{op_name} status {status} documents no application/json body, but the body is {}",
                short(body)
            )),
            (Some(_), true) => errors.push(format!(
                "{op_name} status {status} documents an application/json body, but the body \
                 is empty (null)"
            )),
            (Some((schema, loc)), false) => {
                errors
                    .extend(validator.validate_at(schema, &loc, body).iter().map(Failure::render));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Validates `value` against the component schema `schema_name` (e.g. `microsoft.graph.group`),
    /// for bodies that no path describes. The value is treated as reached through a `$ref` to that
    /// component, so `@odata.type` polymorphism and the abstract-type rule apply.
    pub fn validate_schema(&self, schema_name: &str, value: &Value) -> Result<(), Vec<String>> {
        let validator = Validator::new(&self.inner.doc);
        if validator.component(schema_name).is_none() {
            return Err(vec![format!("no schema {schema_name:?} under components.schemas")]);
        }
        let failures = validator.validate_named(schema_name, value);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.iter().map(Failure::render).collect())
        }
    }

    /// Whether component `derived` is `base` or reaches it through `allOf` `$ref`s.
    pub fn is_derived_from(&self, derived: &str, base: &str) -> bool {
        Validator::new(&self.inner.doc).derives_from(derived, base)
    }

    /// The schema of path parameter `name`: operation-level declaration first, then path-level.
    fn path_param<'a>(
        &'a self,
        item: &'a Value,
        item_loc: &str,
        op: &'a Value,
        op_loc: &str,
        name: &str,
    ) -> Option<(&'a Value, String)> {
        let validator = Validator::new(&self.inner.doc);
        [(op, op_loc), (item, item_loc)].into_iter().find_map(|(holder, holder_loc)| {
            let params = holder.get("parameters")?.as_array()?;
            params.iter().enumerate().find_map(|(i, p)| {
                let (p, p_loc) = match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => (validator.resolve(r)?, r.to_owned()),
                    None => (p, format!("{holder_loc}/parameters/{i}")),
                };
                let is_it = p.get("in").and_then(Value::as_str) == Some("path")
                    && p.get("name").and_then(Value::as_str) == Some(name);
                if !is_it {
                    return None;
                }
                p.get("schema").map(|s| (s, format!("{p_loc}/schema")))
            })
        })
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 { text.chars().take(57).collect::<String>() + "..." } else { text }
}

/// Walks the document and records every `$ref` that does not resolve.
fn collect_broken_refs(doc: &Value, node: &Value, loc: &str, broken: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let ok = reference.strip_prefix('#').is_some_and(|p| doc.pointer(p).is_some());
                if !ok {
                    broken.push(format!("{reference:?} at {loc}"));
                }
            }
            for (k, v) in map {
                // `example`/`examples` hold data, not schema.
                if k != "example" && k != "examples" {
                    collect_broken_refs(doc, v, &format!("{loc}/{}", escape(k)), broken);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_broken_refs(doc, v, &format!("{loc}/{i}"), broken);
            }
        }
        _ => {}
    }
}
