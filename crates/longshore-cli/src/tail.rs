//! `longshore tail`: follows the messages of the topics matching a pattern, as `kcat -C` and
//! `nats sub` do.

use futures::StreamExt;
use longshore::{Codec, Delivery, JsonCodec, Subscription};
use serde_json::{json, Value};

use crate::cli::{Format, TailArgs};
use crate::connect::{close, connect, Urls};
use crate::error::CliError;
use crate::output::Output;

/// Runs `tail` until `--count` messages were printed, the stream ends, or Ctrl-C.
pub async fn run(urls: &Urls, out: Output, args: TailArgs) -> Result<(), CliError> {
    longshore::topic::validate_pattern(&args.pattern)?;
    let ls = connect(urls).await?;
    let replays = ls.subscriber.capabilities().replay;
    if args.from_start && !replays {
        close(&ls).await;
        return Err(CliError::Input(format!(
            "--from-start: {} keeps no messages for a subscription made after them (kafka:// does)",
            ls.backend
        )));
    }
    let temporary = args.subscription.is_none();
    let name = args.subscription.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("longshore-tail-{}", &id[..8])
    });
    let sub = Subscription::new(name.clone(), [args.pattern.clone()]);
    let mut stream = match ls.subscriber.subscribe(&sub).await {
        Ok(s) => s,
        Err(e) => {
            close(&ls).await;
            return Err(e.into());
        }
    };
    eprintln!(
        "tailing {} on {}subscription {name} ({}); Ctrl-C stops",
        args.pattern,
        if temporary { "temporary " } else { "" },
        ls.backend
    );
    let format = args.format.unwrap_or(if out.json {
        Format::Json
    } else {
        Format::Pretty
    });
    let mut shown = 0u64;
    let result = loop {
        if args.count.is_some_and(|n| shown >= n) {
            break Ok(());
        }
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        match next {
            None => break Ok(()),
            Some(Err(e)) => eprintln!("longshore: {e} (the stream goes on)"),
            Some(Ok(delivery)) => {
                print(out, format, &delivery);
                shown += 1;
                if let Err(e) = delivery.ack().await {
                    break Err(e.into());
                }
            }
        }
    };
    drop(stream);
    if temporary {
        // Ctrl-C and --count both end here; a kill does not (the subscription stays).
        match ls.subscriber.remove_subscription(&name).await {
            Ok(()) => {}
            Err(longshore::Error::Unsupported { .. }) => eprintln!(
                "longshore: {} cannot remove subscriptions: {name} stays (delete it with the broker's tools)",
                ls.backend
            ),
            Err(e) => eprintln!("longshore: removing {name}: {e}"),
        }
    }
    close(&ls).await;
    result
}

fn print(out: Output, format: Format, d: &Delivery) {
    let m = &d.message();
    let event = JsonCodec.decode(m).ok();
    match format {
        Format::Json => {
            let mut v = json!({
                "topic": d.topic,
                "id": m.id,
                "key": m.key,
                "headers": m.headers,
            });
            match &event {
                Some(e) => {
                    v["event_type"] = Value::String(e.event_type.clone());
                    v["timestamp"] = Value::String(longshore::rfc3339(&e.timestamp));
                    v["data"] = serde_json::Value::clone(&e.data);
                }
                None => v["payload"] = Value::String(String::from_utf8_lossy(&m.payload).into()),
            }
            out.json_line(&v);
        }
        Format::Pretty => {
            let body = match &event {
                Some(e) => format!("{} {}", e.event_type, e.data),
                None => String::from_utf8_lossy(&m.payload).into_owned(),
            };
            println!("{}  {}  {}", d.topic, m.id, body);
        }
    }
}
