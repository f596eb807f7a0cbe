//! Websocket APIs as compiled for serving: one `WsStage` per stage of a `protocol = "websocket"`
//! API, holding its message routes, route selection, subprotocols and connection limits, with
//! stage variables already substituted. Built by `config::compile` on the control thread;
//! read-only on the cores.
//!
//! Owns the mapping from a message to its route (`WsStage::route_for`): the selection expression
//! picks a route key out of a text message; a key with no route, a message that is not JSON, a
//! binary message → `$default`. It does no I/O: `websocket::conn` runs what a route says.

use crate::config::Throttle;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;

use super::{DecoderLimits, MessageKind, RouteSelection};
use crate::config::{ApiConfig, IntegrationConfig, ProxyTarget, StageConfig};

/// One stage of a websocket API.
#[derive(Debug)]
pub struct WsStage {
    /// The API's name: `requestContext.apiId` in events.
    pub api: Box<str>,
    pub stage: Box<str>,
    pub selection: RouteSelection,
    /// Subprotocols the gateway accepts, in its order of preference.
    pub subprotocols: Box<[Box<str>]>,
    pub limits: WsLimits,
    pub routes: Box<[WsRoute]>,
    /// Message route keys (not `$connect`, `$disconnect`, `$default`) → index in `routes`.
    by_key: AHashMap<Box<str>, usize>,
    connect: Option<usize>,
    disconnect: Option<usize>,
    default: Option<usize>,
}

/// A connection's limits, fixed when it opens (a reload does not change them for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    pub decoder: DecoderLimits,
    pub idle_timeout: Duration,
    pub age_max: Duration,
    /// `None`: no keep-alive pings.
    pub ping_interval: Option<Duration>,
    /// Messages per second and burst allowed to one connection.
    pub connection_throttle: Option<Throttle>,
}

#[derive(Debug)]
pub struct WsRoute {
    /// As written: `$connect`, `$default`, `sendMessage`...
    pub key: Box<str>,
    pub integration: WsIntegration,
    /// An `http` integration's response body goes to the client as a text message.
    pub return_response: bool,
    /// Index into `Snapshot::route_labels` (messages in and out are counted per route).
    pub metric_id: usize,
    /// The shared throttles a message on this route passes (account, stage, route), as for
    /// HTTP routes; `limit_ids` are filled by `Snapshot::attach_limits`.
    pub throttles: Vec<(String, Throttle, u8)>,
    pub limit_ids: Vec<crate::ratelimit::LimitId>,
}

#[derive(Debug)]
pub enum WsIntegration {
    /// A static answer. On `$connect` a status other than 2xx refuses the upgrade; on a message
    /// route a non-empty body is sent back as a text message.
    Mock { status: u16, body: Box<[u8]> },
    /// The message back to its sender, same kind.
    Echo,
    /// The event JSON POSTed to this backend (no path parameters).
    Http(ProxyTarget),
}

impl WsStage {
    pub fn connect(&self) -> Option<&WsRoute> {
        self.connect.map(|i| &self.routes[i])
    }

    pub fn disconnect(&self) -> Option<&WsRoute> {
        self.disconnect.map(|i| &self.routes[i])
    }

    pub fn default_route(&self) -> Option<&WsRoute> {
        self.default.map(|i| &self.routes[i])
    }

    /// The route a message goes to: the route whose key the selection expression finds in a
    /// text message, else `$default`. `None`: neither exists (the client is told `Forbidden`).
    pub fn route_for(&self, kind: MessageKind, message: &[u8]) -> Option<&WsRoute> {
        if kind == MessageKind::Text
            && !self.by_key.is_empty()
            && let Some(key) = self.selection.select(message)
            && let Some(&i) = self.by_key.get(&*key)
        {
            return Some(&self.routes[i]);
        }
        self.default_route()
    }

    /// The subprotocol to accept: the client's first offer that the API allows.
    pub fn choose_protocol<'h>(
        &self,
        offered: impl IntoIterator<Item = &'h str>,
    ) -> Option<&'h str> {
        offered
            .into_iter()
            .find(|p| self.subprotocols.iter().any(|a| &**a == *p))
    }
}

/// Compiles one stage of a websocket API, appending a metric label per route to `labels`.
/// Errors are messages without a position (the config was validated by `load`; these are about
/// the world, e.g. a backend that does not resolve).
pub fn compile_stage(
    config: &crate::config::Config,
    api: &ApiConfig,
    stage: &StageConfig,
    labels: &mut Vec<Arc<str>>,
) -> Result<WsStage, Vec<String>> {
    let settings = api
        .websocket
        .as_ref()
        .ok_or_else(|| vec!["not a websocket API".to_string()])?;
    let selection =
        RouteSelection::parse(&settings.route_selection).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut routes = Vec::with_capacity(api.routes.len());
    for route in &api.routes {
        let integration = match &route.integration {
            IntegrationConfig::Mock { status, body, .. } => {
                match crate::config::compile::resolve(body, &stage.variables, &[]) {
                    Ok(r) => match r.as_static() {
                        Some(b) => WsIntegration::Mock {
                            status: *status,
                            body: b.into(),
                        },
                        None => {
                            errors.push(format!("route {}: body: not static", route.key_text));
                            continue;
                        }
                    },
                    Err(e) => {
                        errors.push(format!("route {}: body: {e}", route.key_text));
                        continue;
                    }
                }
            }
            IntegrationConfig::Echo => WsIntegration::Echo,
            IntegrationConfig::Http {
                uri,
                timeout_ms,
                ca,
            } => {
                let how = crate::config::compile::BackendHow {
                    timeout_ms: *timeout_ms,
                    ca: ca.as_deref(),
                    h2: false,
                };
                match crate::config::compile::proxy_target(uri, &stage.variables, &[], &how) {
                    Ok(t) => WsIntegration::Http(t),
                    Err(e) => {
                        errors.push(format!("route {}: uri: {e}", route.key_text));
                        continue;
                    }
                }
            }
            IntegrationConfig::HttpProxy { .. } => {
                errors.push(format!(
                    "route {}: http_proxy is for HTTP APIs",
                    route.key_text
                ));
                continue;
            }
        };
        labels.push(crate::config::compile::route_labels_for(
            &api.name,
            &stage.name,
            &route.key_text,
        ));
        routes.push(WsRoute {
            key: route.key_text.as_str().into(),
            integration,
            return_response: route.return_response,
            metric_id: labels.len() - 1,
            throttles: crate::config::compile::route_throttles(config, api, stage, &route.key_text),
            limit_ids: Vec::new(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let find = |k: &str| routes.iter().position(|r| &*r.key == k);
    let by_key = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.key.starts_with('$'))
        .map(|(i, r)| (r.key.clone(), i))
        .collect();
    Ok(WsStage {
        api: api.name.as_str().into(),
        stage: stage.name.as_str().into(),
        selection,
        subprotocols: settings
            .subprotocols
            .iter()
            .map(|s| s.as_str().into())
            .collect(),
        limits: WsLimits {
            decoder: DecoderLimits {
                frame_bytes_max: settings.frame_bytes_max,
                message_bytes_max: settings.message_bytes_max,
            },
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            age_max: Duration::from_millis(settings.connection_age_max_ms),
            ping_interval: (settings.ping_interval_ms > 0)
                .then(|| Duration::from_millis(settings.ping_interval_ms)),
            connection_throttle: settings.connection_throttle,
        },
        connect: find("$connect"),
        disconnect: find("$disconnect"),
        default: find("$default"),
        by_key,
        routes: routes.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CompiledIntegration, Snapshot, compile, parse};

    fn snapshot(apis: &str) -> Snapshot {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{apis}");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        compile(config, 1).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn stage(snap: &Snapshot, api: usize, stage: usize) -> &WsStage {
        let CompiledIntegration::WebSocket(ws) =
            &snap.apis[api].stages[stage].routes[0].integration
        else {
            panic!("not a websocket stage")
        };
        ws
    }

    const CHAT: &str = r#"
[[api]]
name = "chat"
protocol = "websocket"
route_selection = "$request.body.msg.kind"
subprotocols = ["v2", "v1"]
frame_bytes_max = 1000
idle_timeout_ms = 5000
ping_interval_ms = 0
[[api.route]]
key = "$connect"
integration = { type = "mock", status = 403 }
[[api.route]]
key = "send"
integration = { type = "http", uri = "http://${stageVariables.b}/send" }
return_response = true
[[api.route]]
key = "echo"
integration = { type = "mock", echo = true }
[[api.route]]
key = "$default"
integration = { type = "mock", body = "{\"error\":\"${stageVariables.e}\"}" }
[[api.stage]]
name = "prod"
variables = { b = "127.0.0.1:9000", e = "unknown" }
"#;

    #[test]
    fn stages_compile_with_routes_limits_and_variables() {
        let snap = snapshot(CHAT);
        let ws = stage(&snap, 0, 0);
        assert_eq!((&*ws.api, &*ws.stage), ("chat", "prod"));
        assert_eq!(ws.limits.decoder.frame_bytes_max, 1000);
        assert_eq!(
            ws.limits.decoder.message_bytes_max,
            crate::limits::WS_MESSAGE_BYTES_MAX
        );
        assert_eq!(ws.limits.idle_timeout, Duration::from_millis(5000));
        assert_eq!(
            ws.limits.age_max,
            Duration::from_millis(crate::limits::WS_CONNECTION_AGE_MAX_MS)
        );
        assert_eq!(ws.limits.ping_interval, None);
        assert!(matches!(
            ws.connect().map(|r| &r.integration),
            Some(WsIntegration::Mock { status: 403, .. })
        ));
        assert!(ws.disconnect().is_none());
        let Some(WsIntegration::Mock { body, .. }) = ws.default_route().map(|r| &r.integration)
        else {
            panic!()
        };
        assert_eq!(&**body, br#"{"error":"unknown"}"#);
        let send = ws
            .route_for(MessageKind::Text, br#"{"msg":{"kind":"send"}}"#)
            .unwrap();
        assert_eq!(&*send.key, "send");
        assert!(send.return_response);
        let WsIntegration::Http(t) = &send.integration else {
            panic!()
        };
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        // Metric labels: one per route, then the upgrade's.
        assert_eq!(
            &*snap.route_labels[send.metric_id],
            r#"api="chat",stage="prod",route="send""#
        );
        assert_eq!(snap.apis[0].stages[0].routes[0].key, "$connect");
    }

    #[test]
    fn messages_route_by_key_else_default() {
        let snap = snapshot(CHAT);
        let ws = stage(&snap, 0, 0);
        let key = |kind, m: &[u8]| ws.route_for(kind, m).map(|r| &*r.key);
        assert_eq!(
            key(MessageKind::Text, br#"{"msg":{"kind":"echo"}}"#),
            Some("echo")
        );
        for m in [
            &br#"{"msg":{"kind":"nope"}}"#[..],
            br#"{"msg":{"kind":"$connect"}}"#,
            br#"{"msg":{"kind":"$default"}}"#,
            br#"{"msg":"send"}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(key(MessageKind::Text, m), Some("$default"), "{m:?}");
        }
        // Binary messages are not evaluated.
        assert_eq!(
            key(MessageKind::Binary, br#"{"msg":{"kind":"echo"}}"#),
            Some("$default")
        );
    }

    #[test]
    fn no_default_route_means_no_route() {
        let snap = snapshot(
            "[[api]]\nname = \"w\"\nprotocol = \"websocket\"\n[[api.route]]\nkey = \"a\"\n\
             integration = { type = \"mock\", echo = true }\n",
        );
        let ws = stage(&snap, 0, 0);
        assert_eq!(&*ws.stage, "$default");
        assert_eq!(
            ws.route_for(MessageKind::Text, br#"{"action":"a"}"#)
                .map(|r| &*r.key),
            Some("a")
        );
        assert!(
            ws.route_for(MessageKind::Text, br#"{"action":"b"}"#)
                .is_none()
        );
        assert_eq!(ws.limits.decoder, DecoderLimits::default());
        assert_eq!(
            ws.limits.ping_interval,
            Some(Duration::from_millis(crate::limits::WS_PING_INTERVAL_MS))
        );
    }

    #[test]
    fn subprotocol_choice_follows_the_client_order() {
        let snap = snapshot(CHAT);
        let ws = stage(&snap, 0, 0);
        assert_eq!(ws.choose_protocol(["v0", "v1", "v2"]), Some("v1"));
        assert_eq!(ws.choose_protocol(["V2"]), None);
        assert_eq!(ws.choose_protocol([]), None);
    }

    #[test]
    fn router_sends_every_path_of_a_stage_to_its_upgrade_route() {
        let snap = snapshot(CHAT);
        let mut params = crate::router::Params::default();
        let m = snap
            .router
            .find("x", "GET", "/prod", &mut params)
            .expect("stage root");
        assert_eq!((m.api, m.stage, m.route), (0, 0, 0));
        assert!(
            snap.router
                .find("x", "GET", "/other", &mut params)
                .is_none()
        );
    }
}
