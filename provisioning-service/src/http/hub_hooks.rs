//! The broker auth hooks: one route per broker format, on their own listener
//! (`--hub-auth-listen`), each turning the broker's request into [`crate::hub`]'s questions and
//! the answer into the format that broker expects. Each broker's configuration is in the README
//! ("Connecting devices to your broker"); what is checked, in docs/hub.md.
//!
//! Every route sits under `/{secret}/…`: brokers are configured with URLs, and not all of them
//! can send a header, so the shared secret only the brokers hold is a path segment (compared in
//! constant time; this router logs no paths). A wrong secret is a bare 404, so the hook is no
//! oracle for anyone else. Under it, `/hubs/{hub}/…` binds the broker to one linked hub: a
//! username of another hub is refused there (`hub::Credentials::hub`).
//!
//! Contracts, from each broker's own documentation:
//! - RabbitMQ `rabbitmq_auth_backend_http` (rabbitmq-server `deps/rabbitmq_auth_backend_http/
//!   README.md`): form posts to `user` (`username`, `password`), `vhost`, `resource`
//!   (`resource`, `name`, `permission`) and `topic` (`routing_key`); always 200 with `allow` or
//!   `deny`.
//! - EMQX 5 HTTP authentication and authorization (emqx-docs `access-control/authn/http.md`,
//!   `authz/http.md`): JSON from a template; `{"result": "allow"|"deny"}`, with `expire_at`
//!   (Unix seconds, ≥ 5.8) so the broker ends the session when the token expires. RMQTT's
//!   `rmqtt-auth-http` accepts the same JSON answer.
//! - VerneMQ webhooks (vmq-docs `plugindevelopment/webhookplugins.md`): the hook name in the
//!   `vernemq-hook` header; `{"result": "ok"}` or `{"result": {"error": "not_allowed"}}`.
//! - mosquitto-go-auth's HTTP backend (its README, "HTTP"): JSON posts to `user`, `acl`
//!   (`acc`: 1 read, 2 write, 3 read-write, 4 subscribe) and `superuser`, with
//!   `response_mode status`: 200 allows, 403 denies.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::app::App;
use crate::hub::topics::{allowed, topic_of_routing_key, Access, Identity};
use crate::hub::{self, Credentials, HubError, Principal};

/// Each broker format's routes, under a prefix that names the secret (and the hub).
fn broker_routes() -> Router<App> {
    Router::new()
        .route("/rabbitmq/user", post(rabbitmq_user))
        .route("/rabbitmq/vhost", post(rabbitmq_vhost))
        .route("/rabbitmq/resource", post(rabbitmq_resource))
        .route("/rabbitmq/topic", post(rabbitmq_topic))
        .route("/emqx/authn", post(emqx_authn))
        .route("/emqx/authz", post(emqx_authz))
        .route("/vernemq", post(vernemq))
        .route("/go-auth/user", post(go_auth_user))
        .route("/go-auth/acl", post(go_auth_acl))
        .route("/go-auth/superuser", post(go_auth_superuser))
}

/// The hook router; `secret` is what brokers put in the path, `hub` the linked hub whose
/// broker it is (`/{secret}/hubs/{hub}/…`). The shorter `/{secret}/…` names no hub and serves
/// only a service with one linked hub.
pub fn router(app: App) -> Router {
    Router::new()
        .nest("/{secret}/hubs/{hub}", broker_routes())
        .nest("/{secret}", broker_routes())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(app)
}

/// A hook call whose path carries the brokers' secret (checked in constant time) and names a
/// linked hub (or the only one): the broker of that hub. Anything else is a bare 404: the route
/// does not exist for a stranger.
struct Broker {
    app: App,
    /// Lowercase, as linked hubs are kept.
    hub: String,
}

#[derive(Deserialize)]
struct BrokerPath {
    secret: String,
    hub: Option<String>,
}

impl FromRequestParts<App> for Broker {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, StatusCode> {
        let Path(path) = Path::<BrokerPath>::from_request_parts(parts, app)
            .await
            .map_err(|_| StatusCode::NOT_FOUND)?;
        let settings = app.settings();
        match settings.hub_auth_secret.as_deref() {
            Some(expected) if bool::from(expected.as_bytes().ct_eq(path.secret.as_bytes())) => {}
            _ => return Err(StatusCode::NOT_FOUND),
        }
        let linked = settings.linked_hubs.as_slice();
        let hub = match path.hub {
            Some(hub) => linked.iter().find(|h| h.eq_ignore_ascii_case(&hub)),
            None if linked.len() == 1 => linked.first(),
            None => None,
        }
        .ok_or(StatusCode::NOT_FOUND)?;
        Ok(Self {
            app: app.clone(),
            hub: hub.to_ascii_lowercase(),
        })
    }
}

/// Authenticates, logging the outcome (never the password). `None` means deny.
async fn authenticate(
    app: &App,
    credentials: Credentials<'_>,
) -> Result<Option<Principal>, StatusCode> {
    match hub::authenticate(app.gatekeeper(), credentials, OffsetDateTime::now_utc()).await {
        Ok(principal) => {
            tracing::info!(username = credentials.username, "hub connect allowed");
            Ok(Some(principal))
        }
        Err(HubError::Refused(reason)) => {
            tracing::info!(username = credentials.username, %reason, "hub connect refused");
            Ok(None)
        }
        Err(fault) => {
            let chain = crate::telemetry::error_chain(&fault);
            tracing::error!(error = %chain, "hub connect check failed");
            // A broker treats an error as "no answer" (EMQX: ignore; RabbitMQ: refuse): never
            // an allow.
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Whether `username` may `access` `topic`: the topic rules, and the client still admitted
/// (a revoked device's live session is refused at its next publish or subscription).
async fn may(
    app: &App,
    hub: &str,
    username: &str,
    access: Access,
    topic: &str,
) -> Result<bool, StatusCode> {
    let mut ok = Identity::of_username(username).is_some_and(|who| allowed(&who, access, topic));
    if ok {
        ok = match hub::still_admitted(app.gatekeeper(), hub, username).await {
            Ok(admitted) => admitted,
            Err(fault) => {
                let chain = crate::telemetry::error_chain(&fault);
                tracing::error!(error = %chain, "hub topic check failed");
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
    }
    if !ok {
        tracing::info!(username, ?access, topic, "hub topic refused");
    }
    Ok(ok)
}

// --- RabbitMQ ---

fn allow_deny(ok: bool) -> &'static str {
    if ok {
        "allow"
    } else {
        "deny"
    }
}

#[derive(Deserialize)]
struct RabbitUser {
    username: String,
    password: String,
    client_id: Option<String>,
}

async fn rabbitmq_user(
    Broker { app, hub }: Broker,
    Form(form): Form<RabbitUser>,
) -> Result<&'static str, StatusCode> {
    let credentials = Credentials {
        hub: &hub,
        client_id: form.client_id.as_deref(),
        username: &form.username,
        password: &form.password,
        peer: None,
    };
    Ok(allow_deny(authenticate(&app, credentials).await?.is_some()))
}

#[derive(Deserialize)]
struct RabbitVhost {
    username: String,
}

async fn rabbitmq_vhost(
    Broker { hub: served, .. }: Broker,
    Form(form): Form<RabbitVhost>,
) -> &'static str {
    allow_deny(
        Identity::of_username(&form.username).is_some() && hub::serves(&served, &form.username),
    )
}

#[derive(Deserialize)]
struct RabbitResource {
    username: String,
    resource: String,
    name: String,
    permission: String,
}

/// The MQTT plugin's own objects: the `amq.topic` exchange (read and write; the topic check
/// narrows them) and the client's subscription queues, `mqtt-subscription-{clientId}qos{0,1}`.
async fn rabbitmq_resource(_: Broker, Form(form): Form<RabbitResource>) -> &'static str {
    let ok = match (
        Identity::of_username(&form.username),
        form.resource.as_str(),
    ) {
        (Some(_), "exchange") => form.name == "amq.topic" && form.permission != "configure",
        (Some(Identity::Device(id)), "queue") => {
            form.name == format!("mqtt-subscription-{id}qos0")
                || form.name == format!("mqtt-subscription-{id}qos1")
        }
        (Some(Identity::Backend(_)), "queue") => form.name.starts_with("mqtt-subscription-"),
        _ => false,
    };
    allow_deny(ok)
}

#[derive(Deserialize)]
struct RabbitTopic {
    username: String,
    permission: String,
    routing_key: String,
}

async fn rabbitmq_topic(
    Broker { app, hub }: Broker,
    Form(form): Form<RabbitTopic>,
) -> Result<&'static str, StatusCode> {
    let access = match form.permission.as_str() {
        "write" => Access::Publish,
        "read" => Access::Subscribe,
        _ => return Ok("deny"),
    };
    let Some(who) = Identity::of_username(&form.username) else {
        return Ok("deny");
    };
    let topic = topic_of_routing_key(&who, &form.routing_key);
    Ok(allow_deny(
        may(&app, &hub, &form.username, access, &topic).await?,
    ))
}

// --- EMQX (and RMQTT) ---

#[derive(Deserialize)]
struct EmqxAuthn {
    clientid: Option<String>,
    username: String,
    password: String,
    peerhost: Option<String>,
}

async fn emqx_authn(
    Broker { app, hub }: Broker,
    Json(body): Json<EmqxAuthn>,
) -> Result<Json<Value>, StatusCode> {
    let credentials = Credentials {
        hub: &hub,
        client_id: body.clientid.as_deref(),
        username: &body.username,
        password: &body.password,
        peer: body.peerhost.as_deref(),
    };
    Ok(Json(match authenticate(&app, credentials).await? {
        Some(principal) => json!({
            "result": "allow",
            "is_superuser": false,
            "expire_at": principal.expires_at(),
        }),
        None => json!({"result": "deny"}),
    }))
}

#[derive(Deserialize)]
struct EmqxAuthz {
    username: String,
    topic: String,
    action: String,
}

async fn emqx_authz(
    Broker { app, hub }: Broker,
    Json(body): Json<EmqxAuthz>,
) -> Result<Json<Value>, StatusCode> {
    let access = match body.action.as_str() {
        "publish" => Access::Publish,
        "subscribe" => Access::Subscribe,
        _ => return Ok(Json(json!({"result": "deny"}))),
    };
    let ok = may(&app, &hub, &body.username, access, &body.topic).await?;
    Ok(Json(json!({"result": allow_deny(ok)})))
}

// --- VerneMQ ---

#[derive(Deserialize)]
struct VerneTopic {
    topic: String,
}

#[derive(Deserialize)]
struct VerneHook {
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    peer_addr: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    topics: Vec<VerneTopic>,
}

fn verne(ok: bool) -> Json<Value> {
    Json(if ok {
        json!({"result": "ok"})
    } else {
        json!({"result": {"error": "not_allowed"}})
    })
}

async fn vernemq(
    Broker { app, hub }: Broker,
    headers: HeaderMap,
    Json(body): Json<VerneHook>,
) -> Result<Json<Value>, StatusCode> {
    let username = body.username.as_deref().unwrap_or_default();
    let hook = headers
        .get("vernemq-hook")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(verne(match hook {
        "auth_on_register" | "auth_on_register_m5" => {
            let credentials = Credentials {
                hub: &hub,
                client_id: body.client_id.as_deref(),
                username,
                password: body.password.as_deref().unwrap_or_default(),
                peer: body.peer_addr.as_deref(),
            };
            authenticate(&app, credentials).await?.is_some()
        }
        "auth_on_publish" | "auth_on_publish_m5" => match body.topic.as_deref() {
            Some(topic) => may(&app, &hub, username, Access::Publish, topic).await?,
            None => false,
        },
        "auth_on_subscribe" | "auth_on_subscribe_m5" => {
            let mut ok = !body.topics.is_empty();
            for t in &body.topics {
                ok = ok && may(&app, &hub, username, Access::Subscribe, &t.topic).await?;
            }
            ok
        }
        _ => false,
    }))
}

// --- mosquitto-go-auth ---

#[derive(Deserialize)]
struct GoAuthUser {
    username: String,
    password: String,
    clientid: Option<String>,
}

fn status(ok: bool) -> Response {
    if ok {
        StatusCode::OK.into_response()
    } else {
        StatusCode::FORBIDDEN.into_response()
    }
}

async fn go_auth_user(
    Broker { app, hub }: Broker,
    Json(body): Json<GoAuthUser>,
) -> Result<Response, StatusCode> {
    let credentials = Credentials {
        hub: &hub,
        client_id: body.clientid.as_deref(),
        username: &body.username,
        password: &body.password,
        peer: None,
    };
    Ok(status(authenticate(&app, credentials).await?.is_some()))
}

#[derive(Deserialize)]
struct GoAuthAcl {
    username: String,
    topic: String,
    acc: u8,
}

async fn go_auth_acl(
    Broker { app, hub }: Broker,
    Json(body): Json<GoAuthAcl>,
) -> Result<Response, StatusCode> {
    let (user, topic) = (&body.username, &body.topic);
    let ok = match body.acc {
        // Read (receive) and subscribe are both the subscription's question.
        1 | 4 => may(&app, &hub, user, Access::Subscribe, topic).await?,
        2 => may(&app, &hub, user, Access::Publish, topic).await?,
        3 => {
            may(&app, &hub, user, Access::Subscribe, topic).await?
                && may(&app, &hub, user, Access::Publish, topic).await?
        }
        _ => false,
    };
    Ok(status(ok))
}

/// Nobody is a superuser: every client goes through the ACL.
async fn go_auth_superuser(_: Broker) -> Response {
    status(false)
}
