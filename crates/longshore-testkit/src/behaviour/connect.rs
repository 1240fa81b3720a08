//! Connecting: a closed port, a malformed URL and a wrong password are typed errors, in
//! bounded time, that never print the password.
//!
//! The scenarios derive their URLs from the fixture's, so they work for every backend: the
//! host is swapped for a port nothing listens on, or the password for a wrong one. A URL
//! without a host (`memory://`) has nothing to swap, and those scenarios skip.

use std::time::Duration;

use longshore_core::Error;

use crate::fixture::skipped;
use crate::Fixture;

/// How long a failing connect may take.
const BOUND: Duration = Duration::from_secs(30);

/// A URL cut into `scheme://`, user info (with its `@`), host list, and the rest (path, query).
struct Parts<'a> {
    scheme: &'a str,
    userinfo: &'a str,
    hosts: &'a str,
    tail: &'a str,
}

impl<'a> Parts<'a> {
    /// Splits as [`longshore_core::url::redact_url`] does, without parsing hosts, so
    /// comma-separated host lists survive.
    fn of(url: &'a str) -> Option<Parts<'a>> {
        let scheme_end = url.find("://")? + 3;
        let (scheme, rest) = url.split_at(scheme_end);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        Some(Parts {
            scheme,
            userinfo,
            hosts,
            tail,
        })
    }

    /// The password of the user info, when there is a non-empty one.
    fn password(&self) -> Option<&'a str> {
        let userinfo = self.userinfo.strip_suffix('@')?;
        let (_, password) = userinfo.split_once(':')?;
        (!password.is_empty()).then_some(password)
    }

    /// The URL with `password` in place of the current one.
    fn with_password(&self, password: &str) -> Option<String> {
        let userinfo = self.userinfo.strip_suffix('@')?;
        let (user, _) = userinfo.split_once(':')?;
        Some(format!(
            "{}{user}:{password}@{}{}",
            self.scheme, self.hosts, self.tail
        ))
    }

    /// The URL pointing at `127.0.0.1:<port>` instead of its hosts, with `password` in place
    /// of the current one where there is one.
    fn at_port(&self, port: u16, password: &str) -> String {
        let userinfo = match (self.password(), self.userinfo.split_once(':')) {
            (Some(_), Some((user, _))) => format!("{user}:{password}@"),
            _ => self.userinfo.to_string(),
        };
        format!("{}{userinfo}127.0.0.1:{port}{}", self.scheme, self.tail)
    }
}

/// The fixture URL's parts, or `None` (after printing why `scenario` skips) when the URL
/// names no host.
fn hosted<'a>(f: &'a Fixture, scenario: &str) -> Option<Parts<'a>> {
    match Parts::of(f.url()) {
        Some(parts) if !parts.hosts.is_empty() => Some(parts),
        _ => {
            let reason = format!("{} URLs name no host or port to change", f.backend());
            skipped(scenario, &reason);
            None
        }
    }
}

/// Connects to `url` through the fixture's driver, failing the test if that takes longer
/// than [`BOUND`] or succeeds.
async fn connect_fails(f: &Fixture, url: &str, why: &str) -> Error {
    match tokio::time::timeout(BOUND, f.connect_other(url)).await {
        Err(_) => panic!("{why}: connect did not return within {BOUND:?}"),
        Ok(Ok(broker)) => panic!("{why}: connect succeeded ({})", broker.backend()),
        Ok(Err(e)) => e,
    }
}

/// Asserts that neither `Display` nor `Debug` of `e` contains `secret`.
fn assert_hidden(e: &Error, secret: Option<&str>) {
    if let Some(secret) = secret {
        let printed = format!("{e} {e:?}");
        assert!(
            !printed.contains(secret),
            "the error prints the password: {}",
            printed.replace(secret, "<the password>")
        );
    }
}

/// A port on 127.0.0.1 nothing listens on: bound, then freed.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Connecting to a port nothing listens on fails within 30 s with `Connection` or `Timeout`
/// (both retryable), and the error does not print the URL's password (where it has one).
pub async fn connect_to_closed_port_is_a_typed_error(f: &Fixture) {
    let Some(parts) = hosted(f, "connect_to_closed_port_is_a_typed_error") else {
        return;
    };
    // A password of its own, so the check cannot trip over a user named like the password
    // (`guest:guest`).
    let secret = format!("s3cret-closed-port-{}", crate::Names::new().prefix());
    let url = parts.at_port(closed_port(), &secret);
    let e = connect_fails(f, &url, "nothing listens on the port").await;
    assert!(
        matches!(e, Error::Connection { .. } | Error::Timeout { .. }),
        "a closed port is a Connection or Timeout error: {e:?}"
    );
    assert!(e.is_retryable(), "a closed port may open later: {e:?}");
    assert_hidden(&e, parts.password().map(|_| secret.as_str()));
}

/// A URL that cannot be parsed is a `Config` error, not worth retrying, that does not print
/// the password it contains.
pub async fn malformed_url_is_config_error(f: &Fixture) {
    let secret = "s3cret-in-a-malformed-url";
    let scheme = f.url().split_once("://").map_or("", |(s, _)| s);
    let url = format!("{scheme}://user:{secret}@[::1/");
    let e = connect_fails(f, &url, "an unclosed IPv6 host").await;
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(!e.is_retryable(), "{e:?}");
    assert_hidden(&e, Some(secret));
}

/// Where the fixture URL has a password, the same URL with a wrong one is `Unauthorized`,
/// not worth retrying, and the error does not print the wrong password.
pub async fn wrong_password_is_unauthorized(f: &Fixture) {
    let scenario = "wrong_password_is_unauthorized";
    let Some(parts) = hosted(f, scenario) else {
        return;
    };
    let wrong = format!("wrong-pw-{}", crate::Names::new().prefix());
    let Some(url) = parts.password().and(parts.with_password(&wrong)) else {
        let reason = format!("the {} URL under test has no password", f.backend());
        skipped(scenario, &reason);
        return;
    };
    let e = connect_fails(f, &url, "a wrong password").await;
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!e.is_retryable(), "{e:?}");
    assert_hidden(&e, Some(&wrong));
}

#[cfg(test)]
mod tests {
    use super::Parts;

    #[test]
    fn parts_swap_password_and_hosts() {
        let p = Parts::of("amqp://guest:guest@127.0.0.1:5672/%2f?x=1").expect("url");
        assert_eq!(p.password(), Some("guest"));
        assert_eq!(
            p.with_password("no").as_deref(),
            Some("amqp://guest:no@127.0.0.1:5672/%2f?x=1")
        );
        assert_eq!(p.at_port(9, "pw"), "amqp://guest:pw@127.0.0.1:9/%2f?x=1");
        let p = Parts::of("kafka://a:9092,b:9092").expect("url");
        assert_eq!(
            (p.password(), p.at_port(9, "pw").as_str()),
            (None, "kafka://127.0.0.1:9")
        );
        let p = Parts::of("postgres://postgres@127.0.0.1:5432/test").expect("url");
        assert_eq!((p.password(), p.with_password("x")), (None, None));
        let p = Parts::of("memory://").expect("url");
        assert!(p.hosts.is_empty());
    }
}
