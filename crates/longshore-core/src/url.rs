//! Helpers for broker URLs: credentials never reach logs, errors or Debug output.

/// Replaces the password (and any token-like user info) of a URL with `***`.
///
/// Works on any `scheme://[user[:password]@]host...` string, including comma-separated host
/// lists, without parsing the rest, so even a malformed URL is safe to print.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL we understand: print nothing that could be a secret.
        return "<unparseable url>".to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = redact_query(tail);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}{user}:***{host}{tail}")
            } else {
                format!("{scheme}***{host}{tail}")
            }
        }
        None => format!("{scheme}{authority}{tail}"),
    }
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_string();
    };
    let (path, query) = tail.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            let lower = key.to_ascii_lowercase();
            if ["password", "pass", "token", "secret", "sasl", "key"]
                .iter()
                .any(|s| lower.contains(s))
            {
                format!("{key}=***")
            } else {
                kv.to_string()
            }
        })
        .collect();
    format!("{path}{}", parts.join("&"))
}

/// A URL that prints redacted in `Debug` and `Display`; the secret is only reachable through
/// [`SecretUrl::expose`], for handing to the client library.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The full URL, credentials included. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@localhost:5672/%2f"),
            "amqp://guest:***@localhost:5672/%2f"
        );
        assert_eq!(
            redact_url("nats://tok3n@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?sslmode=require&password=x"),
            "postgres://u:***@h/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("kafka://a:9092,b:9092"), "kafka://a:9092,b:9092");
        assert_eq!(redact_url("no scheme:secret"), "<unparseable url>");
        assert_eq!(redact_url("amqp://u:p@ss@host/"), "amqp://u:***@host/");
        let s = SecretUrl::new("amqp://guest:s3cret@localhost");
        assert!(!format!("{s:?} {s}").contains("s3cret"));
        assert!(s.expose().contains("s3cret"));
    }
}
