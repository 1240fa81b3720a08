//! `longshore dlq`: list, show, replay and purge dead letters, on [`longshore::DeadLetters`].

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use longshore::{DeadLetterFilter, DeadLetterRecord, ReplayStep};
use serde_json::{json, Value};

use crate::cli::{DlqCommand, Filters};
use crate::connect::{close, connect, Urls};
use crate::error::CliError;
use crate::output::Output;
use crate::time::parse_time;

/// Runs one `dlq` command.
pub async fn run(urls: &Urls, out: Output, command: DlqCommand) -> Result<(), CliError> {
    // Bad input is refused before connecting.
    let filter = match &command {
        DlqCommand::List { filters, .. }
        | DlqCommand::Replay { filters, .. }
        | DlqCommand::Purge { filters, .. } => filter(filters)?,
        DlqCommand::Show { .. } => DeadLetterFilter::all(),
    };
    if let DlqCommand::Purge { yes: false, .. } = &command {
        return Err(CliError::Input(
            "purge removes dead letters for good: add --yes (and check them with `dlq list` first)"
                .into(),
        ));
    }
    let ls = connect(urls).await?;
    let result = match command {
        DlqCommand::List { subscription, .. } => {
            let letters = ls.dead_letters(&subscription).list(&filter).await?;
            print_list(out, &letters);
            Ok(())
        }
        DlqCommand::Show { subscription, id } => {
            match ls.dead_letters(&subscription).show(&id).await? {
                Some(letter) => {
                    print_one(out, &letter);
                    Ok(())
                }
                None => Err(CliError::NoSuchLetter { subscription, id }),
            }
        }
        DlqCommand::Replay {
            subscription,
            to,
            dry_run,
            ..
        } => replay(&ls, out, &subscription, &filter, to.as_deref(), dry_run).await,
        DlqCommand::Purge { subscription, .. } => {
            let purged = ls.dead_letters(&subscription).purge(&filter).await?;
            for id in &purged {
                out.line(&json!({"purged": id}), || format!("purged {id}"));
            }
            out.line(&json!({"summary": {"purged": purged.len()}}), || {
                format!(
                    "purged {} dead letters from dlq.{subscription}",
                    purged.len()
                )
            });
            Ok(())
        }
    };
    close(&ls).await;
    result
}

fn filter(f: &Filters) -> Result<DeadLetterFilter, CliError> {
    let now = chrono::Utc::now();
    Ok(DeadLetterFilter {
        ids: f.ids.clone(),
        event_type: f.event_type.clone(),
        reason: f.reason.clone(),
        since: f.since.as_deref().map(|t| parse_time(t, now)).transpose()?,
        until: f.until.as_deref().map(|t| parse_time(t, now)).transpose()?,
    })
}

fn time(letter: &DeadLetterRecord) -> String {
    letter
        .dead_lettered_at
        .map(|t| longshore::rfc3339(&t))
        .unwrap_or_default()
}

fn summary(letter: &DeadLetterRecord) -> Value {
    json!({
        "id": letter.id,
        "event_type": letter.event_type,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "original_topic": letter.original_topic,
        "subscription": letter.subscription,
        "dead_lettered_at": letter.dead_lettered_at.map(|t| longshore::rfc3339(&t)),
    })
}

fn print_list(out: Output, letters: &[DeadLetterRecord]) {
    if out.json {
        letters.iter().for_each(|l| out.json_line(&summary(l)));
        return;
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.event_type
                    .clone()
                    .unwrap_or_else(|| "(undecodable)".into()),
                l.reason.clone().unwrap_or_default(),
                l.attempts
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into()),
                l.original_topic.clone().unwrap_or_default(),
                time(l),
            ]
        })
        .collect();
    out.table(
        &["id", "type", "reason", "attempts", "topic", "time"],
        &rows,
    );
    println!("{} dead letters", letters.len());
}

fn print_one(out: Output, letter: &DeadLetterRecord) {
    let m = &letter.message;
    let body = serde_json::from_slice::<Value>(&m.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&m.payload).into()));
    if out.json {
        let mut v = summary(letter);
        v["key"] = json!(m.key);
        v["headers"] = json!(m.headers);
        v["body"] = body;
        out.json_line(&v);
        return;
    }
    let rows = [
        ("id", letter.id.clone()),
        ("type", letter.event_type.clone().unwrap_or_default()),
        ("reason", letter.reason.clone().unwrap_or_default()),
        (
            "attempts",
            letter.attempts.map(|a| a.to_string()).unwrap_or_default(),
        ),
        ("topic", letter.original_topic.clone().unwrap_or_default()),
        ("time", time(letter)),
        ("key", m.key.clone().unwrap_or_default()),
    ];
    for (k, v) in rows {
        println!("{k:<9}{v}");
    }
    println!("headers:");
    for (k, v) in &m.headers {
        println!("  {k}: {v}");
    }
    println!("body:");
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
}

async fn replay(
    ls: &longshore::Longshore,
    out: Output,
    subscription: &str,
    filter: &DeadLetterFilter,
    to: Option<&str>,
    dry_run: bool,
) -> Result<(), CliError> {
    let letters = ls.dead_letters(subscription);
    if dry_run {
        let chosen = letters.list(filter).await?;
        for l in &chosen {
            let topic = to.map(str::to_string).or(l.original_topic.clone());
            out.line(&json!({"would_replay": l.id, "topic": topic}), || {
                format!(
                    "would replay {} to {}",
                    l.id,
                    topic.as_deref().unwrap_or("(no topic)")
                )
            });
        }
        out.line(&json!({"summary": {"would_replay": chosen.len()}}), || {
            format!("dry run: {} dead letters would be replayed", chosen.len())
        });
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    if std::io::stderr().is_terminal() && !out.json {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} replayed {msg}") {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let report = letters
        .replay_with(filter, to, |step| match step {
            ReplayStep::Replayed { id, topic } => {
                bar.inc(1);
                if out.json {
                    out.json_line(&json!({"replayed": id, "topic": topic}));
                }
            }
            ReplayStep::NoTopic { id } => {
                bar.suspend(|| eprintln!("longshore: {id}: no original topic and no --to; kept"))
            }
            ReplayStep::Failed { id, error } => {
                bar.suspend(|| eprintln!("longshore: replaying {id} failed ({error}); kept"))
            }
        })
        .await;
    bar.finish_and_clear();
    let report = report?;
    out.line(
        &json!({"summary": {
            "replayed": report.replayed.len(),
            "failed": report.failed.len(),
            "no_topic": report.no_topic.len(),
            "not_chosen": report.not_chosen,
        }}),
        || {
            format!(
                "replayed {} from dlq.{subscription}; kept {} failed, {} without a topic, {} not chosen",
                report.replayed.len(),
                report.failed.len(),
                report.no_topic.len(),
                report.not_chosen
            )
        },
    );
    let failed = report.failed.len() + report.no_topic.len();
    if failed > 0 {
        return Err(CliError::Partial {
            failed,
            total: failed + report.replayed.len(),
        });
    }
    Ok(())
}
