//! The `inventory` example slice: stock and reservations for the orders flow.
//!
//! No routes: it is reached only through slice calls. Method `reserve` with path parameters `item`
//! and `qty` takes `qty` from stock and answers `{"item", "reserved", "left"}`; `NotFound` for an
//! item it does not stock, `Conflict` when stock is short. Stock is per instance and starts full.
//! Every reservation also carries `"version"`, the crate's: one source builds `inventory:1.0.0` (crate
//! `slice-inventory`) and `:2.0.0` (crate `slice-inventory-v2`), and `orders` passes it on.

use std::collections::HashMap;
use std::sync::Mutex;

use aether_sdk::{json, Config, Context, Method, Request, Response, Slice, Status};

const STOCK_START: &[(&str, i64)] = &[("book", 1_000), ("pen", 5_000), ("mug", 200)];

pub struct Inventory {
    stock: Mutex<HashMap<&'static str, i64>>,
}

impl Slice for Inventory {
    const NAME: &'static str = "inventory";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("reserve")];

    fn start(_ctx: Context, _config: &Config) -> Result<Inventory, aether_sdk::Error> {
        Ok(Inventory { stock: Mutex::new(STOCK_START.iter().copied().collect()) })
    }

    fn call(&self, _method: &str, request: &Request<'_>) -> Response {
        let (Some(item), Some(qty)) = (request.param("item"), request.param("qty")) else {
            return Response::error(Status::BadRequest, "parameters `item` and `qty` are required");
        };
        match qty.parse::<i64>() {
            Ok(qty) if qty > 0 => self.reserve(item, qty),
            _ => Response::error(Status::BadRequest, "`qty` must be a positive integer"),
        }
    }
}

impl Inventory {
    fn reserve(&self, item: &str, qty: i64) -> Response {
        // A poisoned lock only means another call panicked; the map of integers is still whole.
        let mut stock = self.stock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(left) = stock.get_mut(item) else {
            return Response::error(Status::NotFound, &format!("unknown item `{item}`"));
        };
        if *left < qty {
            return Response::error(Status::Conflict, &format!("only {left} of `{item}` left"));
        }
        *left -= qty;
        Response::json(
            json::Object::new()
                .str("item", item)
                .int("reserved", qty)
                .int("left", *left)
                .str("version", Self::VERSION)
                .finish(),
        )
    }
}

aether_sdk::export_slice!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    fn reserve(inventory: &Inventory, item: &str, qty: &str) -> Response {
        let bytes = RequestBuilder::new().param("item", item).param("qty", qty).encode().unwrap();
        inventory.call("reserve", &Request::parse(&bytes).unwrap())
    }

    #[test]
    fn reservations_take_stock_until_it_runs_out() {
        let inventory = Inventory::start(Context::detached("n1"), &Config::default()).unwrap();
        let first = reserve(&inventory, "mug", "150");
        assert!(first.is_ok());
        let body = json::parse(&first.body).unwrap();
        assert_eq!(body.get("version").and_then(json::Value::as_str), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(reserve(&inventory, "mug", "51").status, Status::Conflict);
        assert!(reserve(&inventory, "mug", "50").is_ok());
        assert_eq!(reserve(&inventory, "lamp", "1").status, Status::NotFound);
        assert_eq!(reserve(&inventory, "mug", "-1").status, Status::BadRequest);
    }
}
