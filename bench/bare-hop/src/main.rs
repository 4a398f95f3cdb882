//! `bare-hop <listen addr> <upstream base URL> <threads>`: every request is forwarded to
//! `<upstream base URL><path>` as a GET and its answer body returned with status 200 — the
//! smallest hop with the gateway's layout (one current-thread runtime and one pooled client per
//! server thread, listeners sharing the port with `SO_REUSEPORT`), for the benchmark's table.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, Protocol, Socket, Type};

fn listener(addr: SocketAddr) -> std::net::TcpListener {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    socket.into()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().expect("listen address").parse().unwrap();
    let upstream: &'static str = args.next().expect("upstream base URL").leak();
    let threads: usize = args.next().map_or(2, |n| n.parse().unwrap());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener(addr);
            std::thread::spawn(move || serve(listener, upstream))
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

fn serve(listener: std::net::TcpListener, upstream: &'static str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        // Read (and drop) the request body, like a proxy must.
                        let _ = req.into_body().collect().await;
                        let uri = format!("{upstream}{path}");
                        let upstream_request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
                        let body = match client.request(upstream_request).await {
                            Ok(answer) => answer.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default(),
                            Err(_) => Bytes::new(),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}
