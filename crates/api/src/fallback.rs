//! What answers when no route matched: 405 with `Allow` when the path exists under another
//! method, 404 otherwise. The route table comes from the generated OpenAPI document, so it can
//! never disagree with the documented API.

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use crate::error::{problem_for_status, problem_response};

#[derive(Debug, Clone)]
struct Route {
    segments: Vec<Segment>,
    methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param,
}

/// Every documented path and its methods.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Self {
        let value = serde_json::to_value(&doc.paths).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = value.as_object() {
            for (path, item) in paths {
                let methods = item
                    .as_object()
                    .map(|ops| {
                        ops.keys()
                            .filter(|m| {
                                matches!(
                                    m.as_str(),
                                    "get" | "put" | "post" | "delete" | "patch" | "head"
                                )
                            })
                            .map(|m| m.to_ascii_uppercase())
                            .collect()
                    })
                    .unwrap_or_default();
                routes.push(Route { segments: segments(path), methods });
            }
        }
        Self { routes }
    }

    /// Adds a served route that is not in the OpenAPI document (the document itself, the
    /// status pages). `{name}` segments match any non-empty segment.
    pub(crate) fn with_route(mut self, path: &str, methods: &[&str]) -> Self {
        self.routes.push(Route {
            segments: segments(path),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        });
        self
    }

    /// The methods documented for `path`, or `None` when no documented path matches.
    pub(crate) fn methods_for(&self, path: &str) -> Option<Vec<String>> {
        let parts: Vec<&str> = split(path).collect();
        let mut methods: Vec<String> = self
            .routes
            .iter()
            .filter(|r| {
                r.segments.len() == parts.len()
                    && r.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                        Segment::Literal(lit) => lit == part,
                        Segment::Param => !part.is_empty(),
                    })
            })
            .flat_map(|r| r.methods.iter().cloned())
            .collect();
        if methods.is_empty() {
            return None;
        }
        if methods.iter().any(|m| m == "GET") {
            methods.push("HEAD".to_owned());
        }
        methods.sort();
        methods.dedup();
        Some(methods)
    }
}

/// The segments of a path. A trailing slash is an empty last segment, because the router
/// treats `/v1/me/` and `/v1/me` as different paths.
fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

/// The segments of a route template: `{name}` is a parameter, anything else a literal.
fn segments(template: &str) -> Vec<Segment> {
    split(template)
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                Segment::Param
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

/// The default service of the app.
pub(crate) async fn not_matched(req: HttpRequest, table: web::Data<RouteTable>) -> HttpResponse {
    match table.methods_for(req.path()) {
        Some(methods) => {
            let detail =
                format!("{} is not allowed here; allowed: {}", req.method(), methods.join(", "));
            let mut response = problem_response(&problem_for_status(
                actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                Some(detail),
            ));
            if let Ok(value) = header::HeaderValue::from_str(&methods.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        None => problem_response(&problem_for_status(
            actix_web::http::StatusCode::NOT_FOUND,
            Some(format!("no resource at {}", req.path())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[(&str, &[&str])]) -> RouteTable {
        RouteTable {
            routes: paths
                .iter()
                .map(|(p, ms)| Route {
                    segments: split(p)
                        .map(|s| {
                            if s.starts_with('{') {
                                Segment::Param
                            } else {
                                Segment::Literal(s.into())
                            }
                        })
                        .collect(),
                    methods: ms.iter().map(|m| m.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn methods_are_found_for_literal_and_templated_paths() {
        let t =
            table(&[("/v1/api-keys", &["GET", "POST"]), ("/v1/api-keys/{id}", &["GET", "DELETE"])]);
        assert_eq!(
            t.methods_for("/v1/api-keys"),
            Some(vec!["GET".into(), "HEAD".into(), "POST".into()])
        );
        assert_eq!(
            t.methods_for("/v1/api-keys/key_1"),
            Some(vec!["DELETE".into(), "GET".into(), "HEAD".into()])
        );
        assert_eq!(t.methods_for("/v1/api-keys/"), None);
        assert_eq!(t.methods_for("/v1/api-keys/key_1/extra"), None);
        assert_eq!(t.methods_for("/v1/nothing"), None);
    }

    #[test]
    fn added_routes_may_have_parameters() {
        let t = RouteTable::default()
            .with_route("/status", &["GET"])
            .with_route("/status/rollouts/{id}", &["GET"]);
        let get = Some(vec!["GET".to_owned(), "HEAD".to_owned()]);
        assert_eq!(t.methods_for("/status"), get);
        assert_eq!(t.methods_for("/status/rollouts/rol_1"), get);
        assert_eq!(t.methods_for("/status/rollouts/"), None);
        assert_eq!(t.methods_for("/status/rollouts/{id}/x"), None);
    }
}
