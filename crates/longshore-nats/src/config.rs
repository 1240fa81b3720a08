//! Configuration of the NATS JetStream adapter.

use std::time::Duration;

use longshore_core::topic::validate_topic;
use longshore_core::url::SecretUrl;
use longshore_core::Error;

/// Where the stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// On disk (survives a server restart). The default.
    File,
    /// In memory (lost when the server stops).
    Memory,
}

/// Settings of [`crate::NatsBroker`].
///
/// Topics map to subjects `<subject_prefix>.<topic>`; the stream `stream` captures
/// `<subject_prefix>.>` (or `stream_subjects` when given), so all longshore topics, dead
/// letters (`dlq.<subscription>`) included, live in one stream.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL(s): `nats://[user:password@]host:port[,host2:port]`. Redacted in Debug.
    pub url: SecretUrl,
    /// Stream name (provisioned on first use when missing). Default `LONGSHORE`.
    pub stream: String,
    /// Subject prefix for topics. Default `longshore`; empty means subject = topic, and then
    /// `stream_subjects` must be set.
    pub subject_prefix: String,
    /// Subjects the stream captures when it is created. Default: `<subject_prefix>.>`.
    pub stream_subjects: Vec<String>,
    /// Stream storage. Default file.
    pub storage: Storage,
    /// Stream replicas (clustered servers). Default 1.
    pub replicas: usize,
    /// Window in which a re-published message id is dropped by the server. Default 2 minutes.
    pub duplicate_window: Duration,
    /// Oldest message the stream keeps (`ZERO` = no limit). Default 7 days.
    pub max_age: Duration,
    /// Largest size of the stream in bytes (-1 = no limit). Default -1.
    pub max_bytes: i64,
    /// How long a delivery may stay unsettled before the server redelivers it; the adapter
    /// sends in-progress acks for deliveries still being handled. Default 30 s.
    pub ack_wait: Duration,
    /// Deliveries of one message before the adapter dead-letters it instead of handing it
    /// out again (`None` = no limit). Default 100.
    pub max_deliver: Option<u32>,
    /// Unacknowledged messages a durable (all its consumers together) may have out; each
    /// consumer is further bounded by its subscription's `prefetch`. Default 10,000.
    pub max_ack_pending: i64,
    /// Connection timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest pause between two reconnection attempts while the connection is lost (the
    /// pauses grow from 10 ms up to it). Default 250 ms, so a client is back within about that
    /// of the server (the client library's own default grows to 4 s: a 2.4 s outage then
    /// stalled publishing for over 4 s).
    pub reconnect_delay_max: Duration,
    /// Timeout of one JetStream API request or PubAck wait. Default 5 s.
    pub request_timeout: Duration,
    /// Total time a publish keeps retrying (same message id) before it fails. Default 30 s.
    pub publish_timeout: Duration,
    /// PubAcks one `publish_batch` keeps in flight. Default 1024.
    pub max_acks_in_flight: usize,
    /// Expiry of one pull request. Default 5 s.
    pub pull_expires: Duration,
    /// Client connection name shown by the server.
    pub connection_name: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: SecretUrl::new("nats://127.0.0.1:4222"),
            stream: "LONGSHORE".into(),
            subject_prefix: "longshore".into(),
            stream_subjects: Vec::new(),
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            ack_wait: Duration::from_secs(30),
            max_deliver: Some(100),
            max_ack_pending: 10_000,
            connect_timeout: Duration::from_secs(5),
            reconnect_delay_max: Duration::from_millis(250),
            request_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(30),
            max_acks_in_flight: 1024,
            pull_expires: Duration::from_secs(5),
            connection_name: None,
        }
    }
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::Config(format!(
            "{key}: {v:?} is not a duration like 500ms, 30s, 2m, 1h"
        ))
    };
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, "s"), |i| v.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(bad()),
    })
}

impl NatsConfig {
    /// Parses `nats://[user:pass@]host:port[,host:port][?key=value&...]` (`tls://` too).
    /// Keys: `stream`, `prefix` (or `subject_prefix`), `storage` (`file`|`memory`), `replicas`,
    /// `duplicate_window`, `max_age`, `max_bytes`, `ack_wait`, `max_deliver` (0 = no limit),
    /// `max_ack_pending`, `connect_timeout`, `reconnect_delay_max`, `request_timeout`,
    /// `publish_timeout`, `name`;
    /// durations as `500ms`, `30s`, `2m`, `1h`, `7d`. An unknown key is a `Config` error.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let redacted = longshore_core::url::redact_url(url);
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(Error::Config(format!(
                "not a NATS URL (nats:// or tls://): {redacted}"
            )));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let base = base.trim_end_matches('/');
        let mut config = NatsConfig {
            url: SecretUrl::new(base),
            ..NatsConfig::default()
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| Error::Config(format!("{k}: {v:?} is not an integer")))
            };
            match k {
                "stream" => config.stream = v.to_string(),
                "prefix" | "subject_prefix" => config.subject_prefix = v.to_string(),
                "storage" => {
                    config.storage = match v {
                        "file" => Storage::File,
                        "memory" => Storage::Memory,
                        _ => return Err(Error::Config(format!("storage: {v:?} (file|memory)"))),
                    }
                }
                "replicas" => config.replicas = int(v)?.clamp(1, 5) as usize,
                "duplicate_window" => config.duplicate_window = parse_duration(k, v)?,
                "max_age" => config.max_age = parse_duration(k, v)?,
                "max_bytes" => config.max_bytes = int(v)?,
                "ack_wait" => config.ack_wait = parse_duration(k, v)?,
                "max_deliver" => {
                    let n = int(v)?;
                    config.max_deliver = (n > 0).then(|| n.min(i64::from(u32::MAX)) as u32);
                }
                "max_ack_pending" => config.max_ack_pending = int(v)?,
                "connect_timeout" => config.connect_timeout = parse_duration(k, v)?,
                "reconnect_delay_max" => config.reconnect_delay_max = parse_duration(k, v)?,
                "request_timeout" => config.request_timeout = parse_duration(k, v)?,
                "publish_timeout" => config.publish_timeout = parse_duration(k, v)?,
                "name" => config.connection_name = Some(v.to_string()),
                _ => {
                    return Err(Error::Config(format!(
                        "unknown NATS URL parameter {k:?} in {redacted}"
                    )))
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The stream's subjects: `stream_subjects`, or `<subject_prefix>.>`.
    pub fn effective_stream_subjects(&self) -> Vec<String> {
        if self.stream_subjects.is_empty() {
            vec![format!("{}.>", self.subject_prefix)]
        } else {
            self.stream_subjects.clone()
        }
    }

    /// Checks names and limits.
    pub fn validate(&self) -> Result<(), Error> {
        let s = &self.stream;
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidName {
                kind: "stream",
                value: s.clone(),
                reason: "must be 1 to 64 bytes of [A-Za-z0-9_-]",
            });
        }
        if self.subject_prefix.is_empty() {
            if self.stream_subjects.is_empty() {
                return Err(Error::Config(
                    "an empty subject prefix needs explicit stream_subjects".into(),
                ));
            }
        } else {
            validate_topic(&self.subject_prefix).map_err(|_| Error::InvalidName {
                kind: "subject prefix",
                value: self.subject_prefix.clone(),
                reason: "must be dot-separated words of [A-Za-z0-9_-]",
            })?;
        }
        for subject in &self.stream_subjects {
            let ok = !subject.is_empty()
                && subject.split('.').enumerate().all(|(i, w)| {
                    w == "*"
                        || (w == ">" && i == subject.split('.').count() - 1)
                        || (!w.is_empty()
                            && w.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                });
            if !ok {
                return Err(Error::InvalidName {
                    kind: "stream subject",
                    value: subject.clone(),
                    reason: "must be dot-separated words of [A-Za-z0-9_-], `*` or a final `>`",
                });
            }
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(Error::Config("ack_wait must be at least 1s".into()));
        }
        if self.pull_expires < Duration::from_secs(1) {
            return Err(Error::Config("pull_expires must be at least 1s".into()));
        }
        if self.max_acks_in_flight == 0 {
            return Err(Error::Config(
                "max_acks_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Credentials found in a NATS URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `nats://user:pass@h1:4222,h2:4222` into the server list without credentials and
/// the credentials. async-nats reads neither from one string: it takes a URL's credentials
/// only from its options, and a string with commas is not a server list to it ("failed to
/// parse server or server list"). A server written without a scheme takes the first one's
/// (`tls://a:4222,b:4222` is two TLS servers).
pub(crate) fn split_credentials(url: &str) -> (Vec<String>, Auth) {
    let mut auth = Auth::None;
    let mut servers = Vec::new();
    let mut first_scheme = None;
    for part in url.split(',') {
        let (scheme, rest) = match part.find("://") {
            Some(i) => (&part[..i + 3], &part[i + 3..]),
            None => (*first_scheme.get_or_insert("nats://"), part),
        };
        first_scheme.get_or_insert(scheme);
        let rest = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                if auth == Auth::None {
                    auth = match userinfo.split_once(':') {
                        Some((u, p)) => Auth::UserPassword(percent_decode(u), percent_decode(p)),
                        None => Auth::Token(percent_decode(userinfo)),
                    };
                }
                &rest[at + 1..]
            }
            None => rest,
        };
        servers.push(format!("{scheme}{rest}"));
    }
    (servers, auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = NatsConfig::from_url(
            "nats://u:s3cret@127.0.0.1:4222?stream=S1&prefix=app.events&duplicate_window=5m&max_deliver=7&storage=memory",
        )
        .expect("parse");
        assert_eq!(c.stream, "S1");
        assert_eq!(c.subject_prefix, "app.events");
        assert_eq!(c.duplicate_window, Duration::from_secs(300));
        assert_eq!(c.max_deliver, Some(7));
        assert_eq!(c.storage, Storage::Memory);
        assert_eq!(c.reconnect_delay_max, Duration::from_millis(250));
        let quick = NatsConfig::from_url("nats://h?reconnect_delay_max=2s").expect("parse");
        assert_eq!(quick.reconnect_delay_max, Duration::from_secs(2));
        assert_eq!(c.url.expose(), "nats://u:s3cret@127.0.0.1:4222");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.effective_stream_subjects(), vec!["app.events.>"]);
        assert!(NatsConfig::from_url("amqp://x").is_err());
        assert!(NatsConfig::from_url("nats://h?stream=a.b").is_err());
        assert!(NatsConfig::from_url("nats://h?prefix=a..b").is_err());
        assert!(NatsConfig::from_url("nats://h?prefix=").is_err());
        assert!(NatsConfig::from_url("nats://h?bogus=1").is_err());
        assert!(NatsConfig::from_url("nats://h?ack_wait=abc").is_err());
        let e = NatsConfig::from_url("nats://u:s3cret@h?bogus=1").expect_err("bogus");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn credentials_come_out_of_the_url() {
        let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_credentials("nats://app:p%40ss@h:4222,h2:4222"),
            (
                list(&["nats://h:4222", "nats://h2:4222"]),
                Auth::UserPassword("app".into(), "p@ss".into())
            )
        );
        assert_eq!(
            split_credentials("nats://tok@h:4222"),
            (list(&["nats://h:4222"]), Auth::Token("tok".into()))
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            (list(&["nats://h:4222"]), Auth::None)
        );
        assert_eq!(
            split_credentials("tls://a:4222,b:4222,nats://c:4222").0,
            list(&["tls://a:4222", "tls://b:4222", "nats://c:4222"])
        );
    }
}
