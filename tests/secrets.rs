//! Credentials never reach the log, at any level, including dependencies' trace output.
//!
//! Every compiled-in backend is connected with a password in its URL (a wrong one where the
//! server checks it, so the connect-failure path runs; any one where it does not), through
//! the facade's `connect`, with every target logging at `trace` through the filter longshore
//! documents (`longshore::observe::log_directives`). Then all log output, errors and `Debug`
//! output are searched for the password as written, percent-encoded, as a list of byte
//! values (lapin's frame dump), in hex and in base64.
//!
//! One test in this binary: it installs the process's global subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A password no other output could contain by chance, with characters that URLs encode.
fn secret() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Pw{}@!x", &id[..14])
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every way the password could be written down.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    let bytes = secret.as_bytes();
    let list = |sep: &str| {
        bytes
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("as written", secret.to_string()),
        ("percent-encoded", percent_encode(secret)),
        ("byte list", list(", ")),
        ("byte list (compact)", list(",")),
        ("hex", hex.clone()),
        ("HEX", hex.to_uppercase()),
        ("base64", base64(bytes)),
    ]
}

/// Standard base64 without padding, enough to search for (a login frame's PLAIN response is
/// `\0user\0password`, so the password may start at any of three alignments: search the
/// password's own encoding, which appears whole when it starts on a 3-byte boundary).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The URL of each compiled-in backend with `secret` as its password.
fn urls(secret: &str) -> Vec<(&'static str, String)> {
    let pw = percent_encode(secret);
    let mut urls = Vec::new();
    let with_password = |url: String, user: &str| -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", &url));
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{user}:{pw}@{host}")
    };
    if cfg!(feature = "rabbitmq") {
        urls.push(("rabbitmq", with_password(common::amqp_url(), "guest")));
    }
    if cfg!(feature = "nats") {
        urls.push(("nats", with_password(common::nats_url(), "longshore")));
    }
    if cfg!(feature = "postgres") {
        urls.push((
            "postgres",
            with_password(common::postgres_url(), "postgres"),
        ));
    }
    if cfg!(feature = "kafka") {
        urls.push(("kafka", with_password(common::kafka_url(), "longshore")));
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_log_error_or_debug_output() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_env_filter(EnvFilter::new(longshore::observe::log_directives("trace")))
        .with_ansi(false)
        .init();
    let secret = secret();
    let mut shown = String::new();
    for (backend, url) in urls(&secret) {
        // Bounded: a connect that neither succeeds nor fails in time is itself reported.
        let outcome = tokio::time::timeout(Duration::from_secs(40), longshore::connect(&url)).await;
        match outcome {
            Ok(Ok(ls)) => {
                shown.push_str(&format!("{ls:?} {}\n", ls.url()));
                let health = ls.health().await;
                shown.push_str(&format!("{health:?}\n"));
                let _ = ls.close().await;
            }
            Ok(Err(e)) => shown.push_str(&format!("{backend}: {e} / {e:?}\n")),
            Err(_) => shown.push_str(&format!("{backend}: connect timed out\n")),
        }
        let config = longshore::Config::new(url.clone());
        shown.push_str(&format!("{config:?} {config}\n"));
    }
    let logs = captured.text();
    assert!(
        !logs.is_empty() || urls(&secret).is_empty(),
        "the subscriber captured nothing: the test would prove nothing"
    );
    for (form, needle) in forms(&secret) {
        for (what, text) in [("log output", &logs), ("errors and Debug output", &shown)] {
            if let Some(at) = text.find(&needle) {
                let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line: String = text[from..]
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect();
                panic!("the password ({form}) is in the {what}: {line}");
            }
        }
    }
}
