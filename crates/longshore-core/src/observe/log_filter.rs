//! Log directives that keep credentials out of logs, and client libraries' loud targets quiet.
//!
//! Client libraries log protocol frames at `trace`: lapin's dump of the AMQP login
//! (`connection.start-ok`) writes the password as a list of byte values. longshore redacts
//! credentials in everything it prints itself, so the remaining path is a dependency's trace
//! output; capping those targets closes it wherever longshore installs or documents logging.

/// Targets capped at `debug`, whatever the rest of the filter says: they dump frames (which
/// carry credentials) at `trace`.
pub const CAPPED_LOG_TARGETS: &[&str] = &[
    "lapin",
    "amq_protocol",
    "amq_protocol_tcp",
    "amq_protocol_types",
    "amq_protocol_uri",
    "async_nats",
    "rdkafka",
    "sqlx",
    "tokio_postgres",
];

/// Targets turned down to `error` by default because they are loud at `warn` about what
/// longshore already reports in one line: lapin logs every message RabbitMQ returns (an
/// unroutable publish) with its whole body and headers; the RabbitMQ adapter turns the return
/// into `Error::Rejected` and logs exchange, topic, message id and the fix instead. A
/// directive that names one of these targets keeps its level.
pub const QUIETED_LOG_TARGETS: &[&str] = &["lapin::returned_messages"];

/// `directives` (`RUST_LOG` syntax, e.g. `"trace"` or `"info,my_service=debug"`) with every
/// [`CAPPED_LOG_TARGETS`] entry capped at `debug`, for tracing-subscriber's `EnvFilter`:
///
/// ```
/// let filter = longshore_core::observe::log_directives("trace");
/// assert!(filter.starts_with("trace,"));
/// assert!(filter.contains("lapin=debug"));
/// ```
///
/// A directive the caller wrote for a capped target at `trace` is dropped: the cap wins.
pub fn log_directives(directives: &str) -> String {
    let mut out: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !raises_a_capped_target(d))
        .collect();
    let caps: Vec<String> = CAPPED_LOG_TARGETS
        .iter()
        .map(|t| format!("{t}=debug"))
        .collect();
    out.extend(caps.iter().map(String::as_str));
    // After the caps: for tracing-subscriber the more specific target wins whatever the order.
    let quieted: Vec<String> = QUIETED_LOG_TARGETS
        .iter()
        .filter(|t| {
            !directives
                .split(',')
                .any(|d| d.trim().starts_with(&format!("{t}=")))
        })
        .map(|t| format!("{t}=error"))
        .collect();
    out.extend(quieted.iter().map(String::as_str));
    out.join(",")
}

/// Whether a directive such as `lapin=trace` or `lapin::frames[conn]=trace` turns a capped
/// target up past `debug`.
fn raises_a_capped_target(directive: &str) -> bool {
    let Some((target, level)) = directive.rsplit_once('=') else {
        return false;
    };
    let target = target.split(['[', ':']).next().unwrap_or(target);
    CAPPED_LOG_TARGETS.contains(&target) && level.trim().eq_ignore_ascii_case("trace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_callers_directives() {
        assert_eq!(
            log_directives(""),
            CAPPED_LOG_TARGETS
                .iter()
                .map(|t| format!("{t}=debug"))
                .chain(["lapin::returned_messages=error".to_string()])
                .collect::<Vec<_>>()
                .join(",")
        );
        let kept = log_directives("info,lapin::returned_messages=warn");
        assert!(kept.contains("lapin::returned_messages=warn"), "{kept}");
        assert!(
            !log_directives("lapin::returned_messages=warn").contains("returned_messages=error")
        );
        let f = log_directives("info, my_service=trace ,lapin=trace,lapin::frames=trace");
        assert!(f.starts_with("info,my_service=trace,lapin=debug"), "{f}");
        assert!(!f.contains("lapin=trace"), "{f}");
        assert!(!f.contains("lapin::frames"), "{f}");
    }
}
