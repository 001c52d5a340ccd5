//! `tcp.connect`: succeeds when a TCP connection to host:port opens.

use serde_json::json;

use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str};

pub struct Tcp;

impl Provider for Tcp {
    fn invoke(&self, request: Request) -> BoxFuture {
        Box::pin(async move {
            let host = param_str(&request.params, "host")
                .unwrap_or_default()
                .to_string();
            // Whole numbers only (a `number` input may give 5432.0); never a default port.
            let port = request
                .params
                .get("port")
                .and_then(|p| p.as_f64())
                .filter(|n| n.fract() == 0.0 && (1.0..=65535.0).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| {
                    Failure::permanent(format!(
                        "port {} is not a port (1-65535)",
                        request.params.get("port").unwrap_or(&json!(null))
                    ))
                })?;
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            let stream = tokio::select! {
                r = connect => r.map_err(|e| Failure::new(format!("cannot connect to {host}:{port}: {e}")))?,
                () = request.cancel.cancelled() => return Err(Failure::new("cancelled")),
            };
            let address = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let mut out = OutputMap::new();
            out.insert("address".into(), json!(address));
            Ok(out)
        })
    }
}
