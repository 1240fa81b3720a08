//! `longshore store`: read a stream, read or follow the global order, append with an
//! expected version, migrate the SQL schema.

use std::sync::Arc;
use std::time::Duration;

use longshore::{Event, EventStore, ExpectedVersion, RecordedEvent};
use serde_json::json;

use crate::cli::StoreCommand;
use crate::connect::{close, connect, Urls};
use crate::error::CliError;
use crate::output::Output;

/// How often `read-all --follow` looks for new events (the store port has no push).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Runs one `store` command.
pub async fn run(urls: &Urls, out: Output, command: StoreCommand) -> Result<(), CliError> {
    let append = match &command {
        StoreCommand::Append {
            expect,
            event_type,
            data,
            ..
        } => Some((expected(expect)?, event_type.clone(), parse(data)?)),
        _ => None,
    };
    let ls = connect(urls).await?;
    let result = async {
        let store = ls.store()?;
        match command {
            StoreCommand::Read {
                stream,
                from,
                limit,
            } => {
                let events = store.read_stream(&stream, from.max(1), limit).await?;
                print(out, &events);
                Ok(())
            }
            StoreCommand::ReadAll {
                from,
                limit,
                follow,
            } => read_all(&store, out, from, limit, follow).await,
            StoreCommand::Append { stream, .. } => {
                let Some((expected, event_type, data)) = append else {
                    return Ok(());
                };
                let event = Event::new(event_type, data).with_aggregate_id(stream.clone());
                let id = event.id.to_string();
                let r = store.append(&stream, expected, vec![event]).await?;
                out.line(
                    &json!({"appended": id, "stream": stream, "version": r.version, "position": r.position, "written": r.written}),
                    || format!("appended {id} to {stream} at version {} (position {})", r.version, r.position),
                );
                Ok(())
            }
            StoreCommand::Migrate => {
                // Connecting created or upgraded the schema (the adapters refuse a newer one).
                out.line(&json!({"migrated": true, "backend": ls.backend}), || {
                    format!("{}: the store's schema is up to date", ls.backend)
                });
                Ok(())
            }
        }
    }
    .await;
    close(&ls).await;
    result
}

async fn read_all(
    store: &Arc<dyn EventStore>,
    out: Output,
    from: u64,
    limit: usize,
    follow: bool,
) -> Result<(), CliError> {
    let mut after = from;
    loop {
        let events = store.read_all(after, limit.max(1)).await?;
        print(out, &events);
        if let Some(last) = events.last() {
            after = last.position;
        }
        if !follow {
            return Ok(());
        }
        if events.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

fn expected(text: &str) -> Result<ExpectedVersion, CliError> {
    match text.trim() {
        "any" => Ok(ExpectedVersion::Any),
        "none" | "no-stream" => Ok(ExpectedVersion::NoStream),
        n => n.parse().map(ExpectedVersion::Exact).map_err(|_| {
            CliError::Input(format!(
                "invalid --expect {text:?}: use any, none, or a version number"
            ))
        }),
    }
}

fn parse(data: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(data).map_err(|e| CliError::Input(format!("invalid JSON: {e}")))
}

fn print(out: Output, events: &[RecordedEvent]) {
    if out.json {
        for e in events {
            out.json_line(&json!({
                "stream": e.stream_id,
                "version": e.version,
                "position": e.position,
                "id": e.event.id.to_string(),
                "event_type": e.event.event_type,
                "timestamp": longshore::rfc3339(&e.event.timestamp),
                "data": e.event.data,
            }));
        }
        return;
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.position.to_string(),
                e.stream_id.clone(),
                e.version.to_string(),
                e.event.event_type.clone(),
                e.event.id.to_string(),
                e.event.data.to_string(),
            ]
        })
        .collect();
    out.table(
        &["position", "stream", "version", "type", "id", "data"],
        &rows,
    );
}
