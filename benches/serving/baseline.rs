//! The baseline: the cheapest HTTP answer this machine can give with the
//! same stack the daemon is built on.
//!
//! One hyper HTTP/1.1 connection per accepted socket, on a default tokio
//! multi-threaded runtime (as the daemon's), answering every request with
//! the same bytes the daemon serves for a credential, with the same
//! `Content-Type`. No routing, no guards, no logging: whatever the daemon
//! costs beyond this is the price of its own logic.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Serves `body` on a loopback TCP port and on the Unix socket `unix`;
/// prints `listening tcp=ADDR` on stdout once both are bound. Runs until
/// killed.
pub fn run(body_file: &Path, unix: &Path) -> std::io::Result<()> {
    let body = Bytes::from(std::fs::read(body_file)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let unix = UnixListener::bind(unix)?;
        println!("listening tcp={}", tcp.local_addr()?);
        std::io::stdout().flush()?;
        let unix_body = body.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = unix.accept().await {
                serve(stream, unix_body.clone());
            }
        });
        loop {
            let (stream, _) = tcp.accept().await?;
            let _ = stream.set_nodelay(true);
            serve(stream, body.clone());
        }
    })
}

fn serve<S>(stream: S, body: Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |_request: hyper::Request<Incoming>| {
        let mut response = hyper::Response::new(Full::new(body.clone()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        async move { Ok::<_, Infallible>(response) }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}
