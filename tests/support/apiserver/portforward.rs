//! `pods/portforward` as kube-apiserver and the kubelet serve it over a websocket, the way
//! kube's `Api::portforward` speaks it: subprotocol `v4.channel.k8s.io`, for port number `i`
//! in the request a data channel `2i` and an error channel `2i+1`. Each binary message is one
//! channel byte followed by payload; the first message on each channel carries the port
//! (little-endian u16). The bytes of a data channel go to the pod's port — here a stand-in's
//! local TCP listener ([`super::pods::Pods`]) — and back. When nothing listens on the port the
//! kubelet's message goes on the error channel; when the pod's side closes, the websocket is
//! closed.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::Shared;

pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// `ports=15000,3002` from the query.
fn ports(query: &str) -> Vec<u16> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("ports="))
        .flat_map(|v| {
            v.replace("%2C", ",")
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect()
}

fn plain(status: u16, text: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text.to_string())))
        .unwrap()
}

/// Answer the upgrade request for `namespace/pod`, and serve the forward once upgraded.
pub async fn serve(
    shared: Arc<Shared>,
    mut req: hyper::Request<Incoming>,
    namespace: &str,
    pod: &str,
) -> hyper::Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let wants_websocket = header("upgrade").eq_ignore_ascii_case("websocket");
    let offers_v4 = header("sec-websocket-protocol")
        .split(',')
        .any(|p| p.trim() == PROTOCOL);
    let key = header("sec-websocket-key");
    if !wants_websocket || !offers_v4 || key.is_empty() {
        return plain(
            400,
            "port-forward needs a websocket upgrade offering v4.channel.k8s.io",
        );
    }
    let ports = ports(req.uri().query().unwrap_or_default());
    if ports.is_empty() {
        return plain(400, "no ports to forward");
    }
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(shared.store.clone(), namespace);
    if !matches!(pods.get_opt(pod).await, Ok(Some(_))) {
        return plain(404, &format!("pods \"{pod}\" not found"));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let (namespace, pod) = (namespace.to_string(), pod.to_string());
    let tasks = shared.clone();
    let task = tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        forward(shared, ws, &namespace, &pod, &ports).await;
    });
    // hyper hands the upgraded connection over: `ApiServer::stop` cuts it through this.
    tasks.upgraded.lock().unwrap().push(task.abort_handle());
    hyper::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header(
            "sec-websocket-accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        )
        .header("sec-websocket-protocol", PROTOCOL)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::binary(bytes)
}

async fn forward<S>(
    shared: Arc<Shared>,
    ws: WebSocketStream<S>,
    namespace: &str,
    pod: &str,
    ports: &[u16],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        for ch in [data, error] {
            if sink.send(frame(ch, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
        let target = shared
            .pods
            .address(&shared.store, namespace, pod, *port)
            .await;
        let connected = match target {
            Some(addr) => tokio::net::TcpStream::connect(addr).await.ok(),
            None => None,
        };
        let Some(stream) = connected else {
            let message = format!(
                "error forwarding port {port} to pod {pod}, uid : failed to execute portforward \
                 in network namespace: failed to connect to localhost:{port} inside namespace: \
                 connection refused"
            );
            let _ = sink.send(frame(error, message.as_bytes())).await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        };
        let (mut read, write) = stream.into_split();
        writers.push(write);
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(frame(data, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut all_closed = false;
    loop {
        tokio::select! {
            out = rx.recv(), if !all_closed => match out {
                Some(m) => if sink.send(m).await.is_err() { break },
                // Every port's pod side closed: the forward is over.
                None => {
                    all_closed = true;
                    let _ = sink.send(Message::Close(None)).await;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 => {
                    let ch = bytes[0] as usize;
                    if ch.is_multiple_of(2) {
                        if let Some(w) = writers.get_mut(ch / 2) {
                            let _ = w.write_all(&bytes[1..]).await;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    for r in readers {
        r.abort();
    }
}
