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
    // The user info ends at the last `@`, even past a `/`, `?` or `#`: a password written
    // unencoded may hold any of them, and hiding too much is safe where too little is not.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(authority_end);
    let tail = redact_query(tail);
    match userinfo {
        Some(userinfo) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let plain_user = !user.contains(['/', '?', '#', '@']);
            if userinfo.contains(':') && plain_user {
                format!("{scheme}{user}:***{host}{tail}")
            } else {
                format!("{scheme}***{host}{tail}")
            }
        }
        None => format!("{scheme}{host}{tail}"),
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
pub struct SecretUrl {
    url: String,
    /// What `Debug` and `Display` print, redacted once when the URL is wrapped.
    shown: String,
}

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        SecretUrl {
            shown: redact_url(&url),
            url,
        }
    }

    /// Wraps `url`, a rewrite of `original` for the client library (adapter options taken
    /// out, the rest re-encoded), printed as `original` redacted. A rewrite can move
    /// credentials where redaction no longer finds them (a user info holding an unencoded `?`
    /// becomes an encoded query), so only the URL as the user wrote it is redacted for print.
    pub fn rewritten(original: &str, url: impl Into<String>) -> Self {
        SecretUrl {
            shown: redact_url(original),
            url: url.into(),
        }
    }

    /// The full URL, credentials included. Never log it.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The redacted form.
    pub fn redacted(&self) -> String {
        self.shown.clone()
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
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
