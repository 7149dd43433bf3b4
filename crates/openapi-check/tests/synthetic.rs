//! Features the Graph document does not exercise (or not strictly), on small inline documents.

use serde_json::json;
use sspr_openapi_check::Spec;

const DOC: &str = r##"
openapi: 3.0.4
info: {title: t, version: '1'}
paths:
  /things:
    get:
      responses:
        2XX:
          description: any success
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/closed'
components:
  schemas:
    closed:
      type: object
      properties:
        name: {type: string}
        tags:
          type: array
          maxItems: 2
          uniqueItems: true
          items: {type: string}
      additionalProperties: false
    inheritsClosed:
      allOf:
      - $ref: '#/components/schemas/base'
      - type: object
        properties:
          own: {type: string}
        additionalProperties: false
    base:
      type: object
      properties:
        id: {type: string}
    typedExtras:
      type: object
      properties:
        id: {type: string}
      additionalProperties: {type: string}
    selfLoop:
      allOf:
      - $ref: '#/components/schemas/selfLoop'
      - type: object
        properties:
          n: {type: integer, minimum: 0, maximum: 10}
    tree:
      type: object
      properties:
        label: {type: string}
        children:
          type: array
          items:
            $ref: '#/components/schemas/tree'
    pingPongA:
      $ref: '#/components/schemas/pingPongB'
    pingPongB:
      $ref: '#/components/schemas/pingPongA'
    exactlyOne:
      oneOf:
      - {type: string}
      - {type: integer}
      - {type: number}
    either:
      anyOf:
      - {type: string, format: uuid}
      - {type: boolean}
"##;

fn spec() -> Spec {
    Spec::from_yaml_str(DOC).expect("inline document loads")
}

#[test]
fn additional_properties_false_rejects_unknown_but_not_annotations() {
    let spec = spec();
    assert!(
        spec.validate_schema(
            "closed",
            &json!({"name": "a", "@odata.type": "#x", "tags@odata.count": 1})
        )
        .is_ok()
    );
    let errors = spec.validate_schema("closed", &json!({"name": "a", "extra": 1})).unwrap_err();
    assert!(
        errors[0].starts_with("at \"/extra\"")
            && errors[0].contains("additionalProperties is false"),
        "{errors:?}"
    );
    // Properties merged across allOf: `id` from the base is not "additional" in the derived branch.
    assert!(spec.validate_schema("inheritsClosed", &json!({"id": "1", "own": "x"})).is_ok());
    let errors =
        spec.validate_schema("inheritsClosed", &json!({"id": "1", "stray": "x"})).unwrap_err();
    assert!(errors[0].starts_with("at \"/stray\""), "{errors:?}");
    // A schema for additional properties is applied to them.
    assert!(spec.validate_schema("typedExtras", &json!({"id": "1", "k": "v"})).is_ok());
    let errors = spec.validate_schema("typedExtras", &json!({"id": "1", "k": 2})).unwrap_err();
    assert!(
        errors[0].starts_with("at \"/k\"") && errors[0].contains("expected string"),
        "{errors:?}"
    );
}

#[test]
fn array_keywords() {
    let spec = spec();
    let errors = spec.validate_schema("closed", &json!({"tags": ["a", "b", "a"]})).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("at most 2")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("uniqueItems")), "{errors:?}");
}

#[test]
fn cycles_terminate() {
    let spec = spec();
    assert!(spec.validate_schema("selfLoop", &json!({"n": 3})).is_ok());
    let errors = spec.validate_schema("selfLoop", &json!({"n": 11})).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("at \"/n\"") && e.contains("maximum")),
        "{errors:?}"
    );
    assert!(spec.validate_schema("pingPongA", &json!({"anything": true})).is_ok());

    // A recursive structure follows the value, however deep it is, up to the nesting limit.
    let deep = json!({"label": "r", "children": [{"label": "a", "children": [{"label": 7}]}]});
    let errors = spec.validate_schema("tree", &deep).unwrap_err();
    assert!(errors[0].starts_with("at \"/children/0/children/0/label\""), "{errors:?}");
    let mut value = json!({"label": "leaf"});
    for _ in 0..200 {
        value = json!({"children": [value]});
    }
    let errors = spec.validate_schema("tree", &value).unwrap_err();
    assert!(errors[0].contains("nested deeper than"), "{errors:?}");
}

#[test]
fn one_of_and_any_of() {
    let spec = spec();
    assert!(spec.validate_schema("exactlyOne", &json!("s")).is_ok());
    // 1 is both an integer and a number.
    let errors = spec.validate_schema("exactlyOne", &json!(1)).unwrap_err();
    assert!(errors[0].contains("matches 2 oneOf alternatives"), "{errors:?}");
    assert!(spec.validate_schema("exactlyOne", &json!(1.5)).is_ok());
    let errors = spec.validate_schema("exactlyOne", &json!(null)).unwrap_err();
    assert!(errors[0].contains("none of the 3 oneOf"), "{errors:?}");

    assert!(spec.validate_schema("either", &json!(true)).is_ok());
    assert!(spec.validate_schema("either", &json!("c7a0b4a6-3f8e-4b0b-9d6e-0123456789ab")).is_ok());
    let errors = spec.validate_schema("either", &json!("nope")).unwrap_err();
    assert!(errors[0].contains("none of the 2 anyOf"), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("not a uuid")), "{errors:?}");
}

#[test]
fn status_ranges() {
    let spec = spec();
    assert!(spec.validate_response("GET", "/things", 207, &json!({"name": "x"})).is_ok());
    let errors = spec.validate_response("GET", "/things", 200, &json!({"name": 1})).unwrap_err();
    assert!(errors[0].starts_with("at \"/name\""), "{errors:?}");
    let errors = spec.validate_response("GET", "/things", 404, &json!({})).unwrap_err();
    assert!(errors[0].contains("status 404 is not documented"), "{errors:?}");
}
