//! The event JSON an `http` integration of a websocket API receives, shaped like Amazon API
//! Gateway's WebSocket proxy events: `requestContext` (`routeKey`, `eventType`, `connectionId`,
//! `requestId`, `connectedAt`, `identity.sourceIp`, `stage`, `apiId`...), `body` and
//! `isBase64Encoded`; for `$connect` also the upgrade request's headers and query string; for
//! `$disconnect` the close code and reason.
//!
//! Pure: builds bytes from borrowed facts. Owned by nothing else; `websocket::conn` sends them.

use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Connect,
    Message,
    Disconnect,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }
}

/// The facts every event carries.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    pub route_key: &'a str,
    pub event_type: EventType,
    pub connection_id: &'a str,
    pub request_id: &'a str,
    /// Ms since the Unix epoch.
    pub connected_at_ms: u64,
    pub request_time_ms: u64,
    pub source_ip: Option<IpAddr>,
    pub stage: &'a str,
    pub api_id: &'a str,
    /// The upgrade request's Host, without port.
    pub domain_name: Option<&'a str>,
}

/// A message's body as the event carries it.
#[derive(Debug, Clone, Copy)]
pub enum EventBody<'a> {
    None,
    Text(&'a str),
    /// Sent base64-encoded with `isBase64Encoded: true`.
    Binary(&'a [u8]),
}

/// What only a `$connect` event carries: the upgrade request's headers and query string.
#[derive(Debug, Clone, Copy)]
pub struct ConnectFacts<'a> {
    pub headers: &'a [(Box<str>, Box<str>)],
    /// The raw query string (after `?`), still percent-encoded.
    pub query: Option<&'a str>,
}

/// What only a `$disconnect` event carries.
#[derive(Debug, Clone, Copy)]
pub struct DisconnectFacts<'a> {
    /// The close code (1005 when the client sent none, 1006 when the connection just ended).
    pub status_code: u16,
    pub reason: &'a str,
}

/// The event as JSON bytes.
pub fn render(
    ctx: &EventContext<'_>,
    body: EventBody<'_>,
    connect: Option<ConnectFacts<'_>>,
    disconnect: Option<DisconnectFacts<'_>>,
) -> Vec<u8> {
    let mut rc = Map::new();
    rc.insert("routeKey".into(), ctx.route_key.into());
    rc.insert("eventType".into(), ctx.event_type.as_str().into());
    rc.insert("messageDirection".into(), "IN".into());
    rc.insert("connectionId".into(), ctx.connection_id.into());
    rc.insert("requestId".into(), ctx.request_id.into());
    rc.insert("connectedAt".into(), ctx.connected_at_ms.into());
    rc.insert("requestTimeEpoch".into(), ctx.request_time_ms.into());
    rc.insert(
        "identity".into(),
        json!({ "sourceIp": ctx.source_ip.map(|ip| ip.to_string()) }),
    );
    rc.insert("stage".into(), ctx.stage.into());
    rc.insert("apiId".into(), ctx.api_id.into());
    if let Some(d) = ctx.domain_name {
        rc.insert("domainName".into(), d.into());
    }
    if ctx.event_type == EventType::Message {
        rc.insert("messageId".into(), ctx.request_id.into());
    }
    if let Some(d) = disconnect {
        rc.insert("disconnectStatusCode".into(), d.status_code.into());
        rc.insert("disconnectReason".into(), d.reason.into());
    }
    let mut event = Map::new();
    if let Some(c) = connect {
        let (single, multi) = headers(c.headers);
        event.insert("headers".into(), single);
        event.insert("multiValueHeaders".into(), multi);
        if let Some(q) = c.query.filter(|q| !q.is_empty()) {
            let (single, multi) = query(q);
            event.insert("queryStringParameters".into(), single);
            event.insert("multiValueQueryStringParameters".into(), multi);
        }
    }
    event.insert("requestContext".into(), Value::Object(rc));
    match body {
        EventBody::None => {
            event.insert("isBase64Encoded".into(), false.into());
        }
        EventBody::Text(t) => {
            event.insert("body".into(), t.into());
            event.insert("isBase64Encoded".into(), false.into());
        }
        EventBody::Binary(b) => {
            let text = base64::engine::general_purpose::STANDARD.encode(b);
            event.insert("body".into(), text.into());
            event.insert("isBase64Encoded".into(), true.into());
        }
    }
    // Serializing a Value with string keys cannot fail.
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

/// `headers` (repeated names joined with ", ") and `multiValueHeaders`, names as sent.
fn headers(list: &[(Box<str>, Box<str>)]) -> (Value, Value) {
    let mut single: Map<String, Value> = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in list {
        match single.get_mut(&**name) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(value);
            }
            _ => {
                single.insert(name.to_string(), value.to_string().into());
            }
        }
        push_multi(&mut multi, name, value);
    }
    (Value::Object(single), Value::Object(multi))
}

/// `queryStringParameters` (the last value of a repeated name) and the multi-value map, names
/// and values percent-decoded.
fn query(q: &str) -> (Value, Value) {
    let mut single: Map<String, Value> = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        single.insert(k.clone(), v.clone().into());
        push_multi(&mut multi, &k, &v);
    }
    (Value::Object(single), Value::Object(multi))
}

fn push_multi(multi: &mut Map<String, Value>, name: &str, value: &str) {
    match multi.get_mut(name) {
        Some(Value::Array(a)) => a.push(value.into()),
        _ => {
            multi.insert(name.to_string(), Value::Array(vec![value.into()]));
        }
    }
}

/// `%XX` decoded (other bytes as they are; a malformed escape is kept literally); invalid UTF-8
/// replaced.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(event_type: EventType, route_key: &'static str) -> EventContext<'static> {
        EventContext {
            route_key,
            event_type,
            connection_id: "AAAAAAAAAAAAAAAAAAAAAAAA",
            request_id: "req-1",
            connected_at_ms: 1_700_000_000_000,
            request_time_ms: 1_700_000_000_500,
            source_ip: Some("192.0.2.9".parse().unwrap()),
            stage: "prod",
            api_id: "chat",
            domain_name: Some("ws.example.com"),
        }
    }

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn message_event() {
        let v = parse(&render(
            &ctx(EventType::Message, "send"),
            EventBody::Text("{\"action\":\"send\",\"q\":\"\\\"é\"}"),
            None,
            None,
        ));
        let rc = &v["requestContext"];
        assert_eq!(rc["routeKey"], "send");
        assert_eq!(rc["eventType"], "MESSAGE");
        assert_eq!(rc["connectionId"], "AAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(rc["messageId"], "req-1");
        assert_eq!(rc["connectedAt"], 1_700_000_000_000u64);
        assert_eq!(rc["identity"]["sourceIp"], "192.0.2.9");
        assert_eq!(rc["stage"], "prod");
        assert_eq!(rc["apiId"], "chat");
        assert_eq!(rc["domainName"], "ws.example.com");
        assert_eq!(v["body"], "{\"action\":\"send\",\"q\":\"\\\"é\"}");
        assert_eq!(v["isBase64Encoded"], false);
        assert!(v.get("headers").is_none());
    }

    #[test]
    fn binary_bodies_are_base64() {
        let v = parse(&render(
            &ctx(EventType::Message, "$default"),
            EventBody::Binary(&[0, 255, 1]),
            None,
            None,
        ));
        assert_eq!(v["body"], "AP8B");
        assert_eq!(v["isBase64Encoded"], true);
    }

    #[test]
    fn connect_event_has_headers_and_query() {
        let headers: Vec<(Box<str>, Box<str>)> = vec![
            ("Host".into(), "ws.example.com".into()),
            ("X-Tag".into(), "a".into()),
            ("X-Tag".into(), "b".into()),
        ];
        let v = parse(&render(
            &ctx(EventType::Connect, "$connect"),
            EventBody::None,
            Some(ConnectFacts {
                headers: &headers,
                query: Some("token=a%20b&x=1&x=2&flag"),
            }),
            None,
        ));
        assert_eq!(v["requestContext"]["eventType"], "CONNECT");
        assert_eq!(v["headers"]["Host"], "ws.example.com");
        assert_eq!(v["headers"]["X-Tag"], "a, b");
        assert_eq!(v["multiValueHeaders"]["X-Tag"], json!(["a", "b"]));
        assert_eq!(v["queryStringParameters"]["token"], "a b");
        assert_eq!(v["queryStringParameters"]["x"], "2");
        assert_eq!(v["queryStringParameters"]["flag"], "");
        assert_eq!(v["multiValueQueryStringParameters"]["x"], json!(["1", "2"]));
        assert!(v.get("body").is_none());
    }

    #[test]
    fn disconnect_event_has_the_close() {
        let v = parse(&render(
            &ctx(EventType::Disconnect, "$disconnect"),
            EventBody::None,
            None,
            Some(DisconnectFacts {
                status_code: 1001,
                reason: "idle timeout",
            }),
        ));
        assert_eq!(v["requestContext"]["eventType"], "DISCONNECT");
        assert_eq!(v["requestContext"]["disconnectStatusCode"], 1001);
        assert_eq!(v["requestContext"]["disconnectReason"], "idle timeout");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("%C3%A9%FF"), "é\u{fffd}");
    }
}
