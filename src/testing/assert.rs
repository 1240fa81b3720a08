//! `assert_published!` and `assert_dead_lettered!`: assertions that print the bus's
//! recorded traffic when they fail.

/// Asserts that a [`TestBus`](crate::testing::TestBus) published an event of type `T`:
/// `assert_published!(bus, T)`, `assert_published!(bus, T, |e| e.id == "o-1")` or
/// `assert_published!(bus, T, count = 2)`. On failure it panics with the recorded traffic.
#[macro_export]
macro_rules! assert_published {
    ($bus:expr, $ty:ty, count = $n:expr) => {{
        let found = $bus.published::<$ty>();
        let want: usize = $n;
        if found.count() != want {
            panic!(
                "expected {} published {:?} event(s), found {}\n{}",
                want,
                <$ty as $crate::DomainEvent>::EVENT_TYPE,
                found.count(),
                found.traffic()
            );
        }
    }};
    ($bus:expr, $ty:ty, $pred:expr) => {{
        let found = $bus.published::<$ty>();
        if !found.iter().any($pred) {
            panic!(
                "no published {:?} event matches {}\n{}",
                <$ty as $crate::DomainEvent>::EVENT_TYPE,
                stringify!($pred),
                found.traffic()
            );
        }
    }};
    ($bus:expr, $ty:ty) => {{
        let found = $bus.published::<$ty>();
        if found.is_empty() {
            panic!(
                "no {:?} event was published\n{}",
                <$ty as $crate::DomainEvent>::EVENT_TYPE,
                found.traffic()
            );
        }
    }};
}

/// Asserts that a [`TestBus`](crate::testing::TestBus) dead-lettered a delivery whose reason
/// contains the given text: `assert_dead_lettered!(bus, "empty order")`, or only deliveries of
/// events of type `T`: `assert_dead_lettered!(bus, T, "empty order")`. On failure it panics
/// with the recorded traffic.
#[macro_export]
macro_rules! assert_dead_lettered {
    ($bus:expr, $ty:ty, $reason:expr) => {{
        let found = $bus.dead_lettered().with_reason($reason);
        let traffic = found.traffic().clone();
        if found.of::<$ty>().is_empty() {
            panic!(
                "no {:?} event was dead-lettered with a reason containing {:?}\n{}",
                <$ty as $crate::DomainEvent>::EVENT_TYPE,
                $reason,
                traffic
            );
        }
    }};
    ($bus:expr, $reason:expr) => {{
        let found = $bus.dead_lettered().with_reason($reason);
        if found.is_empty() {
            panic!(
                "nothing was dead-lettered with a reason containing {:?}\n{}",
                $reason,
                found.traffic()
            );
        }
    }};
}
