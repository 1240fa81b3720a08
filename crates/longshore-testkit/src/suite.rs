//! The registration table: which scenarios the suite runs, in which group, needing which
//! capability, and the macros that turn the table into tests.
//!
//! The table lives in two macros, [`__broker_scenarios!`](crate::__broker_scenarios) and
//! [`__store_scenarios!`](crate::__store_scenarios), so that one list both generates an
//! adapter's tests and fills [`SCENARIOS`](crate::SCENARIOS) / [`STORE_SCENARIOS`](crate::STORE_SCENARIOS).
//! An entry is `<scenario>` or `<scenario> if <capability>`, the capability a
//! [`Capabilities`](longshore_core::Capabilities) field; a backend without it prints
//! `SKIPPED: <scenario>: <backend> lacks <capability>`.

/// One registered scenario, as listed in [`SCENARIOS`](crate::SCENARIOS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The behaviour group: the module under `behaviour` or `store` holding the scenario.
    pub group: &'static str,
    /// The scenario (and its test's) name.
    pub name: &'static str,
    /// The [`Capabilities`](longshore_core::Capabilities) field it needs, if any.
    pub requires: Option<&'static str>,
}

/// The transport, runtime, observability and connection suite, for a broker type.
///
/// `$broker` is a type implementing [`Broker`](longshore_core::Broker), `$url` an expression
/// for the URL the fixture connects to. Scenarios the backend cannot run are listed after
/// `skip:` with the reason, which each skipped test prints; a name that is no scenario fails
/// the generated `skip_list_names_known_scenarios` test.
///
/// `raw:` names an `async fn(&str) -> Arc<dyn RawPublisher>` that opens the broker's own
/// client on the URL, for the bad-input scenarios (without it they write through longshore's
/// publisher and skip the kinds that need more than it allows).
///
/// ```ignore
/// longshore_testkit::conformance!(longshore_kafka::KafkaBroker, common::url(), raw: common::raw, skip: [
///     concurrent_subscribe_and_close => "needs Apache Kafka: tansu wedges the group",
/// ]);
/// ```
#[macro_export]
macro_rules! conformance {
    ($broker:ty, $url:expr $(, raw: $raw:path)? $(, skip: [$($skip:ident => $reason:expr),* $(,)?])? $(,)?) => {
        const __LONGSHORE_SKIP: &[(&str, &str)] = &[$($((stringify!($skip), $reason)),*)?];
        async fn __longshore_fixture(scenario: &str) -> Option<$crate::Fixture> {
            if let Some((_, reason)) = __LONGSHORE_SKIP.iter().find(|(name, _)| *name == scenario) {
                $crate::skipped(scenario, reason);
                return None;
            }
            let url: String = $url.to_string();
            #[allow(unused_mut)]
            let mut fixture = $crate::Fixture::connect::<$broker>(&url).await?;
            $(fixture = fixture.with_raw($raw(&url).await);)?
            Some(fixture)
        }
        #[test]
        fn skip_list_names_known_scenarios() {
            $crate::check_skip_list(__LONGSHORE_SKIP);
        }
        $crate::__broker_scenarios!(tests __longshore_fixture);
    };
}

/// The event-store suite, for a `$factory` path: an async fn returning
/// `Option<impl StoreFactory>` (`None` after printing why, to skip).
#[macro_export]
macro_rules! store_conformance {
    ($factory:path) => {
        async fn __longshore_store(_scenario: &str) -> Option<impl $crate::StoreFactory> {
            $factory().await
        }
        $crate::__store_scenarios!(tests __longshore_store);
    };
}

/// The broker table. Kept in one place: add a scenario here and to its group's module.
#[doc(hidden)]
#[macro_export]
macro_rules! __broker_scenarios {
    ($($mode:tt)+) => {
        $crate::__emit! { ($($mode)+) behaviour
            publish_conformance: publish [
                publish_then_subscribe_keeps_id_payload_headers_key,
                batch_publish_keeps_order if ordered_by_key,
                a_large_batch_streams_in_order if ordered_by_key,
                many_concurrent_callers_share_one_publisher,
                routable_and_unroutable_callers_hear_their_own_outcome,
                concurrent_publishers_and_subscribers,
                many_topics_at_once,
                same_id_twice_is_delivered_once if dedup_window,
            ]
            routing_conformance: routing [
                topic_isolation,
                fanout_and_competing_consumers,
                wildcard_star,
                wildcard_hash,
                hash_matches_zero_words,
                several_patterns_on_one_subscription,
                ordering_per_key_single_consumer if ordered_by_key,
            ]
            settlement_conformance: settlement [
                nack_redelivers,
                redelivered_message_is_whole,
                nack_with_delay_redelivers,
                delayed_nack_waits_before_redelivery if native_delay,
                unacked_message_blocks_next_with_prefetch_one,
                redelivery_counts_attempts,
                dropped_consumer_then_new_one_gets_everything,
                unsettled_at_close_come_back_at_once,
                buffered_at_close_come_back_at_once,
                close_with_an_idle_stream_is_prompt,
            ]
            lifecycle_conformance: lifecycle [
                reopen_repeatedly_without_loss,
                concurrent_subscribe_and_close,
                subscription_keeps_messages_before_consumer_starts,
                publisher_close_flushes_everything,
                closed_publisher_refuses,
                stream_outlives_its_subscriber_handle,
            ]
            limits_conformance: limits [
                empty_batch_is_ok,
                large_payload_at_limit,
                oversized_payload_is_rejected,
                invalid_names_are_rejected,
            ]
            dead_letters_conformance: dead_letters [
                dead_letter_carries_reason_and_topic,
                dead_letters_can_be_replayed,
                poison_body_dead_lettered_consumer_continues,
                malformed_inputs_are_dead_lettered_with_reason,
                unknown_event_type_dead_lettered,
            ]
            retry_conformance: retry [
                retry_then_success,
                retries_exhausted_go_to_dlq,
                permanent_error_goes_to_dlq_at_once,
                continue_after_repeated_errors,
            ]
            dispatch_conformance: dispatch [
                typed_dispatch_by_event_type,
                unknown_event_type_acked_when_configured,
                inbox_skips_duplicates,
                event_stream_forwards_in_batches,
                concurrency_is_bounded,
            ]
            shutdown_conformance: shutdown [
                graceful_shutdown_drains_in_flight,
                shutdown_deadline_acks_nothing_unfinished,
            ]
            ordering_conformance: ordering [
                ordered_by_key_keeps_each_keys_order if ordered_by_key,
                failing_message_delays_only_its_key if ordered_by_key,
                ordered_shutdown_midway_loses_nothing if ordered_by_key,
            ]
            batch_conformance: batch [
                batch_outcomes_settle_each_delivery,
                ordered_batches_keep_each_keys_order if ordered_by_key,
            ]
            flow_control_conformance: flow_control [
                pause_stops_delivery_and_resume_continues,
                breaker_opens_after_failures_and_closes_after_probe,
            ]
            time_conformance: time [
                scheduled_message_is_not_delivered_early_and_once,
                scheduled_message_survives_its_publisher,
                cancelled_schedule_is_never_delivered if cancel_schedule,
                expired_message_never_reaches_the_handler,
                delayed_retry_survives_a_consumer_restart if native_delay,
            ]
            relay_conformance: relay [
                relay_skips_an_unroutable_event_type,
            ]
            observability_conformance: observability [
                trace_context_crosses_the_broker,
                metrics_count_every_outcome,
            ]
            health_conformance: health [
                health_reports_activity,
                health_is_ready_when_connected,
                closing_a_handle_leaves_the_others_ready,
                health_not_ready_after_close,
                lag_counts_waiting_messages,
                lag_of_unknown_subscription_is_invalid_name,
                acks_before_close_are_kept,
            ]
            bad_input_conformance: bad_input [
                bad_input_invalid_json,
                bad_input_json_number,
                bad_input_json_string,
                bad_input_json_null,
                bad_input_json_array,
                bad_input_positional_array,
                bad_input_missing_event_id,
                bad_input_event_id_not_uuid,
                bad_input_event_id_number,
                bad_input_missing_event_type,
                bad_input_event_type_number,
                bad_input_event_type_null,
                bad_input_missing_timestamp,
                bad_input_timestamp_words,
                bad_input_timestamp_number,
                bad_input_timestamp_day_first,
                bad_input_missing_data,
                bad_input_data_does_not_fit,
                bad_input_not_utf8,
                bad_input_empty,
                bad_input_whitespace,
                bad_input_deep_nesting,
                bad_input_deep_nesting_untyped,
                bad_input_deep_unread_field,
                bad_input_unknown_event_type,
                bad_input_garbage_traceparent,
                bad_input_zoneless_seed_timestamp,
                bad_input_many_headers_valid,
                bad_input_many_headers_undecodable,
                bad_input_huge_header_undecodable,
                bad_input_over_limit_undecodable,
            ]
            cloudevents_conformance: cloudevents [
                cloudevents_binary_round_trip,
                cloudevents_structured_round_trip,
                cloudevents_and_seed_mix_on_one_subscription,
                cloudevents_from_a_raw_client_decode,
            ]
            connect_conformance: connect [
                connect_to_closed_port_is_a_typed_error,
                malformed_url_is_config_error,
                wrong_password_is_unauthorized,
            ]
        }
    };
}

/// The store table.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_scenarios {
    ($($mode:tt)+) => {
        $crate::__emit! { ($($mode)+) store
            store_append_conformance: append [
                append_and_read_back_intact,
                expected_version_no_stream,
                expected_version_exact,
                concurrent_appends_exactly_one_wins,
                idempotent_reappend,
                partial_duplicate_is_rejected,
            ]
            store_aggregate_conformance: aggregate [
                execute_loads_decides_and_appends,
                execute_redelivered_command_appends_once,
                execute_retries_a_version_conflict,
                execute_concurrent_writers_all_land,
            ]
            store_read_conformance: read [
                read_stream_from_and_limit,
                read_all_global_order,
            ]
            store_catch_up_conformance: catch_up [
                catch_up_resumes_from_checkpoint,
                catch_up_follows_live_appends,
            ]
            store_outbox_conformance: outbox [
                outbox_relay_publishes_every_event,
                inbox_remembers_processed_ids,
            ]
            store_relay_conformance: relay [
                relay_parks_a_refused_row_and_the_rest_arrive,
                relay_routes_and_filters_by_topic_mapper,
            ]
            store_observability_conformance: observability [
                outbox_and_catch_up_metrics,
            ]
        }
    };
}

/// Expands a table: `tests <fixture fn>` into one test module per group, `table` into a
/// `&[Scenario]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __emit {
    ((tests $fixture:ident) $root:ident
     $($module:ident : $group:ident [$($name:ident $(if $cap:ident)?),+ $(,)?])+) => {
        $(
            mod $module {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        // `None`: skipped (listed, or unreachable outside CI), reason printed.
                        let Some(fixture) = super::$fixture(stringify!($name)).await else {
                            return;
                        };
                        $(
                            if !fixture.supports(stringify!($name), stringify!($cap), |c| c.$cap) {
                                return;
                            }
                        )?
                        $crate::$root::$group::$name(&fixture).await;
                    }
                )+
            }
        )+
    };
    ((table) $root:ident
     $($module:ident : $group:ident [$($name:ident $(if $cap:ident)?),+ $(,)?])+) => {
        &[$($($crate::Scenario {
            group: stringify!($group),
            name: stringify!($name),
            requires: $crate::__requires!($($cap)?),
        },)+)+]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __requires {
    () => {
        None
    };
    ($cap:ident) => {
        Some(stringify!($cap))
    };
}

/// Every broker scenario [`conformance!`](crate::conformance) runs, in table order.
pub const SCENARIOS: &[Scenario] = crate::__broker_scenarios!(table);

/// Every store scenario [`store_conformance!`](crate::store_conformance) runs.
pub const STORE_SCENARIOS: &[Scenario] = crate::__store_scenarios!(table);

/// Fails when a skip list names something that is not a broker scenario (a typo would
/// otherwise skip nothing, silently).
pub fn check_skip_list(skips: &[(&str, &str)]) {
    for (name, reason) in skips {
        assert!(
            SCENARIOS.iter().any(|s| s.name == *name),
            "skip list names `{name}`, which is no conformance scenario"
        );
        assert!(
            !reason.trim().is_empty(),
            "skipping `{name}` needs a reason"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{SCENARIOS, STORE_SCENARIOS};

    #[test]
    fn scenario_names_are_unique() {
        let mut seen = HashSet::new();
        for s in SCENARIOS.iter().chain(STORE_SCENARIOS) {
            assert!(seen.insert(s.name), "{} is registered twice", s.name);
        }
    }

    #[test]
    fn required_capabilities_are_fields() {
        let known = [
            "native_delay",
            "native_schedule",
            "cancel_schedule",
            "replay",
            "ordered_by_key",
            "dedup_window",
            "delivery_count",
        ];
        for s in SCENARIOS {
            if let Some(cap) = s.requires {
                assert!(known.contains(&cap), "{}: unknown capability {cap}", s.name);
            }
        }
    }
}
