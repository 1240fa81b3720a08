//! The order's domain events: what the store keeps and the broker carries.

use longshore::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderOpened {
    pub order_id: String,
    pub customer: String,
}
impl DomainEvent for OrderOpened {
    const EVENT_TYPE: &'static str = "order_opened";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderLineAdded {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_cents: u64,
}
impl DomainEvent for OrderLineAdded {
    const EVENT_TYPE: &'static str = "order_line_added";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub total_cents: u64,
}
impl DomainEvent for OrderConfirmed {
    const EVENT_TYPE: &'static str = "order_confirmed";
}
