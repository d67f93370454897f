//! Metrics of calls, served to Prometheus: a service, a few calls (some failing), and the
//! scrape endpoint's text.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example metrics
//! ```
//!
//! The `rpc` crate records through the `metrics` facade (feature `metrics`); whichever
//! recorder the program installs receives them. Here it is metrics-exporter-prometheus's,
//! without its hyper-based listener: `PrometheusBuilder::build_recorder` gives a recorder
//! whose handle's `render()` is the Prometheus text, and `http.rs` serves that on a
//! plain tokio listener. The demo scrapes its own endpoint once, prints the `rpc_` lines
//! and exits; a real program would keep the endpoint up for Prometheus.

use std::error::Error;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

mod http;

/// A service with one method that answers and one that never does.
#[rpc::service]
pub trait Inventory {
    /// How many of `item` are in stock.
    async fn stock(&self, item: String) -> u32;
    /// Never answers: its callers' deadlines end it.
    async fn audit(&self);
}

struct Shop;

impl Inventory for Shop {
    async fn stock(&self, item: String) -> u32 {
        u32::try_from(item.len()).unwrap_or(u32::MAX)
    }

    async fn audit(&self) {
        std::future::pending::<()>().await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // 1. The recorder, installed for the whole process, and its handle.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    // 2. The scrape endpoint, stopped at the end of the demo.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let endpoint = tokio::spawn(http::serve(listener, handle, stopped));
    println!("metrics at http://{metrics_addr}/metrics");

    // 3. A server and some calls: five answered, two past their deadline.
    let server = rpc::Server::builder()
        .serve(Shop.into_service())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr().ok_or("the server has no TCP address")?;
    let server = tokio::spawn(server.run());
    let client = InventoryClient::connect(addr).await?;
    for item in ["apple", "pear", "fig", "plum", "quince"] {
        client.stock(item.into()).await?;
    }
    for _ in 0..2 {
        let late = client.audit().timeout(Duration::from_millis(20)).await;
        println!(
            "audit: {}",
            late.err().map_or("answered".into(), |e| e.to_string())
        );
    }

    // 4. What Prometheus would see.
    let text = http::scrape(metrics_addr).await?;
    for line in text.lines().filter(|l| l.starts_with("rpc_")) {
        println!("{line}");
    }

    let _ = stop.send(());
    endpoint.await?;
    server.abort();
    Ok(())
}
