//! A custom allocation webhook over HTTPS on loopback (the PKI's `localhost` certificate), as a
//! test scripts it: it records every request and answers with the [`Reply`] set last.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use axum_server::tls_rustls::RustlsConfig;
use serde_json::Value;

use crate::pki::Pki;

/// How the webhook answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status, empty body.
    Status(u16),
    /// 200 with this body, served as JSON.
    Raw(&'static str),
    /// The JSON body after this long.
    Late(Duration, Value),
}

#[derive(Default)]
struct Shared {
    reply: Option<Reply>,
    requests: Vec<Value>,
}

pub struct Webhook {
    /// The URL to put in `customAllocationDefinition.webhookUrl` (with a key in the query, as
    /// Azure Functions have it).
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    handle: axum_server::Handle,
}

/// The key in [`Webhook::url`]'s query: it must never show in a log or a response.
pub const WEBHOOK_KEY: &str = "webhook-function-key-s3cret";

impl Webhook {
    pub async fn start(pki: &Pki, reply: Reply) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            reply: Some(reply),
            requests: Vec::new(),
        }));
        let state = shared.clone();
        let router = axum::Router::new().route(
            "/api/allocate",
            post(move |Json(request): Json<Value>| {
                let state = state.clone();
                async move {
                    let reply = {
                        let mut s = state.lock().unwrap();
                        s.requests.push(request);
                        s.reply.clone().unwrap()
                    };
                    answer(reply).await
                }
            }),
        );
        let tls = RustlsConfig::from_pem_file(pki.cert_file(), pki.key_file())
            .await
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
        tokio::spawn(server.serve(router.into_make_service()));
        Self {
            url: format!("https://localhost:{port}/api/allocate?code={WEBHOOK_KEY}"),
            shared,
            handle,
        }
    }

    pub fn reply_with(&self, reply: Reply) {
        self.shared.lock().unwrap().reply = Some(reply);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().unwrap().requests.clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn answer(reply: Reply) -> Response {
    match reply {
        Reply::Json(body) => Json(body).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Raw(text) => ([("content-type", "application/json")], text).into_response(),
        Reply::Late(delay, body) => {
            tokio::time::sleep(delay).await;
            Json(body).into_response()
        }
    }
}
