//! The HTTP client every provider and tool shares: one connection pool for all runs, and
//! redirects followed only where the headers may go.

use std::time::Duration;

/// Redirects are followed only within the origin (scheme, host and port) they start from,
/// five at most: a server that sends a request elsewhere gets neither its key nor its headers
/// (reqwest's own policy would drop only `Authorization`). The 3xx that is not followed is
/// the answer, and its caller says so.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let origin = |url: &reqwest::Url| {
            (url.scheme().to_owned(), url.host_str().map(str::to_owned), url.port_or_known_default())
        };
        let same = attempt.previous().last().is_some_and(|from| origin(from) == origin(attempt.url()));
        if !same {
            attempt.stop()
        } else if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Where `response` redirected to when it is a redirect the shared client did not follow
/// (one to another origin, see [`same_origin_redirects`]); `None` for any other response.
pub(crate) fn unfollowed_redirect(response: &reqwest::Response) -> Option<String> {
    response.status().is_redirection().then(|| {
        response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("no Location")
            .to_owned()
    })
}

/// The HTTP client every provider and tool shares: one connection pool for all runs.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // Several callers may race here; only the first installation matters.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .user_agent(concat!("runner/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    Ok(client)
}

/// An error with its causes, `{:#}`-style: an HTTP client's top-level message alone rarely
/// says what went wrong.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
