//! The `pricing` example slice: unit prices for the orders flow.
//!
//! No routes: it is reached only through slice calls. Method `price` with path parameter `item`
//! answers `{"item", "unit_price_cents"}`, or `NotFound` for an item it does not sell.

use aether_sdk::{json, Config, Context, Method, Request, Response, Slice, Status};

/// Prices in cents, so totals are exact.
const PRICES_CENTS: &[(&str, i64)] = &[("book", 1250), ("pen", 125), ("mug", 800)];

pub struct Pricing;

impl Slice for Pricing {
    const NAME: &'static str = "pricing";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const METHODS: &'static [Method] = &[Method::new("price")];

    fn start(_ctx: Context, _config: &Config) -> Result<Pricing, aether_sdk::Error> {
        Ok(Pricing)
    }

    fn call(&self, _method: &str, request: &Request<'_>) -> Response {
        let Some(item) = request.param("item") else {
            return Response::error(Status::BadRequest, "parameter `item` is missing");
        };
        match PRICES_CENTS.iter().find(|(name, _)| *name == item) {
            Some((_, cents)) => {
                Response::json(json::Object::new().str("item", item).int("unit_price_cents", *cents).finish())
            }
            None => Response::error(Status::NotFound, &format!("unknown item `{item}`")),
        }
    }
}

aether_sdk::export_slice!(Pricing);

#[cfg(test)]
mod tests {
    use super::*;
    use aether_sdk::RequestBuilder;

    fn price(item: &str) -> Response {
        let bytes = RequestBuilder::new().param("item", item).encode().unwrap();
        Pricing.call("price", &Request::parse(&bytes).unwrap())
    }

    #[test]
    fn known_items_have_prices_and_unknown_are_not_found() {
        let book = json::parse(&price("book").body).unwrap();
        assert_eq!(book.get("unit_price_cents").and_then(json::Value::as_i64), Some(1250));
        assert_eq!(price("spaceship").status, Status::NotFound);
    }
}
