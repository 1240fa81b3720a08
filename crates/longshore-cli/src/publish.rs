//! `longshore publish`: one event from an argument or a file, or one per JSON line of stdin;
//! every event is confirmed by the backend before it is reported published.

use std::time::Duration;

use longshore::chrono::{DateTime, Utc};
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
    let when = schedule(&args)?;
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
        let result = publish(&ls, out, &args.topic, event, when).await;
        close(&ls).await;
        return result;
    }
    let ls = connect(urls).await?;
    let result = publish_lines(&ls, out, &args, &headers, when).await;
    close(&ls).await;
    result
}

/// One event per line of stdin; a bad line is reported with its number and the rest go on.
async fn publish_lines(
    ls: &Longshore,
    out: Output,
    args: &PublishArgs,
    headers: &[(String, String)],
    when: Option<DateTime<Utc>>,
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
            Ok(event) => publish(ls, out, &args.topic, event, when)
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

async fn publish(
    ls: &Longshore,
    out: Output,
    topic: &str,
    event: Event,
    when: Option<DateTime<Utc>>,
) -> Result<(), CliError> {
    let events = EventPublisher::new(ls.publisher.clone());
    let id = event.id.to_string();
    match when {
        None => {
            events.publish_to(topic, &event).await?;
            out.line(
                &json!({"published": id, "topic": topic, "event_type": event.event_type}),
                || format!("published {id} ({}) to {topic}", event.event_type),
            );
        }
        Some(when) => {
            events.publish_at(topic, &event, when).await?;
            let at = when.to_rfc3339();
            out.line(
                &json!({"published": id, "topic": topic, "event_type": event.event_type, "deliver_at": at}),
                || format!("scheduled {id} ({}) to {topic} for {at}", event.event_type),
            );
        }
    }
    Ok(())
}

/// When `--at` or `--after` asks the events to be delivered, checked before connecting.
fn schedule(args: &PublishArgs) -> Result<Option<DateTime<Utc>>, CliError> {
    if let Some(at) = &args.at {
        return DateTime::parse_from_rfc3339(at)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| CliError::Input(format!("--at {at:?}: expected an RFC 3339 time")));
    }
    let Some(after) = &args.after else {
        return Ok(None);
    };
    let delay = parse_duration(after).ok_or_else(|| {
        CliError::Input(format!(
            "--after {after:?}: expected e.g. 500ms, 30s, 15m, 24h"
        ))
    })?;
    let delay = longshore::chrono::Duration::from_std(delay)
        .map_err(|_| CliError::Input(format!("--after {after:?}: too long")))?;
    Utc::now()
        .checked_add_signed(delay)
        .map(Some)
        .ok_or_else(|| CliError::Input(format!("--after {after:?}: too long")))
}

/// `500ms`, `30s`, `15m`, `24h` (a whole number and one unit).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        for bad in ["", "5", "s", "-5s", "5d", "1.5s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
