//! A tiny HTTP/1.1 responder for Prometheus' scrapes: every request gets the recorder's
//! text, then the connection closes. Enough for a scraper; not a web server.

use std::future::Future;
use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most of a request read before answering (a scraper's GET is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// Answers scrapes on `listener` with `handle`'s text, one connection at a time, until
/// `shutdown` resolves.
pub(crate) async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: impl Future) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    eprintln!("metrics endpoint: accept failed: {err}");
                    continue;
                }
            },
        };
        if let Err(err) = answer(stream, &handle).await {
            eprintln!("metrics endpoint: {err}");
        }
    }
}

/// Reads the request's head (up to the blank line, at most [`MAX_REQUEST`] bytes) and
/// answers with the metrics.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let body = handle.render();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `http://{addr}/metrics` as Prometheus would, and returns the body.
pub(crate) async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!(
            "unexpected response: {response:.200}"
        ))),
    }
}
