//! The schema validator: the subset of OpenAPI 3.0 Schema Objects that the Graph subset document
//! uses, with the two Microsoft generator idioms read the way they are meant (see the crate docs).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::formats;

/// Prefix of every named component schema reference.
pub(crate) const SCHEMAS: &str = "#/components/schemas/";

/// JSON nesting deeper than this is reported instead of followed.
const MAX_DEPTH: usize = 128;

/// One validation failure.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// JSON pointer (RFC 6901) into the validated value; `""` is the whole value.
    pub(crate) pointer: String,
    pub(crate) message: String,
    /// Where in the document the failing keyword sits, as a `#/...` pointer.
    pub(crate) schema: String,
}

impl Failure {
    pub(crate) fn render(&self) -> String {
        let at = if self.pointer.is_empty() {
            "\"\" (root)".to_owned()
        } else {
            format!("{:?}", self.pointer)
        };
        format!("at {at}: {} [schema {}]", self.message, self.schema)
    }
}

/// What is known about the instance being validated, as opposed to its children.
#[derive(Debug, Clone, Default)]
struct Instance {
    /// `$ref`s followed for this instance (cycle guard: a `$ref` met again for the same instance
    /// adds nothing and is not followed again).
    refs: Vec<String>,
    /// Whether `@odata.type` polymorphism has been resolved for this instance.
    dispatched: bool,
    /// Property names declared anywhere in the `allOf`/`$ref` tree reached for this instance
    /// (base and derived types merged); used by `additionalProperties`.
    known: BTreeSet<String>,
}

pub(crate) struct Validator<'a> {
    doc: &'a Value,
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Short, single-line rendering of a value for messages.
fn show(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut text = value.to_string();
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    format!("{kind} {text}")
}

/// Keys Graph adds as annotations: `@odata.context`, `@odata.type`, `members@odata.bind`, ...
pub(crate) fn is_annotation(key: &str) -> bool {
    key.contains("@odata.")
}

/// The `{type: object, nullable: true}` branch that the generator adds to `anyOf` to make a
/// referenced type nullable.
fn is_nullable_marker(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else { return false };
    map.get("type").and_then(Value::as_str) == Some("object")
        && map.get("nullable").and_then(Value::as_bool) == Some(true)
        && map.keys().all(|k| k == "type" || k == "nullable" || k == "description" || k == "title")
}

/// The `additionalProperties: {type: object}` that the generator writes for CSDL open types:
/// dynamic properties of any JSON type are allowed there.
fn is_open_type_marker(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else { return false };
    map.len() == 1 && map.get("type").and_then(Value::as_str) == Some("object")
}

enum Num {
    Int(i128),
    Float(f64),
}

fn num(value: &Value) -> Option<Num> {
    if let Some(i) = value.as_i64() {
        Some(Num::Int(i128::from(i)))
    } else if let Some(u) = value.as_u64() {
        Some(Num::Int(i128::from(u)))
    } else {
        value.as_f64().map(Num::Float)
    }
}

/// `a < b`, exact for integers.
fn less(a: &Num, b: &Num) -> bool {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => a < b,
        (Num::Int(a), Num::Float(b)) => (*a as f64) < *b,
        (Num::Float(a), Num::Int(b)) => *a < (*b as f64),
        (Num::Float(a), Num::Float(b)) => a < b,
    }
}

impl<'a> Validator<'a> {
    pub(crate) fn new(doc: &'a Value) -> Validator<'a> {
        Validator { doc }
    }

    /// Resolves a local `#/...` reference.
    pub(crate) fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        // serde_json's pointer() already unescapes ~0/~1.
        self.doc.pointer(pointer)
    }

    pub(crate) fn component(&self, name: &str) -> Option<&'a Value> {
        self.doc.get("components")?.get("schemas")?.get(name)
    }

    /// Validates `value` against the component schema `name`, as if reached through a `$ref`.
    pub(crate) fn validate_named(&self, name: &str, value: &Value) -> Vec<Failure> {
        let reference = format!("{SCHEMAS}{}", escape(name));
        self.follow_ref(&reference, "#", value, "", Instance::default(), 0)
    }

    /// Validates `value` against an inline schema found at `schema_loc` in the document.
    pub(crate) fn validate_at(
        &self,
        schema: &Value,
        schema_loc: &str,
        value: &Value,
    ) -> Vec<Failure> {
        self.node(schema, schema_loc, value, "", Instance::default(), 0)
    }

    /// Entry for a child instance (property value, array item): fresh per-instance state.
    fn child(
        &self,
        schema: &Value,
        loc: &str,
        value: &Value,
        ptr: &str,
        depth: usize,
    ) -> Vec<Failure> {
        if depth > MAX_DEPTH {
            return vec![Failure {
                pointer: ptr.to_owned(),
                message: format!(
                    "value nested deeper than {MAX_DEPTH} levels; not checked further"
                ),
                schema: loc.to_owned(),
            }];
        }
        self.node(schema, loc, value, ptr, Instance::default(), depth)
    }

    fn follow_ref(
        &self,
        reference: &str,
        loc: &str,
        value: &Value,
        ptr: &str,
        mut inst: Instance,
        depth: usize,
    ) -> Vec<Failure> {
        let fail =
            |message: String| Failure { pointer: ptr.to_owned(), message, schema: loc.to_owned() };
        let Some(target) = self.resolve(reference) else {
            return vec![fail(format!("unresolvable $ref {reference:?}"))];
        };
        if inst.refs.iter().any(|r| r == reference) {
            // Cycle through $ref without descending into the value: nothing new to check.
            return Vec::new();
        }
        let mut out = Vec::new();
        if let (Some(base), false) = (reference.strip_prefix(SCHEMAS), inst.dispatched) {
            inst.dispatched = true;
            let base = unescape(base);
            if let Some(odata_type) = value.get("@odata.type").and_then(Value::as_str) {
                if let Some((derived_ref, derived)) =
                    self.dispatch(&base, odata_type, reference, ptr, &mut out)
                {
                    // The derived schema reaches `reference` again through its allOf; that visit
                    // validates the base part, with dispatch already done.
                    if inst.refs.iter().all(|r| *r != derived_ref) {
                        inst.refs.push(derived_ref.clone());
                        out.extend(self.node(derived, &derived_ref, value, ptr, inst, depth));
                    }
                    return out;
                }
            } else if value.is_object() && self.is_abstract(&base) {
                out.push(Failure {
                    pointer: ptr.to_owned(),
                    message: format!(
                        "{base} is abstract (x-ms-abstract): Graph always writes \"@odata.type\" \
                         naming the concrete type, and it is missing"
                    ),
                    schema: reference.to_owned(),
                });
            }
        }
        inst.refs.push(reference.to_owned());
        out.extend(self.node(target, reference, value, ptr, inst, depth));
        out
    }

    /// Picks the derived schema named by `@odata.type`, if the document has it. Pushes a failure
    /// when the type is known but is not `base` or derived from it, or is written without `#`.
    fn dispatch(
        &self,
        base: &str,
        odata_type: &str,
        base_ref: &str,
        ptr: &str,
        out: &mut Vec<Failure>,
    ) -> Option<(String, &'a Value)> {
        let type_ptr = format!("{ptr}/@odata.type");
        let Some(name) = odata_type.strip_prefix('#') else {
            out.push(Failure {
                pointer: type_ptr,
                message: format!(
                    "\"@odata.type\" is {odata_type:?}; Graph writes \"#\" before the \
                     qualified type name (e.g. \"#{odata_type}\")"
                ),
                schema: base_ref.to_owned(),
            });
            return None;
        };
        if name == base {
            return None;
        }
        let derived_ref = self.find_type(base, name)?;
        let derived_name = unescape(derived_ref.strip_prefix(SCHEMAS).unwrap_or(&derived_ref));
        let derived_schema = self.resolve(&derived_ref)?;
        if self.derives_from(&derived_name, base) {
            Some((derived_ref, derived_schema))
        } else {
            out.push(Failure {
                pointer: type_ptr,
                message: format!(
                    "\"@odata.type\" {odata_type:?} names {derived_name}, which is neither \
                     {base} nor derived from it (allOf)"
                ),
                schema: base_ref.to_owned(),
            });
            None
        }
    }

    /// `#/components/schemas/<name>`, else a `discriminator.mapping` entry of `base` (own or in its
    /// allOf) for `#<name>`.
    fn find_type(&self, base: &str, name: &str) -> Option<String> {
        if self.component(name).is_some() {
            return Some(format!("{SCHEMAS}{}", escape(name)));
        }
        let schema = self.component(base)?;
        let mut candidates = vec![schema];
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            candidates.extend(all);
        }
        candidates.into_iter().find_map(|s| {
            s.get("discriminator")?
                .get("mapping")?
                .get(format!("#{name}"))?
                .as_str()
                .filter(|r| self.resolve(r).is_some())
                .map(str::to_owned)
        })
    }

    /// Whether component `derived` reaches component `base` through `allOf` `$ref`s.
    pub(crate) fn derives_from(&self, derived: &str, base: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![derived.to_owned()];
        while let Some(name) = stack.pop() {
            if name == base {
                return true;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(all) =
                self.component(&name).and_then(|s| s.get("allOf")).and_then(Value::as_array)
            else {
                continue;
            };
            for branch in all {
                if let Some(parent) =
                    branch.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(SCHEMAS))
                {
                    stack.push(unescape(parent));
                }
            }
        }
        false
    }

    /// `x-ms-abstract: true` on the component itself or on one of its own (non-`$ref`) allOf
    /// branches; not inherited from a base.
    fn is_abstract(&self, name: &str) -> bool {
        let Some(schema) = self.component(name) else { return false };
        let own = |s: &Value| s.get("x-ms-abstract").and_then(Value::as_bool) == Some(true);
        own(schema)
            || schema
                .get("allOf")
                .and_then(Value::as_array)
                .is_some_and(|all| all.iter().filter(|b| b.get("$ref").is_none()).any(own))
    }

    /// Property names declared by `schema`, its `allOf` branches and the `$ref`s among them.
    fn merged_properties(
        &self,
        schema: &Value,
        into: &mut BTreeSet<String>,
        seen: &mut Vec<String>,
    ) {
        let Some(map) = schema.as_object() else { return };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            if seen.iter().any(|s| s == reference) {
                return;
            }
            seen.push(reference.to_owned());
            if let Some(target) = self.resolve(reference) {
                self.merged_properties(target, into, seen);
            }
            return;
        }
        if let Some(props) = map.get("properties").and_then(Value::as_object) {
            into.extend(props.keys().cloned());
        }
        if let Some(all) = map.get("allOf").and_then(Value::as_array) {
            for branch in all {
                self.merged_properties(branch, into, seen);
            }
        }
    }

    /// Validates one schema node against one instance.
    fn node(
        &self,
        schema: &Value,
        loc: &str,
        value: &Value,
        ptr: &str,
        mut inst: Instance,
        depth: usize,
    ) -> Vec<Failure> {
        let fail =
            |message: String| Failure { pointer: ptr.to_owned(), message, schema: loc.to_owned() };
        let map = match schema {
            Value::Object(map) => map,
            Value::Bool(true) => return Vec::new(),
            Value::Bool(false) => {
                return vec![fail("no value is allowed here (schema false)".into())];
            }
            other => return vec![fail(format!("invalid schema in the document: {}", show(other)))],
        };
        // OpenAPI 3.0: siblings of $ref are ignored.
        if let Some(reference) = map.get("$ref") {
            let Some(reference) = reference.as_str() else {
                return vec![fail("invalid $ref in the document (not a string)".into())];
            };
            return self.follow_ref(reference, loc, value, ptr, inst, depth);
        }
        let nullable = map.get("nullable").and_then(Value::as_bool) == Some(true);
        if value.is_null() && nullable {
            return Vec::new();
        }
        let mut out = Vec::new();

        if let Some(ty) = map.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                other => {
                    return vec![fail(format!("unsupported type {other:?} in the document"))];
                }
            };
            if !ok {
                let nullable_note = if value.is_null() { " (schema is not nullable)" } else { "" };
                return vec![fail(format!("expected {ty}, found {}{nullable_note}", show(value)))];
            }
        }

        if let Some(allowed) = map.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            out.push(fail(format!("{} is not one of [{}]", show(value), list.join(", "))));
        }

        if let Some(format) = map.get("format").and_then(Value::as_str)
            && let Some(message) = check_format(format, value)
        {
            out.push(fail(message));
        }

        if let Some(n) = num(value) {
            if let Some(min) = map.get("minimum").and_then(num)
                && less(&n, &min)
            {
                out.push(fail(format!("{} is below the minimum {}", show(value), map["minimum"])));
            }
            if let Some(max) = map.get("maximum").and_then(num)
                && less(&max, &n)
            {
                out.push(fail(format!("{} is above the maximum {}", show(value), map["maximum"])));
            }
        }

        if let Value::Array(items) = value {
            self.array(map, loc, items, ptr, depth, &mut out);
        }

        let all_of = map.get("allOf").and_then(Value::as_array);
        if all_of.is_some() {
            self.merged_properties(schema, &mut inst.known, &mut Vec::new());
        }

        if let Value::Object(obj) = value {
            self.object(map, loc, obj, ptr, &inst, depth, &mut out);
        }

        if let Some(all) = all_of {
            for (i, branch) in all.iter().enumerate() {
                out.extend(self.node(
                    branch,
                    &format!("{loc}/allOf/{i}"),
                    value,
                    ptr,
                    inst.clone(),
                    depth,
                ));
            }
        }

        if let Some(any) = map.get("anyOf").and_then(Value::as_array) {
            out.extend(self.any_of(any, loc, value, ptr, &inst, depth));
        }

        if let Some(one) = map.get("oneOf").and_then(Value::as_array) {
            let results: Vec<Vec<Failure>> = one
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    self.node(b, &format!("{loc}/oneOf/{i}"), value, ptr, inst.clone(), depth)
                })
                .collect();
            let passed = results.iter().filter(|r| r.is_empty()).count();
            match passed {
                1 => {}
                0 => out.extend(alternatives("oneOf", ptr, loc, results)),
                n => out
                    .push(fail(format!("matches {n} oneOf alternatives; exactly one must match"))),
            }
        }
        out
    }

    fn any_of(
        &self,
        any: &[Value],
        loc: &str,
        value: &Value,
        ptr: &str,
        inst: &Instance,
        depth: usize,
    ) -> Vec<Failure> {
        // Generator idiom: anyOf [ {$ref: X}, {type: object, nullable: true} ] means "X or null".
        // Read literally, the second branch would accept any object in place of X.
        let (markers, real): (Vec<_>, Vec<_>) =
            any.iter().enumerate().partition(|(_, b)| is_nullable_marker(b));
        let branches = if !markers.is_empty() && !real.is_empty() {
            if value.is_null() {
                return Vec::new();
            }
            real
        } else {
            any.iter().enumerate().collect()
        };
        let mut results = Vec::with_capacity(branches.len());
        for (i, branch) in branches {
            let r = self.node(branch, &format!("{loc}/anyOf/{i}"), value, ptr, inst.clone(), depth);
            if r.is_empty() {
                return Vec::new();
            }
            results.push(r);
        }
        if results.len() == 1 {
            return results.pop().unwrap_or_default();
        }
        alternatives("anyOf", ptr, loc, results)
    }

    fn array(
        &self,
        map: &Map<String, Value>,
        loc: &str,
        items: &[Value],
        ptr: &str,
        depth: usize,
        out: &mut Vec<Failure>,
    ) {
        let fail =
            |message: String| Failure { pointer: ptr.to_owned(), message, schema: loc.to_owned() };
        if let Some(max) = map.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push(fail(format!("{} items, at most {max} allowed", items.len())));
        }
        if let Some(min) = map.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.push(fail(format!("{} items, at least {min} required", items.len())));
        }
        if map.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(fail(format!("item {i} repeats an earlier item (uniqueItems)")));
                }
            }
        }
        if let Some(item_schema) = map.get("items") {
            let item_loc = format!("{loc}/items");
            for (i, item) in items.iter().enumerate() {
                out.extend(self.child(
                    item_schema,
                    &item_loc,
                    item,
                    &format!("{ptr}/{i}"),
                    depth + 1,
                ));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn object(
        &self,
        map: &Map<String, Value>,
        loc: &str,
        obj: &Map<String, Value>,
        ptr: &str,
        inst: &Instance,
        depth: usize,
        out: &mut Vec<Failure>,
    ) {
        let props = map.get("properties").and_then(Value::as_object);
        if let Some(required) = map.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    out.push(Failure {
                        pointer: format!("{ptr}/{}", escape(name)),
                        message: format!("required property {name:?} is missing"),
                        schema: format!("{loc}/required"),
                    });
                }
            }
        }
        if let Some(props) = props {
            for (name, sub) in props {
                if let Some(v) = obj.get(name) {
                    let sub_loc = format!("{loc}/properties/{}", escape(name));
                    out.extend(self.child(
                        sub,
                        &sub_loc,
                        v,
                        &format!("{ptr}/{}", escape(name)),
                        depth + 1,
                    ));
                }
            }
        }
        let Some(additional) = map.get("additionalProperties") else { return };
        if additional == &Value::Bool(true) || is_open_type_marker(additional) {
            return;
        }
        let add_loc = format!("{loc}/additionalProperties");
        for (name, v) in obj {
            if is_annotation(name)
                || props.is_some_and(|p| p.contains_key(name))
                || inst.known.contains(name)
            {
                continue;
            }
            let child_ptr = format!("{ptr}/{}", escape(name));
            if additional == &Value::Bool(false) {
                out.push(Failure {
                    pointer: child_ptr,
                    message: format!(
                        "property {name:?} is not declared and additionalProperties is false"
                    ),
                    schema: add_loc.clone(),
                });
            } else {
                out.extend(self.child(additional, &add_loc, v, &child_ptr, depth + 1));
            }
        }
    }
}

/// Failures for "no alternative matched": a summary, then each alternative's failures.
fn alternatives(kind: &str, ptr: &str, loc: &str, results: Vec<Vec<Failure>>) -> Vec<Failure> {
    let mut out = vec![Failure {
        pointer: ptr.to_owned(),
        message: format!(
            "matches none of the {} {kind} alternatives; their failures follow",
            results.len()
        ),
        schema: loc.to_owned(),
    }];
    for (i, failures) in results.into_iter().enumerate() {
        out.extend(failures.into_iter().map(|mut f| {
            f.message = format!("  [{kind} alternative {i}] {}", f.message);
            f
        }));
    }
    out
}

fn check_format(format: &str, value: &Value) -> Option<String> {
    match (format, value) {
        ("date-time", Value::String(s)) if !formats::is_date_time(s) => {
            Some(format!("{s:?} is not an RFC 3339 date-time of the form 2026-11-24T10:00:00Z"))
        }
        ("uuid", Value::String(s)) if !formats::is_uuid(s) => Some(format!("{s:?} is not a uuid")),
        ("time", Value::String(s)) if !formats::is_time(s) => {
            Some(format!("{s:?} is not a time of day of the form 08:00:00.0000000"))
        }
        ("int32", Value::Number(n)) if n.as_i64().is_none_or(|i| i32::try_from(i).is_err()) => {
            Some(format!("{n} is not a 32-bit integer (int32)"))
        }
        ("int64", Value::Number(n)) if n.as_i64().is_none() => {
            Some(format!("{n} is not a 64-bit integer (int64)"))
        }
        _ => None,
    }
}
