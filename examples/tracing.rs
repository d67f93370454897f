//! One request's trace across two services: a client calls `Orders`, whose handler calls
//! `Stock`; every call's spans print when they close, all with the same `trace_id`, each
//! `parent_id` the `span_id` of the span before it.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example tracing
//! ```
//!
//! The spans are `tracing` spans (`rpc.client`, `rpc.server`, at INFO), printed here by
//! tracing-subscriber's `fmt` layer. The trace starts with `rpc::TraceContext::new_root()`;
//! a program that runs OpenTelemetry gets the same from its own spans with the `otel`
//! feature (see the README), and its exporter sees the request as one trace.

use std::error::Error;

use rpc::TraceContext;
use tracing_subscriber::fmt::format::FmtSpan;

/// The back service.
#[rpc::service]
pub trait Stock {
    /// How many of `item` are left.
    async fn left(&self, item: String) -> u32;
}

/// The front service: its handler asks the back one.
#[rpc::service]
pub trait Orders {
    /// Places an order if `item` is in stock.
    async fn order(&self, item: String) -> bool;
}

struct Warehouse;

impl Stock for Warehouse {
    async fn left(&self, item: String) -> u32 {
        u32::try_from(item.len()).unwrap_or(0)
    }
}

struct Shop {
    stock: StockClient,
}

impl Orders for Shop {
    async fn order(&self, item: String) -> bool {
        // This call runs inside the `rpc.server` span of the order: it carries the trace on.
        matches!(self.stock.left(item).await, Ok(n) if n > 0)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // Print every span when it closes, with its fields (outcome, duration_us, the ids).
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();

    let stock = rpc::Server::builder()
        .serve(Warehouse.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let stock_addr = stock.local_addr().ok_or("no TCP address")?;
    let stock = tokio::spawn(stock.run());
    let shop = rpc::Server::builder()
        .serve(
            Shop {
                stock: StockClient::connect(stock_addr).await?,
            }
            .into_service(),
        )
        .bind("127.0.0.1:0")
        .await?;
    let shop_addr = shop.local_addr().ok_or("no TCP address")?;
    let shop = tokio::spawn(shop.run());

    let client = OrdersClient::connect(shop_addr).await?;
    let request = TraceContext::new_root();
    println!("request trace {:032x}", request.trace_id());
    let placed = request.scope(client.order("teapot".into())).await?;
    println!("order placed: {placed}");

    shop.abort();
    stock.abort();
    Ok(())
}
