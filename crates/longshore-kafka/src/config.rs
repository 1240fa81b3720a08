//! Configuration of the Kafka adapter.

use std::fmt;
use std::time::Duration;

use longshore_core::url::SecretUrl;
use longshore_core::Error;

use crate::mapping::TopicMap;

/// Default largest payload: 1,000,000 bytes, which with headers and record overhead stays
/// under Kafka's default `message.max.bytes` of 1,048,588.
pub const DEFAULT_MAX_PAYLOAD: usize = 1_000_000;

/// Configuration of a [`crate::KafkaBroker`].
///
/// `Debug` never shows credentials: the URL is redacted and extra client properties are shown
/// by name only.
#[derive(Clone)]
pub struct KafkaConfig {
    /// The `kafka://host:port[,host:port]` URL (credentials, if any, become SASL settings).
    pub url: SecretUrl,
    /// `bootstrap.servers` (derived from the URL).
    pub bootstrap_servers: String,
    /// How longshore topics map to Kafka topics (default: first word).
    pub topic_map: TopicMap,
    /// Create Kafka topics through the admin API before first use (default true). With
    /// `false` topics must exist already (or the broker must auto-create them).
    pub create_topics: bool,
    /// Partitions of topics the adapter creates (default 3).
    pub partitions: i32,
    /// Replication factor of topics the adapter creates; `None` (default) lets the broker
    /// choose (`default.replication.factor`, Kafka 2.4+).
    pub replication_factor: Option<i32>,
    /// Largest payload a publish accepts (default [`DEFAULT_MAX_PAYLOAD`]). Raising it above
    /// about 1 MB needs the broker's `message.max.bytes` raised too.
    pub max_payload: usize,
    /// How long librdkafka may try to deliver a message (`delivery.timeout.ms`, default 30 s).
    pub delivery_timeout: Duration,
    /// How long `connect` and admin/metadata calls may take (default 10 s).
    pub request_timeout: Duration,
    /// How long `subscribe` waits for the consumer's first partition assignment before
    /// returning the stream anyway (default 30 s). Messages are never lost by returning early:
    /// new groups read from the start of their topics.
    pub join_timeout: Duration,
    /// `session.timeout.ms` of consumers (default 10 s): how soon a dead consumer's partitions
    /// move to the others.
    pub session_timeout: Duration,
    /// `auto.commit.interval.ms` (default 1 s): how often acknowledged offsets are committed.
    pub commit_interval: Duration,
    /// How often subscriptions with wildcard Kafka topics re-read the topic list (default 5 s).
    pub pattern_refresh: Duration,
    /// How long closing a consumer may take (commit, leave the group) before it is abandoned
    /// (default 10 s).
    pub close_timeout: Duration,
    /// `client.id` (default `longshore`).
    pub client_id: String,
    /// Extra librdkafka properties applied to every client last (they win). Values are
    /// treated as secrets in `Debug`.
    pub properties: Vec<(String, String)>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaConfig")
            .field("url", &self.url)
            .field("topic_map", &self.topic_map)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("max_payload", &self.max_payload)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("join_timeout", &self.join_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("pattern_refresh", &self.pattern_refresh)
            .field("close_timeout", &self.close_timeout)
            .field("client_id", &self.client_id)
            .field("properties", &props)
            .finish()
    }
}

impl KafkaConfig {
    /// The largest record the producer sends (`message.max.bytes`): payload, headers and
    /// framing, at least Kafka's default of 1,048,588 and room for headers above
    /// `max_payload`. Dead letters are fitted to it, never to `max_payload`.
    pub fn max_message(&self) -> usize {
        (self.max_payload + 48_588).max(1_048_588)
    }

    /// A configuration for `bootstrap_servers` (`host:port[,host:port]`) with defaults.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        let bootstrap_servers = bootstrap_servers.into();
        KafkaConfig {
            url: SecretUrl::new(format!("kafka://{bootstrap_servers}")),
            bootstrap_servers,
            topic_map: TopicMap::default(),
            create_topics: true,
            partitions: 3,
            replication_factor: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            pattern_refresh: Duration::from_secs(5),
            close_timeout: Duration::from_secs(10),
            client_id: "longshore".to_string(),
            properties: Vec::new(),
        }
    }

    /// Parses `kafka://[user:password@]host:port[,host:port][?options]`.
    ///
    /// Options: `topic_words` (mapping, default 1), `partitions`, `replication`,
    /// `create_topics` (true/false), `max_payload`, `client_id`, `session_timeout_ms`
    /// (consumers' `session.timeout.ms`, default 10000), `debug` (librdkafka's `debug`
    /// contexts, e.g. `cgrp`, logged through `tracing`), `sasl_mechanism` (default PLAIN when
    /// credentials are given), `security_protocol` (default SASL_PLAINTEXT with credentials,
    /// PLAINTEXT without). Unknown options are a [`Error::Config`].
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let secret = SecretUrl::new(url);
        let bad = |what: &str| Error::Config(format!("{what} in kafka URL {}", secret.redacted()));
        let (userinfo, hosts, query) = split_url(url).map_err(bad)?;
        let mut config = KafkaConfig::new(hosts);
        config.url = secret.clone();
        let mut security = Security::default();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            for pair in q.split('&') {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad("malformed option"))?;
                let v = decode(v).ok_or_else(|| bad("malformed option value"))?;
                config.apply_option(k, v, &mut security).map_err(bad)?;
            }
        }
        if let Some(userinfo) = userinfo {
            security.credentials(userinfo).map_err(bad)?;
        }
        security.apply(&mut config.properties);
        Ok(config)
    }

    /// Applies one URL option (SASL settings are collected in `security`); `Err` says what is
    /// wrong with it.
    fn apply_option(
        &mut self,
        key: &str,
        v: String,
        security: &mut Security,
    ) -> Result<(), &'static str> {
        let num = |what: &'static str| v.parse::<i64>().map_err(|_| what);
        match key {
            "topic_words" => {
                let n = num("topic_words must be a number")?;
                if !(1..=16).contains(&n) {
                    return Err("topic_words must be 1 to 16");
                }
                self.topic_map = TopicMap::new(n as usize);
            }
            "partitions" => {
                let n = num("partitions must be a number")?;
                self.partitions = i32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("partitions must be at least 1")?;
            }
            "replication" => {
                let n = num("replication must be a number")?;
                self.replication_factor = Some(
                    i32::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1 || *n == -1)
                        .ok_or("replication must be at least 1")?,
                );
            }
            "create_topics" => {
                self.create_topics = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err("create_topics must be true or false"),
                }
            }
            "max_payload" => {
                let n = num("max_payload must be a number")?;
                self.max_payload = usize::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("max_payload must be positive")?;
            }
            "session_timeout_ms" => {
                let n = num("session_timeout_ms must be a number")?;
                let ms = u64::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("session_timeout_ms must be positive")?;
                self.session_timeout = Duration::from_millis(ms);
            }
            "debug" => self.properties.push(("debug".into(), v)),
            "client_id" => self.client_id = v,
            "sasl_mechanism" => security.mechanism = Some(v),
            "security_protocol" => security.protocol = Some(v),
            _ => return Err("unknown option"),
        }
        Ok(())
    }

    /// The same configuration with another topic mapping.
    pub fn with_topic_words(mut self, words: usize) -> Self {
        self.topic_map = TopicMap::new(words);
        self
    }

    /// Adds a librdkafka property (applied last to every client).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The client configuration shared by every client this adapter makes; callers add their
    /// own settings and then [`KafkaConfig::apply_properties`].
    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("socket.keepalive.enable", "true")
            .set("message.max.bytes", self.max_message().to_string());
        c
    }

    pub(crate) fn apply_properties(&self, c: &mut rdkafka::ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
            if k == "debug" {
                // librdkafka's debug contexts log at debug level; let them through to tracing.
                c.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
            }
        }
    }
}

/// Splits `kafka://[userinfo@]hosts[?query]` and checks that every host is `host:port`.
fn split_url(url: &str) -> Result<(Option<&str>, &str, Option<&str>), &'static str> {
    let rest = url
        .strip_prefix("kafka://")
        .ok_or("expected scheme kafka://")?;
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority.trim_end_matches('/');
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err("no broker address");
    }
    if !hosts.split(',').all(valid_host) {
        return Err("broker addresses must be host:port");
    }
    Ok((userinfo, hosts, query))
}

/// `host:port`, where an IPv6 host is a bracketed address (`[::1]:9092`).
fn valid_host(host: &str) -> bool {
    let Some((h, p)) = host.rsplit_once(':') else {
        return false;
    };
    if h.is_empty() || p.parse::<u16>().is_err() || host.contains('/') {
        return false;
    }
    match h.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !h.contains(['[', ']']),
    }
}

/// The SASL settings of a URL: credentials and the mechanism and protocol options.
#[derive(Default)]
struct Security {
    mechanism: Option<String>,
    protocol: Option<String>,
    credentials: Option<(String, String)>,
}

impl Security {
    /// Takes `user[:password]` (percent-encoded).
    fn credentials(&mut self, userinfo: &str) -> Result<(), &'static str> {
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let user = decode(user).ok_or("malformed user name")?;
        let pass = decode(pass).ok_or("malformed password")?;
        self.credentials = Some((user, pass));
        Ok(())
    }

    /// Adds the librdkafka properties: with credentials, mechanism PLAIN and protocol
    /// SASL_PLAINTEXT unless the URL names others.
    fn apply(mut self, properties: &mut Vec<(String, String)>) {
        if let Some((user, pass)) = self.credentials.take() {
            properties.push(("sasl.username".into(), user));
            properties.push(("sasl.password".into(), pass));
            properties.push((
                "sasl.mechanism".into(),
                self.mechanism.take().unwrap_or_else(|| "PLAIN".into()),
            ));
            properties.push((
                "security.protocol".into(),
                self.protocol
                    .take()
                    .unwrap_or_else(|| "SASL_PLAINTEXT".into()),
            ));
        }
        if let Some(m) = self.mechanism {
            properties.push(("sasl.mechanism".into(), m));
        }
        if let Some(p) = self.protocol {
            properties.push(("security.protocol".into(), p));
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = KafkaConfig::from_url("kafka://[::1]:9092").unwrap();
        assert_eq!(c.bootstrap_servers, "[::1]:9092");
        let c = KafkaConfig::from_url("kafka://a:9092,b:9093").unwrap();
        assert_eq!(c.bootstrap_servers, "a:9092,b:9093");
        assert_eq!(c.topic_map.words, 1);
        let c = KafkaConfig::from_url(
            "kafka://u:p%40ss@h:9092?topic_words=2&partitions=6&replication=3&create_topics=false",
        )
        .unwrap();
        assert_eq!(c.topic_map.words, 2);
        assert_eq!((c.partitions, c.replication_factor), (6, Some(3)));
        assert!(!c.create_topics);
        assert!(c
            .properties
            .contains(&("sasl.password".to_string(), "p@ss".to_string())));
        let c2 = KafkaConfig::from_url("kafka://h:9092?session_timeout_ms=2000&debug=cgrp%2Ctopic")
            .unwrap();
        assert_eq!(c2.session_timeout, Duration::from_millis(2000));
        assert_eq!(
            c2.properties,
            vec![("debug".to_string(), "cgrp,topic".to_string())]
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p%40ss") && !dbg.contains("p@ss"), "{dbg}");
        for bad in [
            "amqp://h:1",
            "kafka://",
            "kafka://h",
            "kafka://h:x",
            "kafka://h:1?nope=1",
            "kafka://h:1?partitions=0",
            "kafka://h:1?session_timeout_ms=0",
            "kafka://user:secret@[::1/",
            "kafka://[::1:9092",
            "kafka://u:secret@h:1?topic_words=0",
        ] {
            let e = KafkaConfig::from_url(bad).unwrap_err();
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }
}
