//! Process-wide capture of metrics, spans and warnings, so conformance scenarios can assert what
//! longshore's instrumentation recorded on each backend.
//!
//! Both are installed once per process ([`install`]); scenarios isolate their own numbers by
//! the unique topic and subscription names they use as labels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A recorder that keeps every value (the `metrics-util` debugging recorder resets values on
/// each snapshot, which scenarios running in parallel in one process would see as lost counts).
#[derive(Clone)]
struct KeepingRecorder(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for KeepingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

static CAPTURE: OnceLock<KeepingRecorder> = OnceLock::new();
static SPANS: Mutex<Vec<SpanRecord>> = Mutex::new(Vec::new());
static EVENTS: Mutex<Vec<EventRecord>> = Mutex::new(Vec::new());

/// A log event (whatever the `RUST_LOG` filter lets through to the console), with its target,
/// level and fields as text (`message` among them).
#[derive(Clone, Debug, Default)]
pub struct EventRecord {
    /// The event's target, e.g. `longshore_rabbitmq::confirm` or `lapin::returned_messages`.
    pub target: String,
    /// Its level.
    pub level: String,
    /// Its fields, `message` included.
    pub fields: HashMap<String, String>,
}

/// Every captured log event whose target starts with `target` and whose field `field` is
/// `value`.
pub fn events(target: &str, field: &str, value: &str) -> Vec<EventRecord> {
    let events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    events
        .iter()
        .filter(|e| e.target.starts_with(target) && e.fields.get(field).is_some_and(|v| v == value))
        .cloned()
        .collect()
}

/// A span longshore opened (names starting `longshore.`), with its fields as text.
#[derive(Clone, Debug, Default)]
pub struct SpanRecord {
    /// The span's name, e.g. `longshore.handle`.
    pub name: String,
    /// Its fields, recorded at creation or later.
    pub fields: HashMap<String, String>,
}

/// Installs the metrics recorder and the span-capturing subscriber (with a `RUST_LOG`-filtered
/// log layer for humans). Idempotent. Call it before creating the handles under test: metric
/// handles registered before a recorder exists stay no-ops.
///
/// Panics if another global recorder or subscriber was installed first, because the scenarios
/// would then silently assert nothing.
pub fn install() {
    CAPTURE.get_or_init(|| {
        let recorder = KeepingRecorder(Arc::new(Registry::atomic()));
        let metrics_ok = metrics::set_global_recorder(recorder.clone()).is_ok();
        let logs = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(EnvFilter::from_default_env());
        let spans_ok = tracing_subscriber::registry()
            .with(SpanCapture)
            .with(logs)
            .try_init()
            .is_ok();
        assert!(
            metrics_ok && spans_ok,
            "another metrics recorder or tracing subscriber was installed before longshore_testkit::observe::install()"
        );
        recorder
    });
}

/// The current value of counter `name` with exactly these label values among its labels.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    find(name, labels)
        .into_iter()
        .map(|v| match v {
            Value::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// The current value of gauge `name` with these labels (0 when never set).
pub fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    find(name, labels)
        .into_iter()
        .map(|v| match v {
            Value::Gauge(g) => g,
            _ => 0.0,
        })
        .sum()
}

/// How many values histogram `name` with these labels has recorded.
pub fn histogram_count(name: &str, labels: &[(&str, &str)]) -> usize {
    find(name, labels)
        .into_iter()
        .map(|v| match v {
            Value::Histogram(n) => n,
            _ => 0,
        })
        .sum()
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(usize),
}

fn find(name: &str, labels: &[(&str, &str)]) -> Vec<Value> {
    let Some(KeepingRecorder(registry)) = CAPTURE.get() else {
        panic!("longshore_testkit::observe::install() was not called");
    };
    let wanted = |key: &Key| {
        key.name() == name
            && labels.iter().all(|(k, v)| {
                key.labels()
                    .any(|label| label.key() == *k && label.value() == *v)
            })
    };
    let mut out = Vec::new();
    registry.visit_counters(|key, c| {
        if wanted(key) {
            out.push(Value::Counter(c.load(Ordering::Relaxed)));
        }
    });
    registry.visit_gauges(|key, g| {
        if wanted(key) {
            out.push(Value::Gauge(f64::from_bits(g.load(Ordering::Relaxed))));
        }
    });
    registry.visit_histograms(|key, h| {
        if wanted(key) {
            out.push(Value::Histogram(h.data().len()));
        }
    });
    out
}

/// Every captured span named `name` whose field `field` is `value`.
pub fn spans(name: &str, field: &str, value: &str) -> Vec<SpanRecord> {
    let spans = SPANS.lock().unwrap_or_else(|e| e.into_inner());
    spans
        .iter()
        .filter(|s| s.name == name && s.fields.get(field).is_some_and(|v| v == value))
        .cloned()
        .collect()
}

/// Keeps the fields of every `longshore.*` span; the index into [`SPANS`] lives in the span's
/// extensions because the registry reuses span ids.
struct SpanCapture;

struct Slot(usize);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S> Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if !name.starts_with("longshore.") {
            return;
        }
        let mut record = SpanRecord {
            name: name.to_string(),
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut record.fields));
        let mut spans = SPANS.lock().unwrap_or_else(|e| e.into_inner());
        spans.push(record);
        let slot = Slot(spans.len() - 1);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(slot);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Only WARN and above: the events scenarios assert on, without keeping every debug line.
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut record = EventRecord {
            target: meta.target().to_string(),
            level: meta.level().to_string(),
            fields: HashMap::new(),
        };
        event.record(&mut Fields(&mut record.fields));
        EVENTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(Slot(index)) = extensions.get::<Slot>() else {
            return;
        };
        let mut spans = SPANS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = spans.get_mut(*index) {
            values.record(&mut Fields(&mut record.fields));
        }
    }
}
