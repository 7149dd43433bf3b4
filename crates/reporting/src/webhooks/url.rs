//! Checks of a subscription's URL.
//!
//! Only `http` and `https`, a host, no user name or password (they would be stored and shown
//! in clear), at most [`MAX_URL_LEN`] characters, and, unless private targets are allowed
//! (`webhooks.allow_private_targets`), a host that is neither a non-public IP literal nor a
//! local name (see [`super::target`]). Names are not resolved here: an answer now says
//! nothing about the answer at delivery time, so the resolved addresses are checked when a
//! delivery connects.

use reqwest::Url;

use super::target;

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL was refused. Messages never repeat the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    /// Longer than [`MAX_URL_LEN`].
    #[error("the URL is longer than 2048 characters")]
    TooLong,
    /// Not an absolute URL.
    #[error("not an absolute URL")]
    Invalid,
    /// A scheme other than http or https.
    #[error("only http and https URLs are accepted")]
    Scheme,
    /// A user name or password in the URL.
    #[error("the URL must not hold a user name or password")]
    Credentials,
    /// No host.
    #[error("the URL has no host")]
    NoHost,
    /// A loopback, private, link-local or otherwise non-public address, or a local name.
    #[error(
        "the URL points at a loopback, private, link-local or otherwise non-public address; \
         only public targets are accepted (see webhooks.allow_private_targets)"
    )]
    NonPublicTarget,
}

impl UrlProblem {
    /// The stable code of the problem.
    pub fn code(self) -> &'static str {
        match self {
            UrlProblem::TooLong => "too_long",
            UrlProblem::Invalid => "invalid_url",
            UrlProblem::Scheme => "unsupported_scheme",
            UrlProblem::Credentials => "credentials_in_url",
            UrlProblem::NoHost => "invalid_url",
            UrlProblem::NonPublicTarget => "non_public_target",
        }
    }
}

/// Checks `text` and returns the URL as it will be stored (normalised by the URL parser:
/// an IPv4 host in dotted decimal whatever its spelling). With `allow_private_targets`
/// false, a host that is not public is refused.
pub fn check_url(text: &str, allow_private_targets: bool) -> Result<String, UrlProblem> {
    let text = text.trim();
    if text.len() > MAX_URL_LEN {
        return Err(UrlProblem::TooLong);
    }
    let url = Url::parse(text).map_err(|_| UrlProblem::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlProblem::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlProblem::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    if !allow_private_targets && target::check_host(&url).is_err() {
        return Err(UrlProblem::NonPublicTarget);
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_and_https_urls_pass() {
        let check_url = |text: &str| super::check_url(text, false);
        assert_eq!(
            check_url("https://psa.example/hooks?x=1").as_deref(),
            Ok("https://psa.example/hooks?x=1")
        );
        assert_eq!(check_url("ftp://psa.example/x"), Err(UrlProblem::Scheme));
        assert_eq!(check_url("file:///etc/passwd"), Err(UrlProblem::Scheme));
        assert_eq!(check_url("https://user:pw@psa.example/"), Err(UrlProblem::Credentials));
        assert_eq!(check_url("https://user@psa.example/"), Err(UrlProblem::Credentials));
        assert_eq!(check_url("not a url"), Err(UrlProblem::Invalid));
        assert_eq!(check_url("/relative"), Err(UrlProblem::Invalid));
        let long = format!("https://psa.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long), Err(UrlProblem::TooLong));
    }

    #[test]
    fn non_public_targets_are_refused_unless_allowed() {
        for text in [
            "http://127.0.0.1:8080/h",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://localhost/",
            "http://api.localhost:9000/",
            "http://[fd00::1]/",
            "http://192.168.0.10/psa",
        ] {
            assert_eq!(check_url(text, false), Err(UrlProblem::NonPublicTarget), "{text}");
            assert!(check_url(text, true).is_ok(), "{text} with private targets allowed");
        }
        assert_eq!(UrlProblem::NonPublicTarget.code(), "non_public_target");
        assert!(!UrlProblem::NonPublicTarget.to_string().contains("169"));
        // Stored as the parser normalised it: the address that was checked.
        assert_eq!(check_url("http://2852039166/", true).as_deref(), Ok("http://169.254.169.254/"));
        assert_eq!(check_url("https://134744072/h", false).as_deref(), Ok("https://8.8.8.8/h"));
        assert!(check_url("https://[2606:4700::1]/", false).is_ok());
    }
}
