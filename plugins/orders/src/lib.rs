//! The messages of the order flow (seed 004): `OrderPlaced` → payment → inventory → shipping,
//! with notification following every step. Events are named in the past tense, commands in
//! the imperative; all share the `Orders` namespace.

use courier_sdk::Message;
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
}

/// A customer placed an order (published by the shop; the flow starts here).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:OrderPlaced")]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer: String,
    pub lines: Vec<OrderLine>,
    pub amount_cents: u64,
}

/// The payment for an order went through.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:PaymentProcessed")]
pub struct PaymentProcessed {
    pub order_id: String,
    pub customer: String,
    pub lines: Vec<OrderLine>,
    pub amount_cents: u64,
    pub payment_reference: String,
}

/// The payment for an order was declined; the order ends here.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:PaymentFailed")]
pub struct PaymentFailed {
    pub order_id: String,
    pub customer: String,
    pub reason: String,
}

/// Stock was set aside for every line of an order.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:InventoryReserved")]
pub struct InventoryReserved {
    pub order_id: String,
    pub customer: String,
    pub lines: Vec<OrderLine>,
}

/// Stock could not cover an order; the order ends here.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:StockReservationFailed")]
pub struct StockReservationFailed {
    pub order_id: String,
    pub customer: String,
    pub missing: Vec<OrderLine>,
}

/// Command to the shipping endpoint: ship this reserved order.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:ShipOrder")]
pub struct ShipOrder {
    pub order_id: String,
    pub customer: String,
    pub lines: Vec<OrderLine>,
}

/// An order left the warehouse; the order ends here.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:OrderShipped")]
pub struct OrderShipped {
    pub order_id: String,
    pub customer: String,
    pub carrier: String,
    pub tracking_number: String,
}
