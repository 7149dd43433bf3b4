//! Error messages about client input that never repeat a value the client sent in the wrong
//! place: such a value may be a secret (a client secret pasted into the wrong field, a private
//! key in a tag). Names that look like identifiers are kept, because they help and cannot hold
//! much of a secret.

/// Whether `s` looks like a field or variant name of this API (`snake_case`, at most 40
/// characters), and so is safe to repeat.
pub fn is_identifier(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A serde error message with every value it quotes removed: `string "…"` loses its string,
/// and a backquoted name (`` unknown field `…` ``, `` unknown variant `…` ``) is kept only if it
/// looks like an identifier. The position suffix (` at line …`) is dropped.
pub fn redact_serde_message(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let quote = rest.find("string \"");
        let tick = rest.find('`');
        match (quote, tick) {
            (Some(q), t) if t.is_none_or(|t| q < t) => {
                out.push_str(&rest[..q]);
                out.push_str("string");
                let after = &rest[q + "string \"".len()..];
                // The string ends at the last `"` before the next `, expected` (strings may hold
                // quotes), or at the last `"` of the message.
                let end = after
                    .find("\", expected")
                    .or_else(|| after.rfind('"'))
                    .map_or(after.len(), |e| e + 1);
                rest = &after[end..];
            }
            (_, Some(t)) => {
                out.push_str(&rest[..t]);
                let after = &rest[t + 1..];
                match after.find('`') {
                    Some(end) => {
                        let name = &after[..end];
                        if is_identifier(name) {
                            out.push('`');
                            out.push_str(name);
                            out.push('`');
                        } else {
                            out.push_str("(value not shown)");
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        out.push_str("(value not shown)");
                        rest = "";
                    }
                }
            }
            _ => {
                out.push_str(rest);
                break;
            }
        }
    }
    out
}

/// A field path (`credentials.client_id`, `tags[2]`, `external_refs.connectwise`) with every
/// segment that does not look like an identifier (a map key the client chose) replaced by `*`.
pub fn redact_field_path(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let name = segment.split('[').next().unwrap_or("");
            let indexes = &segment[name.len()..];
            let indexes_ok = indexes.split('[').skip(1).all(|i| {
                i.strip_suffix(']').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            });
            if (name.is_empty() || is_identifier(name)) && indexes_ok {
                segment.to_owned()
            } else {
                "*".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_and_odd_names_are_removed_identifiers_kept() {
        assert_eq!(
            redact_serde_message(
                "invalid type: string \"s3cr\"et~x\", expected a sequence at line 1 column 9"
            ),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            redact_serde_message(
                "unknown variant `Qx8~secret.VALUE`, expected `client_secret` or `certificate`"
            ),
            "unknown variant (value not shown), expected `client_secret` or `certificate`"
        );
        assert_eq!(
            redact_serde_message("unknown field `extra`, expected one of `a`, `b`"),
            "unknown field `extra`, expected one of `a`, `b`"
        );
        assert_eq!(redact_serde_message("missing field `name`"), "missing field `name`");
        assert_eq!(
            redact_serde_message("invalid value: integer `5`, expected u32"),
            "invalid value: integer (value not shown), expected u32"
        );
        assert_eq!(redact_serde_message("unterminated `abc"), "unterminated (value not shown)");
    }

    #[test]
    fn paths_keep_field_names_and_indexes_only() {
        assert_eq!(redact_field_path("credentials.client_id"), "credentials.client_id");
        assert_eq!(redact_field_path("tags[2]"), "tags[2]");
        assert_eq!(redact_field_path("external_refs.connectwise"), "external_refs.connectwise");
        assert_eq!(redact_field_path("external_refs.Qx8~s3cret"), "external_refs.*");
        assert_eq!(redact_field_path("a[x]"), "*");
    }
}
