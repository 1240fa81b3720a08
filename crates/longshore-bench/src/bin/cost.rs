//! Cost per message, counted by `scripts/cost.sh`: instructions under callgrind, heap
//! allocations under valgrind's DHAT. `cost <decode|decode-raw|path> <count> [setup]`.
//!
//! Both pieces run on one thread (a current-thread runtime), so the counts repeat from run to
//! run. Callgrind counts only inside [`measured`] (`--toggle-collect`); everything a run does
//! once (runtime, broker, consumer start, building the messages) happens outside it. DHAT
//! cannot be told where to count, so the script also runs `setup` (the same run with the
//! measured part skipped) and subtracts it. Both counts are taken at two sizes and the
//! difference divided, so what stays is the cost that grows with the messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::MemoryBroker;
use longshore_core::{
    Broker, Codec, Consumer, DomainEvent, Event, JsonCodec, Message, Publisher, Subscription,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Messages per `publish_batch` call, as in the bench's end-to-end scenario.
const BATCH: usize = 100;

/// The typed event both pieces decode into: a seed-format order event.
#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    /// Order id.
    order_id: String,
    /// Customer id.
    customer_id: String,
    /// Total in cents.
    total_cents: u64,
    /// Line item SKUs.
    skus: Vec<String>,
}

impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

/// One seed-format event of about 250 bytes, as `EventPublisher` would send it.
fn seed_message(i: usize) -> Result<Message, Box<dyn std::error::Error>> {
    let order = OrderPlaced {
        order_id: format!("o-{i:08}"),
        customer_id: "c-4711-0042".into(),
        total_cents: 123_456,
        skus: vec!["sku-red-shirt-l".into(), "sku-blue-mug".into()],
    };
    let event = Event::new(OrderPlaced::EVENT_TYPE, serde_json::to_value(&order)?)
        .with_aggregate_id(format!("order-{}", i % 64));
    Ok(JsonCodec.encode(&event)?)
}

/// The seed's envelope read the plainest way serde_json allows, for `decode-raw`: the same
/// four fields, the event's data straight into its typed struct.
#[derive(Deserialize)]
struct PlainEnvelope {
    /// Parsed from its text, as longshore checks it.
    event_id: uuid::Uuid,
    /// Kept as text, as longshore keeps it.
    event_type: String,
    /// The typed event, read in the same pass as the envelope.
    data: OrderPlaced,
    /// Kept as text: not parsed into a date-time.
    timestamp: String,
}

/// What is counted, by name.
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// (a) decoding one seed-format event into the typed `OrderPlaced`, as a typed handler
    /// receives it.
    Decode,
    /// The floor for (a): the same bytes read by serde_json at its best, in one pass
    /// (`std::str::from_utf8` over the payload, then `serde_json::from_str`) into
    /// [`PlainEnvelope`]. Informational, so the rest of (a) can be told apart from serde_json's
    /// own cost. Like longshore's decode it checks the whole payload is UTF-8, parses the
    /// event id as a UUID and reads the data into the user's struct. It does less: no headers
    /// read (no metadata, no aggregate id copied), no timestamp parsed (it stays a string), no
    /// CloudEvents detection, no check that the envelope is an object rather than an array, no
    /// check of the event type against the struct's, and the data is read once, straight into
    /// the struct, where longshore first finds where the data ends (so an `Event` can hold it
    /// for any handler, typed or not) and reads it into the struct afterwards, in `to_typed`.
    DecodeRaw,
    /// (b) the whole path on the memory backend: publish (batches of 100) → consumer runtime
    /// (default settings) → typed handler → ack.
    Path,
}

impl Piece {
    /// Parses `decode`, `decode-raw` or `path`.
    fn parse(s: &str) -> Option<Piece> {
        match s {
            "decode" => Some(Piece::Decode),
            "decode-raw" => Some(Piece::DecodeRaw),
            "path" => Some(Piece::Path),
            _ => None,
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// The counted part: callgrind's `--toggle-collect=cost::measured` counts inside it only.
#[inline(never)]
fn measured(work: &mut dyn FnMut() -> Res) -> Res {
    work()
}

fn main() -> Res {
    let mut args = std::env::args().skip(1);
    let usage = "usage: cost <decode|decode-raw|path> <count> [setup]";
    let piece = args.next().and_then(|a| Piece::parse(&a)).ok_or(usage)?;
    let count: usize = args.next().ok_or(usage)?.parse()?;
    let setup_only = match args.next().as_deref() {
        None => false,
        Some("setup") => true,
        Some(_) => return Err(usage.into()),
    };
    let mut count_in = |work: &mut dyn FnMut() -> Res| {
        if setup_only {
            Ok(())
        } else {
            measured(work)
        }
    };
    match piece {
        Piece::Decode => {
            let message = seed_message(1)?;
            count_in(&mut || {
                for _ in 0..count {
                    let event = JsonCodec.decode(&message)?;
                    let order: OrderPlaced = event.to_typed()?;
                    std::hint::black_box(order);
                }
                Ok(())
            })
        }
        Piece::DecodeRaw => {
            let message = seed_message(1)?;
            count_in(&mut || {
                for _ in 0..count {
                    // Checked as UTF-8 once, whole: `from_slice` checks each string it reads
                    // and costs some 1,400 instructions more on this event.
                    let text = std::str::from_utf8(&message.payload)?;
                    let plain: PlainEnvelope = serde_json::from_str(text)?;
                    let PlainEnvelope {
                        event_id,
                        event_type,
                        data,
                        timestamp,
                    } = plain;
                    std::hint::black_box((event_id, event_type, data, timestamp));
                }
                Ok(())
            })
        }
        Piece::Path => path(count, setup_only, &mut count_in),
    }
}

fn path(
    count: usize,
    setup_only: bool,
    count_in: &mut dyn FnMut(&mut dyn FnMut() -> Res) -> Res,
) -> Res {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let broker = MemoryBroker::default();
    let publisher = broker.publisher();
    let subscription = Subscription::new("cost", ["orders.#"]);
    let handled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let consumer = rt.block_on({
        let (handled, done) = (handled.clone(), done.clone());
        let subscriber = broker.subscriber();
        async move {
            subscriber.ensure_subscription(&subscription).await?;
            Consumer::new(subscriber, subscription)
                .lag_interval(None)
                .on(move |order: OrderPlaced, _ctx| {
                    let (handled, done) = (handled.clone(), done.clone());
                    async move {
                        std::hint::black_box(order);
                        if handled.fetch_add(1, Ordering::Relaxed) + 1 == count {
                            done.notify_one();
                        }
                        Ok(())
                    }
                })
                .start()
                .await
        }
    })?;
    let mut batches: Vec<Vec<Message>> = Vec::new();
    for start in (0..count).step_by(BATCH) {
        batches.push(
            (start..(start + BATCH).min(count))
                .map(seed_message)
                .collect::<Result<_, _>>()?,
        );
    }
    let mut batches = Some(batches);
    count_in(&mut || {
        let batches = batches.take().ok_or("the path runs once")?;
        rt.block_on(publish_and_wait(
            &*publisher,
            batches,
            &handled,
            &done,
            count,
        ))
    })?;
    let stats = rt.block_on(consumer.shutdown(Duration::from_secs(10)));
    if !setup_only && stats.acked != count as u64 {
        return Err(format!("acked {} of {count}", stats.acked).into());
    }
    Ok(())
}

async fn publish_and_wait(
    publisher: &dyn Publisher,
    batches: Vec<Vec<Message>>,
    handled: &AtomicUsize,
    done: &Notify,
    count: usize,
) -> Res {
    let finished = done.notified();
    tokio::pin!(finished);
    // Registered before publishing, so a wake-up that comes first is not missed.
    finished.as_mut().enable();
    for batch in batches {
        publisher
            .publish_batch("orders.placed", batch)
            .await
            .map_err(|e| e.to_string())?;
    }
    if count > 0 && handled.load(Ordering::Relaxed) < count {
        tokio::time::timeout(Duration::from_secs(300), finished)
            .await
            .map_err(|_| "the consumer did not handle every message within 300 s")?;
    }
    Ok(())
}
