//! Fuzzes every decoder and parser of longshore that a peer or a user controls, on stable
//! Rust: random and mutated inputs, `N` per target (first argument, default 100,000), each
//! target seeded so any failure is reproducible from the printed seed.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use fastrand::Rng;
use longshore_core::cloudevents::{codec_from_url, CloudEventsCodec, HeaderBinding};
use longshore_core::observe::TraceContext;
use longshore_core::topic::{matches, validate_name, validate_pattern, validate_topic};
use longshore_core::url::redact_url;
use longshore_core::{
    dead_letter_message, fit_dead_letter, Codec, DeadLetter, JsonCodec, Message, HEADER_DLQ_REASON,
};

/// A valid seed-format envelope, the starting point of the mutation targets.
const ENVELOPE: &[u8] = br#"{"event_id":"6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e","event_type":"order_created","data":{"order_id":"o-1","lines":[1,2.5,null,true,"x"],"n":{"a":[{}]}},"timestamp":"2024-01-26T10:00:00.123456"}"#;

/// Characters that matter to the parsers: separators, wildcards, escapes, non-ASCII.
const INTERESTING: &[u8] = b"{}[]\":,.*#@/?&=%:\\ \n\t0123456789abcdefxyzAZ-_~+\x00\xff\xc3\xa9";

/// A fuzz target: one input, drawn from the seeded generator.
type Target = fn(&mut Rng);

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let targets: &[(&str, Target)] = &[
        ("event_json_bytes", event_json_bytes),
        ("event_json_mutations", event_json_mutations),
        ("event_json_headers", event_json_headers),
        ("topics_and_patterns", topics_and_patterns),
        ("url_redaction", url_redaction),
        ("traceparent", traceparent),
        ("dead_letter_fitting", dead_letter_fitting),
        ("adapter_urls", adapter_urls),
        ("kafka_record", kafka_record),
        ("cloudevents_binary", cloudevents_binary),
        ("cloudevents_structured", cloudevents_structured),
        ("codec_url", codec_url),
    ];
    let started = Instant::now();
    let mut total = 0u64;
    for (name, target) in targets {
        let t0 = Instant::now();
        for i in 0..n {
            let seed = fxhash(name) ^ i;
            let mut rng = Rng::with_seed(seed);
            if catch_unwind(AssertUnwindSafe(|| target(&mut rng))).is_err() {
                eprintln!("fuzz: {name} failed on seed {seed}");
                std::process::exit(1);
            }
        }
        total += n;
        println!(
            "{name:<22} {n:>12} inputs  {:>8.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    println!(
        "fuzz: {total} executions over {} targets in {:.1} s, 0 failures",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(..=max);
    (0..len)
        .map(|_| {
            if rng.bool() {
                INTERESTING[rng.usize(..INTERESTING.len())]
            } else {
                rng.u8(..)
            }
        })
        .collect()
}

fn text(rng: &mut Rng, max: usize) -> String {
    String::from_utf8_lossy(&bytes(rng, max)).into_owned()
}

/// `ENVELOPE` with a few byte edits: set, insert, remove, or duplicate a span.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.usize(1..=6) {
        let at = rng.usize(..=b.len());
        match rng.u8(..4) {
            0 if at < b.len() => b[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            1 => b.insert(at, rng.u8(..)),
            2 if at < b.len() => {
                b.remove(at);
            }
            _ => {
                let end = (at + rng.usize(..16)).min(b.len());
                let span = b[at..end].to_vec();
                b.splice(at..at, span);
            }
        }
    }
    b
}

fn event_json_bytes(rng: &mut Rng) {
    let _ = JsonCodec.decode(&Message::new(bytes(rng, 256)));
}

fn event_json_mutations(rng: &mut Rng) {
    let body = mutate(rng, ENVELOPE);
    if let Ok(event) = JsonCodec.decode(&Message::new(body)) {
        let encoded = JsonCodec.encode(&event).expect("a decoded event encodes");
        let again = JsonCodec
            .decode(&encoded)
            .expect("an encoded event decodes");
        assert_eq!((again.id, &again.event_type), (event.id, &event.event_type));
    }
}

fn event_json_headers(rng: &mut Rng) {
    let mut m = Message::new(ENVELOPE.to_vec());
    for _ in 0..rng.usize(..20) {
        m.headers.insert(text(rng, 24), text(rng, 48));
    }
    assert!(
        JsonCodec.decode(&m).is_ok(),
        "headers made a valid body undecodable"
    );
}

/// A valid structured CloudEvent, the starting point of the structured mutations.
const CLOUDEVENT: &[u8] = br#"{"specversion":"1.0","id":"A-1","source":"/s","type":"order_created","time":"2024-01-26T10:00:00Z","subject":"o-1","datacontenttype":"application/json","data":{"order_id":"o-1","n":[1,{}]}}"#;

/// Binary-mode CloudEvents with mutated attribute headers (any binding's prefix) and body:
/// never a panic, and whatever decodes re-encodes (in each binding) to the same event.
fn cloudevents_binary(rng: &mut Rng) {
    let prefix = ["ce-", "ce_", "cloudEvents:", "cloudEvents_", "CE-"][rng.usize(..5)];
    let mut m = Message::new(mutate(rng, br#"{"order_id":"o-1"}"#));
    for (attr, value) in [
        ("specversion", "1.0"),
        ("id", "A-1"),
        ("source", "/s"),
        ("type", "order_created"),
        ("time", "2024-01-26T10:00:00Z"),
    ] {
        if rng.u8(..8) > 0 {
            let value = String::from_utf8_lossy(&mutate(rng, value.as_bytes())).into_owned();
            m.headers.insert(format!("{prefix}{attr}"), value);
        }
    }
    for _ in 0..rng.usize(..4) {
        m.headers.insert(text(rng, 16), text(rng, 24));
    }
    if let Ok(event) = JsonCodec.decode(&m) {
        for binding in [
            HeaderBinding::Http,
            HeaderBinding::Kafka,
            HeaderBinding::Amqp,
        ] {
            let codec = CloudEventsCodec::binary().with_binding(binding);
            let again = codec
                .decode(&codec.encode(&event).expect("a decoded event encodes"))
                .expect("an encoded CloudEvent decodes");
            assert_eq!((again.id, &again.event_type), (event.id, &event.event_type));
        }
    }
}

/// Structured CloudEvents, byte-mutated, with and without the content type.
fn cloudevents_structured(rng: &mut Rng) {
    let mut m = Message::new(mutate(rng, CLOUDEVENT));
    if rng.bool() {
        m.headers
            .insert("content-type".into(), "application/cloudevents+json".into());
    }
    if let Ok(event) = JsonCodec.decode(&m) {
        let codec = CloudEventsCodec::structured();
        let again = codec
            .decode(&codec.encode(&event).expect("a decoded event encodes"))
            .expect("an encoded CloudEvent decodes");
        assert_eq!((again.id, &again.event_type), (event.id, &event.event_type));
    }
}

/// `?codec=` / `?ce_source=` taken out of any URL: never a panic.
fn codec_url(rng: &mut Rng) {
    let url = format!(
        "amqp://u:pw{}@h/{}?codec={}&ce_source={}",
        text(rng, 8),
        text(rng, 8),
        ["cloudevents", "cloudevents-structured", "json", ""][rng.usize(..4)],
        text(rng, 16)
    );
    let url = String::from_utf8_lossy(&mutate(rng, url.as_bytes())).into_owned();
    let _ = codec_from_url(&url);
}

fn topics_and_patterns(rng: &mut Rng) {
    let topic = text(rng, 32);
    let pattern = String::from_utf8_lossy(&mutate(rng, topic.as_bytes())).into_owned();
    let _ = validate_name("subscription", &topic);
    let _ = validate_pattern(&pattern);
    let _ = matches(&pattern, &topic);
    if validate_topic(&topic).is_ok() {
        assert!(matches(&topic, &topic) && matches("#", &topic));
    }
}

fn url_redaction(rng: &mut Rng) {
    let password: String = (0..12).map(|_| rng.alphanumeric()).collect();
    let url = format!(
        "{}://{}:{password}@{}",
        text(rng, 6),
        text(rng, 8),
        text(rng, 40)
    );
    let shown = redact_url(&url);
    let unrelated = url.matches(password.as_str()).count() > 1;
    assert!(!shown.contains(&password) || unrelated, "{shown}");
}

fn traceparent(rng: &mut Rng) {
    let valid = TraceContext::new_root().traceparent();
    let s = String::from_utf8_lossy(&mutate(rng, valid.as_bytes())).into_owned();
    if let Some(ctx) = TraceContext::parse(&s) {
        assert_eq!(TraceContext::parse(&ctx.traceparent()), Some(ctx));
    }
}

fn dead_letter_fitting(rng: &mut Rng) {
    let mut m = Message::new(vec![b'x'; rng.usize(..100_000)]);
    for _ in 0..rng.usize(..300) {
        let value = "v".repeat(rng.usize(..200));
        m.headers.insert(text(rng, 16), value);
    }
    let dead = DeadLetter {
        reason: text(rng, 2000),
        attempts: rng.u32(..),
    };
    let max = rng.usize(4096..150_000);
    let fitted = fit_dead_letter(dead_letter_message(m, "t", "s", &dead), max);
    let size: usize = fitted
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>()
        + fitted.payload.len();
    assert!(size <= max && fitted.headers.contains_key(HEADER_DLQ_REASON));
}

fn adapter_urls(rng: &mut Rng) {
    let schemes = ["amqp", "amqps", "kafka", "nats", "tls", "postgres", "x"];
    let password: String = (0..10).map(|_| rng.alphanumeric()).collect();
    let seed = format!(
        "{}://{}:{password}@127.0.0.1:{}/{}?{}={}&{}",
        schemes[rng.usize(..schemes.len())],
        text(rng, 6),
        rng.u16(..),
        text(rng, 8),
        text(rng, 10),
        text(rng, 10),
        text(rng, 10)
    );
    let url = String::from_utf8_lossy(&mutate(rng, seed.as_bytes())).into_owned();
    // Judged only while the password still stands whole, once, as the user info's password.
    let judged = url.contains(&format!(":{password}@")) && url.matches(&password).count() == 1;
    for shown in [
        longshore_rabbitmq::RabbitConfig::from_url(&url).map(|c| format!("{c:?}")),
        longshore_kafka::KafkaConfig::from_url(&url).map(|c| format!("{c:?}")),
        longshore_nats::NatsConfig::from_url(&url).map(|c| format!("{c:?}")),
        longshore_postgres::PgConfig::from_url(&url).map(|c| format!("{c:?}")),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            !judged || !shown.contains(&password),
            "a config printed its password: {shown}"
        );
    }
}

fn kafka_record(rng: &mut Rng) {
    let payload = bytes(rng, 512);
    let opt = |rng: &mut Rng| rng.bool().then(|| bytes(rng, 32));
    let (key, id, topic) = (opt(rng), opt(rng), opt(rng));
    let headers: Vec<(String, Option<Vec<u8>>)> = (0..rng.usize(..40))
        .map(|_| (text(rng, 16), opt(rng)))
        .collect();
    let (id, topic, len, count) = longshore_kafka::fuzzing::record(
        &payload,
        key.as_deref(),
        id.as_deref(),
        topic.as_deref(),
        &headers,
    );
    assert!(!id.is_empty() && !topic.is_empty() && len == payload.len() && count <= headers.len());
}
