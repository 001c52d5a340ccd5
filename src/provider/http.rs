//! `http.request` with reqwest (rustls): method, url, headers, `json` or `body`,
//! `expect_status` (default: any 2xx). Outputs `status`, `body` (first 1 MiB), `json` (the body
//! parsed, or null).

use serde_json::{Value as Json, json};

use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str, scalar_text};

/// Bodies kept in outputs (and the journal) at most.
const MAX_BODY: usize = 1024 * 1024;

pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let client = reqwest::Client::builder()
            .user_agent(concat!("ripcord/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Http { client }
    }
}

impl Provider for Http {
    fn invoke(&self, request: Request) -> BoxFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let p = &request.params;
            let method = param_str(p, "method").unwrap_or("GET");
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| Failure::permanent(format!("bad method `{method}`")))?;
            let url = param_str(p, "url").unwrap_or_default();
            let mut builder = client.request(method, url).timeout(request.timeout);
            if let Some(headers) = p.get("headers").and_then(Json::as_object) {
                for (k, v) in headers {
                    builder = builder.header(k, scalar_text(v).unwrap_or_default());
                }
            }
            if let Some(body) = p.get("json") {
                builder = builder.json(body);
            } else if let Some(body) = param_str(p, "body") {
                builder = builder.body(body.to_string());
            }
            let response = tokio::select! {
                r = builder.send() => r.map_err(|e| Failure::new(format!("{url}: {}", error_chain(&e))))?,
                () = request.cancel.cancelled() => return Err(Failure::new("cancelled")),
            };
            let status = response.status().as_u16();
            let bytes = tokio::select! {
                r = response.bytes() => r.map_err(|e| Failure::new(format!("{url}: reading the body: {e}")))?,
                () = request.cancel.cancelled() => return Err(Failure::new("cancelled")),
            };
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
            let parsed: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            let mut out = OutputMap::new();
            out.insert("status".into(), json!(status));
            out.insert("body".into(), json!(text));
            out.insert("json".into(), parsed);
            let expected = match p.get("expect_status") {
                Some(Json::Number(n)) => n.as_u64() == Some(u64::from(status)),
                Some(Json::Array(list)) => {
                    list.iter().any(|n| n.as_u64() == Some(u64::from(status)))
                }
                _ => (200..300).contains(&status),
            };
            if expected {
                Ok(out)
            } else {
                // The body's first line says why ("bad token"), in the message itself, not only
                // in the journal's outputs. Whole or not at all: a line cut or re-spaced here
                // could hold part of a secret that masking (later, by value) no longer finds.
                let first = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                let said = if first.len() <= 300 {
                    first.to_string()
                } else {
                    format!("({} bytes of body: in the step's outputs)", text.len())
                };
                Err(Failure {
                    nothing_ran: false,
                    message: if said.is_empty() {
                        format!("{url}: unexpected status {status}")
                    } else {
                        format!("{url}: unexpected status {status}: {said}")
                    },
                    // A server error may pass; a 4xx will not.
                    retryable: status >= 500 || status == 429,
                    outputs: out,
                })
            }
        })
    }
}

/// reqwest's error and its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
