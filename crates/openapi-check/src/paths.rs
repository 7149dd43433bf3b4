//! Matching a concrete request path against the templated paths of the document.

/// One segment of a templated path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Plain text such as `groups` or `$ref`; compared ASCII case-insensitively, as Graph does.
    Literal(String),
    /// A whole-segment parameter such as `{group-id}`.
    Param(String),
    /// A function without parameters in the template, `name()`. It also matches a concrete
    /// `name(args...)`.
    Function(String),
    /// Text mixed with parameters, such as
    /// `usersRegisteredByFeature(includedUserTypes='{includedUserTypes}',includedUserRoles='{includedUserRoles}')`.
    Mixed(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

impl Segment {
    fn parse(raw: &str) -> Segment {
        if !raw.contains('{') {
            if let Some(name) = raw.strip_suffix("()")
                && !name.contains('(')
            {
                return Segment::Function(name.to_owned());
            }
            return Segment::Literal(raw.to_owned());
        }
        let mut pieces = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| c + open) else { break };
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            pieces.push(Piece::Param(rest[open + 1..close].to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        match pieces.as_slice() {
            [Piece::Param(name)] => Segment::Param(name.clone()),
            _ => Segment::Mixed(pieces),
        }
    }

    /// How specific a match on this segment is; higher wins.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 3,
            Segment::Mixed(_) => 2,
            Segment::Function(_) => 1,
            Segment::Param(_) => 0,
        }
    }

    /// Matches one concrete segment, pushing captured parameter values.
    fn matches(&self, concrete: &str, captures: &mut Vec<(String, String)>) -> bool {
        match self {
            Segment::Literal(text) => text.eq_ignore_ascii_case(concrete),
            Segment::Param(name) => {
                if concrete.is_empty() {
                    return false;
                }
                captures.push((name.clone(), concrete.to_owned()));
                true
            }
            Segment::Function(name) => {
                let Some(args) = strip_prefix_ignore_case(concrete, name) else { return false };
                args.starts_with('(') && args.ends_with(')')
            }
            Segment::Mixed(pieces) => {
                let start = captures.len();
                if match_pieces(pieces, concrete, captures) {
                    true
                } else {
                    captures.truncate(start);
                    false
                }
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Backtracking match of text and parameter pieces; a parameter captures a non-empty run.
fn match_pieces(pieces: &[Piece], s: &str, captures: &mut Vec<(String, String)>) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Text(text), rest)) => match strip_prefix_ignore_case(s, text) {
            Some(tail) => match_pieces(rest, tail, captures),
            None => false,
        },
        Some((Piece::Param(name), rest)) => {
            for (end, _) in s.char_indices().skip(1).chain(std::iter::once((s.len(), ' '))) {
                if end == 0 {
                    continue;
                }
                captures.push((name.clone(), s[..end].to_owned()));
                if match_pieces(rest, &s[end..], captures) {
                    return true;
                }
                captures.pop();
            }
            false
        }
    }
}

/// Captured path-parameter values, `(name, value)`, in path order.
type Captures = Vec<(String, String)>;

/// A templated path of the document, such as `/groups/{group-id}/members/$ref`.
#[derive(Debug, Clone)]
pub(crate) struct PathTemplate {
    pub(crate) raw: String,
    segments: Vec<Segment>,
}

/// A successful match: the template and the captured path-parameter values.
#[derive(Debug)]
pub(crate) struct PathMatch<'a> {
    pub(crate) template: &'a PathTemplate,
    pub(crate) params: Captures,
}

impl PathTemplate {
    pub(crate) fn parse(raw: &str) -> PathTemplate {
        PathTemplate { raw: raw.to_owned(), segments: split(raw).map(Segment::parse).collect() }
    }

    fn matches(&self, concrete: &[&str]) -> Option<(Vec<u8>, Captures)> {
        if concrete.len() != self.segments.len() {
            return None;
        }
        let mut captures = Vec::new();
        let mut rank = Vec::with_capacity(concrete.len());
        for (seg, c) in self.segments.iter().zip(concrete) {
            if !seg.matches(c, &mut captures) {
                return None;
            }
            rank.push(seg.rank());
        }
        Some((rank, captures))
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('/').split('/')
}

/// Strips what the brief allows a caller to leave on a path: a query string, a fragment, a
/// trailing `/` and a leading `/v1.0`.
pub(crate) fn normalize(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = match path.strip_prefix("/v1.0") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };
    if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path }
}

/// Finds the most specific template that matches `concrete`: segment by segment from the left,
/// literal text beats text-with-parameters, which beats a loose `name()` function match, which
/// beats a whole-segment parameter.
pub(crate) fn find<'a>(templates: &'a [PathTemplate], concrete: &str) -> Option<PathMatch<'a>> {
    let segments: Vec<&str> = split(normalize(concrete)).collect();
    let mut best: Option<(Vec<u8>, PathMatch<'a>)> = None;
    for template in templates {
        if let Some((rank, params)) = template.matches(&segments)
            && best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank)
        {
            best = Some((rank, PathMatch { template, params }));
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Vec<PathTemplate> {
        [
            "/groups",
            "/groups/{group-id}",
            "/groups/{group-id}/members",
            "/groups/{group-id}/members/$ref",
            "/groups/{group-id}/members/{directoryObject-id}/$ref",
            "/reports/authenticationMethods/usersRegisteredByFeature()",
            "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='{includedUserTypes}',includedUserRoles='{includedUserRoles}')",
            "/{tenant}/oauth2/v2.0/token",
        ]
        .iter()
        .map(|t| PathTemplate::parse(t))
        .collect()
    }

    fn found(path: &str) -> Option<(String, Vec<(String, String)>)> {
        let t = templates();
        find(&t, path).map(|m| (m.template.raw.clone(), m.params))
    }

    #[test]
    fn literal_and_params() {
        let (raw, params) = found("/groups/abc-123/members/$ref").unwrap();
        assert_eq!(raw, "/groups/{group-id}/members/$ref");
        assert_eq!(params, vec![("group-id".to_owned(), "abc-123".to_owned())]);
        assert_eq!(found("/groups").unwrap().0, "/groups");
        assert_eq!(found("/v1.0/groups/x?$select=id").unwrap().0, "/groups/{group-id}");
        assert_eq!(found("/groups/x/").unwrap().0, "/groups/{group-id}");
        assert_eq!(found("/Groups/x/Members").unwrap().0, "/groups/{group-id}/members");
        assert_eq!(
            found("/groups/g/members/m/$ref").unwrap().0,
            "/groups/{group-id}/members/{directoryObject-id}/$ref"
        );
        assert!(found("/groups//members").is_none());
        assert!(found("/devices").is_none());
        assert_eq!(
            found("/contoso.onmicrosoft.com/oauth2/v2.0/token").unwrap().0,
            "/{tenant}/oauth2/v2.0/token"
        );
    }

    #[test]
    fn functions() {
        let (raw, params) = found(
            "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='all',includedUserRoles='admin')",
        )
        .unwrap();
        assert!(raw.contains("includedUserTypes='{includedUserTypes}'"), "{raw}");
        assert_eq!(
            params,
            vec![
                ("includedUserTypes".to_owned(), "all".to_owned()),
                ("includedUserRoles".to_owned(), "admin".to_owned())
            ]
        );
        assert_eq!(
            found("/reports/authenticationMethods/usersRegisteredByFeature()").unwrap().0,
            "/reports/authenticationMethods/usersRegisteredByFeature()"
        );
        // Arguments in another order only match the loose `name()` form.
        assert_eq!(
            found(
                "/reports/authenticationMethods/usersRegisteredByFeature(includedUserRoles='all')"
            )
            .unwrap()
            .0,
            "/reports/authenticationMethods/usersRegisteredByFeature()"
        );
        assert!(found("/reports/authenticationMethods/usersRegisteredByFeatureX()").is_none());
        assert!(found("/reports/authenticationMethods/usersRegisteredByFeature").is_none());
    }
}
