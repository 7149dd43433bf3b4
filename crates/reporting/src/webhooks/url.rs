//! Checks of a subscription's URL.
//!
//! Only `http` and `https`, a host, no user name or password (they would be stored and shown
//! in clear), at most [`MAX_URL_LEN`] characters. The URL is not resolved here: where it may
//! point (an internal address) is the operator's call, see `docs/webhooks.md` on SSRF.

use reqwest::Url;

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
        }
    }
}

/// Checks `text` and returns the URL as it will be stored.
pub fn check_url(text: &str) -> Result<String, UrlProblem> {
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
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_and_https_urls_pass() {
        assert_eq!(
            check_url("https://psa.example/hooks?x=1").as_deref(),
            Ok("https://psa.example/hooks?x=1")
        );
        assert!(check_url("http://127.0.0.1:8080/h").is_ok());
        assert_eq!(check_url("ftp://psa.example/x"), Err(UrlProblem::Scheme));
        assert_eq!(check_url("file:///etc/passwd"), Err(UrlProblem::Scheme));
        assert_eq!(check_url("https://user:pw@psa.example/"), Err(UrlProblem::Credentials));
        assert_eq!(check_url("https://user@psa.example/"), Err(UrlProblem::Credentials));
        assert_eq!(check_url("not a url"), Err(UrlProblem::Invalid));
        assert_eq!(check_url("/relative"), Err(UrlProblem::Invalid));
        let long = format!("https://psa.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long), Err(UrlProblem::TooLong));
    }
}
