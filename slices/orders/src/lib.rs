//! The `orders` example slice: takes an order by calling `inventory` and `pricing`.
//!
//! Route: `POST /orders` with `{"item": "book", "qty": 2}` answers
//! `{"order_id", "item", "qty", "unit_price", "total", "reserved": true, "version", "inventory_version"}`:
//! `version` is this slice's own (one source builds `orders:1.0.0`, crate `slice-orders`, and `:2.0.0`, crate
//! `slice-orders-v2`) and `inventory_version` the one of the `inventory` that reserved the stock (empty when
//! it did not say), so a test can tell which versions served one request. It asks `pricing` first
//! (no side effects, and an unknown item ends there with 404), then reserves with `inventory`.
//! Errors from either callee are answered as they came. The callees' artifacts can be changed with
//! the config keys `inventory` and `pricing`.

use std::sync::atomic::{AtomicU64, Ordering};

use aether_sdk::{json, Config, Context, Method, Request, Response, Route, Slice, Status};

pub const INVENTORY: &str = "org.aether.examples:inventory:1.0.0";
pub const PRICING: &str = "org.aether.examples:pricing:1.0.0";

const QTY_MAX: i64 = 1_000;
const ITEM_BYTES_MAX: usize = 64;

pub struct Orders {
    ctx: Context,
    inventory: String,
    pricing: String,
    next_order: AtomicU64,
}

/// A checked order request.
struct OrderRequest {
    item: String,
    qty: i64,
}

impl Slice for Orders {
    const NAME: &'static str = "orders";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("create")];
    const ROUTES: &'static [Route] = &[Route::post("/orders", "create")];

    fn start(ctx: Context, config: &Config) -> Result<Orders, aether_sdk::Error> {
        Ok(Orders {
            ctx,
            inventory: config.get("inventory").unwrap_or(INVENTORY).to_owned(),
            pricing: config.get("pricing").unwrap_or(PRICING).to_owned(),
            next_order: AtomicU64::new(1),
        })
    }

    fn call(&self, _method: &str, request: &Request<'_>) -> Response {
        match parse_order(request.body()) {
            Ok(order) => self.create(&order),
            Err(detail) => Response::error(Status::BadRequest, &detail),
        }
    }
}

impl Orders {
    fn create(&self, order: &OrderRequest) -> Response {
        let price = self.ctx.call_params(&self.pricing, "price", &[("item", &order.item)], b"");
        if !price.is_ok() {
            return price;
        }
        let Some(unit_cents) = json::parse(&price.body).ok().and_then(|v| v.get("unit_price_cents")?.as_i64()) else {
            return Response::error(Status::Internal, "pricing answered without `unit_price_cents`");
        };
        let qty = order.qty.to_string();
        let reserved = self.ctx.call_params(&self.inventory, "reserve", &[("item", &order.item), ("qty", &qty)], b"");
        if !reserved.is_ok() {
            return reserved;
        }
        let inventory_version = json::parse(&reserved.body)
            .ok()
            .and_then(|v| v.get("version")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        let order_id = format!("{}-{}", self.ctx.node_id(), self.next_order.fetch_add(1, Ordering::Relaxed));
        Response::json(
            json::Object::new()
                .str("order_id", &order_id)
                .str("item", &order.item)
                .int("qty", order.qty)
                .num("unit_price", unit_cents as f64 / 100.0)
                .num("total", (unit_cents * order.qty) as f64 / 100.0)
                .bool("reserved", true)
                .str("version", Self::VERSION)
                .str("inventory_version", &inventory_version)
                .finish(),
        )
    }
}

fn parse_order(body: &[u8]) -> Result<OrderRequest, String> {
    let value = json::parse(body).map_err(|e| format!("body: {e}"))?;
    let item = value.get("item").and_then(json::Value::as_str).ok_or("`item` must be a string")?;
    if item.is_empty() || item.len() > ITEM_BYTES_MAX {
        return Err(format!("`item` must be 1 to {ITEM_BYTES_MAX} bytes"));
    }
    let qty = value.get("qty").and_then(json::Value::as_i64).ok_or("`qty` must be an integer")?;
    if !(1..=QTY_MAX).contains(&qty) {
        return Err(format!("`qty` must be between 1 and {QTY_MAX}"));
    }
    Ok(OrderRequest { item: item.to_owned(), qty })
}

aether_sdk::export_slice!(Orders);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_bodies_are_checked() {
        assert!(parse_order(br#"{"item": "book", "qty": 2}"#).is_ok());
        for bad in [&br#"{"item": "book"}"#[..], br#"{"item": 3, "qty": 2}"#, br#"{"item": "book", "qty": 0}"#, b"nope"]
        {
            assert!(parse_order(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn without_a_host_the_callees_are_unavailable() {
        let orders = Orders::start(Context::detached("n1"), &Config::default()).unwrap();
        let bytes = aether_sdk::RequestBuilder::new().body(&br#"{"item": "book", "qty": 2}"#[..]).encode().unwrap();
        let response = orders.call("create", &Request::parse(&bytes).unwrap());
        assert_eq!(response.status, Status::Unavailable);
    }
}
