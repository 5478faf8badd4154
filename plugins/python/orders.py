"""The order flow's messages (see `plugins/orders` for the Rust definitions): events in the
past tense, commands in the imperative, all in the `Orders` namespace."""

from dataclasses import dataclass

import courier


@dataclass
class OrderLine:
    sku: str
    quantity: int


@courier.message("urn:message:Orders:PaymentProcessed")
@dataclass
class PaymentProcessed:
    order_id: str
    customer: str
    lines: list[OrderLine]
    amount_cents: int
    payment_reference: str


@courier.message("urn:message:Orders:InventoryReserved")
@dataclass
class InventoryReserved:
    order_id: str
    customer: str
    lines: list[OrderLine]


@courier.message("urn:message:Orders:StockReservationFailed")
@dataclass
class StockReservationFailed:
    order_id: str
    customer: str
    missing: list[OrderLine]


@courier.message("urn:message:Orders:ShipOrder")
@dataclass
class ShipOrder:
    order_id: str
    customer: str
    lines: list[OrderLine]
