//! Prints the AsyncAPI 3.0 document of the order service: what it publishes, what its billing
//! consumer receives, the payload schemas of its event types, and the broker it talks to.
//!
//! ```sh
//! cargo run --features asyncapi --example asyncapi_document
//! LONGSHORE_URL='kafka://127.0.0.1:9092?codec=cloudevents' cargo run --features asyncapi --example asyncapi_document
//! ```
//!
//! `docs/asyncapi/order_service.json` is this document for
//! `kafka://127.0.0.1:9092?codec=cloudevents`; `tests/asyncapi.rs` checks that it is current
//! and validates it against the official AsyncAPI 3.0 schema.

use longshore::asyncapi::AsyncApi;
use longshore::{Config, DomainEvent, Subscription};

/// An order was placed.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct OrderCreated {
    /// The order.
    pub order_id: String,
    /// Its total, in cents.
    pub total_cents: u64,
    /// The lines ordered.
    pub lines: Vec<OrderLine>,
}

/// One line of an order.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

impl DomainEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order_created";
}

/// A payment was taken for an order.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PaymentTaken {
    /// The order paid.
    pub order_id: String,
    /// The amount, in cents.
    pub amount_cents: u64,
}

impl DomainEvent for PaymentTaken {
    const EVENT_TYPE: &'static str = "payment_taken";
}

/// The order service's declaration, on the broker at `url`.
pub fn document(url: &str) -> AsyncApi {
    AsyncApi::new("order service", "1.0.0")
        .description("Takes orders and bills them (longshore's order_service example).")
        .server(url)
        .publishes::<OrderCreated>(None)
        .consumes::<OrderCreated>(&Subscription::new("billing", ["events.order_created"]))
        .publishes::<PaymentTaken>(None)
        .consumes::<PaymentTaken>(&Subscription::new("audit", ["events.#"]))
}

#[allow(dead_code)] // `tests/asyncapi.rs` includes this file for `document`.
fn main() {
    println!("{}", document(&Config::from_env().url).to_json_string());
}
