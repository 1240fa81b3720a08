//! `longshore publish`: one event from an argument or a file, or one per JSON line of stdin;
//! every event is confirmed by the backend before it is reported published.

use longshore::{Event, EventPublisher, Longshore};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::cli::PublishArgs;
use crate::connect::{close, connect, Urls};
use crate::error::CliError;
use crate::output::Output;

/// Runs `publish`.
pub async fn run(urls: &Urls, out: Output, args: PublishArgs) -> Result<(), CliError> {
    let headers = parse_headers(&args.headers)?;
    let single = match (&args.file, args.data.as_deref()) {
        (Some(path), _) => {
            Some(
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| CliError::Io {
                        what: format!("reading {}", path.display()),
                        source,
                    })?,
            )
        }
        (None, Some("-")) => None,
        (None, Some(data)) => Some(data.to_string()),
        (None, None) => {
            return Err(CliError::Input(
                "no data: give DATA, --file F, or - for JSON lines on stdin".into(),
            ))
        }
    };
    if let Some(text) = &single {
        // Checked before connecting: bad input never waits on a broker.
        let data = parse_json(text).map_err(CliError::Input)?;
        let event_type = args
            .event_type
            .clone()
            .ok_or_else(|| CliError::Input("--type is required".into()))?;
        let ls = connect(urls).await?;
        let event = build(&event_type, data, args.key.clone(), &headers);
        let result = publish(&ls, out, &args.topic, event).await;
        close(&ls).await;
        return result;
    }
    let ls = connect(urls).await?;
    let result = publish_lines(&ls, out, &args, &headers).await;
    close(&ls).await;
    result
}

/// One event per line of stdin; a bad line is reported with its number and the rest go on.
async fn publish_lines(
    ls: &Longshore,
    out: Output,
    args: &PublishArgs,
    headers: &[(String, String)],
) -> Result<(), CliError> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let (mut total, mut failed, mut number) = (0usize, 0usize, 0usize);
    loop {
        let line = lines.next_line().await.map_err(|source| CliError::Io {
            what: "reading stdin".into(),
            source,
        })?;
        let Some(line) = line else { break };
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let event = parse_json(&line).and_then(|v| line_event(v, args, headers));
        let outcome = match event {
            Ok(event) => publish(ls, out, &args.topic, event)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            failed += 1;
            eprintln!("longshore: line {number}: {e}");
        }
    }
    if failed > 0 {
        return Err(CliError::Partial { failed, total });
    }
    Ok(())
}

/// The event a stdin line stands for: with `--type`, the line is the data; otherwise it is an
/// object with `event_type` and `data` (and optionally `key`).
fn line_event(
    value: Value,
    args: &PublishArgs,
    headers: &[(String, String)],
) -> Result<Event, String> {
    if let Some(t) = &args.event_type {
        return Ok(build(t, value, args.key.clone(), headers));
    }
    let t = value
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or("no event_type in the line and no --type given")?
        .to_string();
    let key = value
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(args.key.clone());
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    Ok(build(&t, data, key, headers))
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text.trim()).map_err(|e| format!("invalid JSON: {e}"))
}

fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, CliError> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(CliError::Input(format!(
                "invalid header {h:?}: expected name=value"
            ))),
        })
        .collect()
}

fn build(
    event_type: &str,
    data: Value,
    key: Option<String>,
    headers: &[(String, String)],
) -> Event {
    let mut event = Event::new(event_type, data);
    if let Some(key) = key {
        event = event.with_aggregate_id(key);
    }
    for (k, v) in headers {
        event.metadata.headers.insert(k.clone(), v.clone());
    }
    event
}

async fn publish(ls: &Longshore, out: Output, topic: &str, event: Event) -> Result<(), CliError> {
    EventPublisher::new(ls.publisher.clone())
        .publish_to(topic, &event)
        .await?;
    let id = event.id.to_string();
    out.line(
        &json!({"published": id, "topic": topic, "event_type": event.event_type}),
        || format!("published {id} ({}) to {topic}", event.event_type),
    );
    Ok(())
}
