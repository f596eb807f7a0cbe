//! Route selection for WebSocket APIs: the expression `$request.body.a.b.c` compiled once at config
//! time, and the route key it picks out of a text message.
//!
//! Owns the expression syntax and the JSON walk. It does not know the route table: a `None` from
//! `select` (message not JSON, path missing, value not a string) means the caller routes to
//! `$default`. The walk streams the message through `serde_json` with a seed that follows the
//! path and skips everything else (`IgnoredAny`), so nothing is allocated unless the selected
//! string itself contains escapes; the whole message is still checked to be one JSON value.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A compiled route selection expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSelection {
    /// The object keys to follow from the message root; never empty.
    path: Box<[Box<str>]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route selection expression {0:?}: expected $request.body.<key>[.<key>...]")]
pub struct RouteSelectionError(pub String);

impl RouteSelection {
    /// Amazon API Gateway's default expression.
    pub const DEFAULT_EXPRESSION: &'static str = "$request.body.action";

    /// Compiles `$request.body.key[.key...]`. Keys are non-empty and hold no `.` or whitespace.
    pub fn parse(expr: &str) -> Result<Self, RouteSelectionError> {
        let err = || RouteSelectionError(expr.to_owned());
        let rest = expr.strip_prefix("$request.body.").ok_or_else(err)?;
        let path: Box<[Box<str>]> = rest.split('.').map(Box::from).collect();
        let key_ok =
            |k: &str| !k.is_empty() && !k.chars().any(|c| c.is_whitespace() || c.is_control());
        if !path.iter().all(|k| key_ok(k)) {
            return Err(err());
        }
        Ok(Self { path })
    }

    /// The route key in `message`: the string at the path. Where a key repeats in an object,
    /// the last one counts (as in JavaScript and `serde_json::Value`).
    pub fn select<'m>(&self, message: &'m [u8]) -> Option<Cow<'m, str>> {
        let mut de = serde_json::Deserializer::from_slice(message);
        let found = Walk { path: &self.path }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        found
    }

    /// The keys followed, for display and tests.
    pub fn path(&self) -> impl Iterator<Item = &str> {
        self.path.iter().map(|k| &**k)
    }
}

impl Default for RouteSelection {
    fn default() -> Self {
        Self {
            path: Box::new([Box::from("action")]),
        }
    }
}

/// Follows `path` through nested objects; at its end, takes a string.
struct Walk<'p> {
    path: &'p [Box<str>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(WalkVisitor { path: self.path })
    }
}

/// With a non-empty `path`, looks for its first key in an object; with an empty one, wants a
/// string. Any other value is consumed and yields `None`.
struct WalkVisitor<'p> {
    path: &'p [Box<str>],
}

impl<'de> Visitor<'de> for WalkVisitor<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        // Only when the string had escapes (serde_json unescaped it into scratch space).
        Ok(self.path.is_empty().then(|| Cow::Owned(s.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((key, rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(key))? {
            if matches {
                found = map.next_value_seed(Walk { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Reads an object key and says whether it equals `.0` (after unescaping, without allocating).
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sel(expr: &str) -> RouteSelection {
        RouteSelection::parse(expr).unwrap()
    }

    #[test]
    fn parse_expressions() {
        assert_eq!(sel("$request.body.action"), RouteSelection::default());
        assert_eq!(
            sel("$request.body.a.b.c").path().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        for bad in [
            "",
            "action",
            "$request.body",
            "$request.body.",
            "$request.body.a..b",
            "$request.header.x",
            "$request.body.a b",
        ] {
            assert!(RouteSelection::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects() {
        let s = RouteSelection::default();
        let pick = |m: &str| s.select(m.as_bytes()).map(Cow::into_owned);
        assert_eq!(
            pick(r#"{"action":"sendMessage","data":"hi"}"#).as_deref(),
            Some("sendMessage")
        );
        // Borrowed when no escapes.
        assert!(matches!(
            s.select(br#"{"action":"x"}"#),
            Some(Cow::Borrowed("x"))
        ));
        // Nested objects and arrays before the key are skipped, strings holding braces too.
        assert_eq!(
            pick(r#" {"data":{"action":"inner","x":[1,{"action":"no"}]},"s":"}{\"","action":"outer"} "#).as_deref(),
            Some("outer")
        );
        // Escapes in the key and in the value.
        assert_eq!(
            pick(r#"{"\u0061ction":"a\"b\u00e9"}"#).as_deref(),
            Some("a\"bé")
        );
        // Last duplicate wins.
        assert_eq!(
            pick(r#"{"action":"first","action":"last"}"#).as_deref(),
            Some("last")
        );
        // Not a string, missing, not an object, not JSON, trailing garbage.
        for m in [
            r#"{"action":5}"#,
            r#"{"action":null}"#,
            r#"{"act":"x"}"#,
            r#"["action"]"#,
            "action",
            "",
            r#"{"action":"x"} x"#,
            r#"{"action":"x""#,
        ] {
            assert_eq!(pick(m), None, "{m}");
        }
        let nested = sel("$request.body.a.b");
        assert_eq!(
            nested.select(br#"{"a":{"z":1,"b":"deep"}}"#).as_deref(),
            Some("deep")
        );
        assert_eq!(nested.select(br#"{"a":"b"}"#), None);
        assert_eq!(nested.select(br#"{"a":{"b":"x"},"a":7}"#), None);
    }

    /// JSON text with duplicate keys, escapes and whitespace, built by hand.
    #[derive(Debug, Clone)]
    enum J {
        Str(String, bool),
        Num(i64),
        Null,
        Arr(Vec<J>),
        Obj(Vec<(String, bool, J)>),
    }

    fn write_str(out: &mut String, s: &str, escape_all: bool) {
        out.push('"');
        for c in s.chars() {
            if escape_all && (c as u32) < 0x10000 {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                let quoted = serde_json::to_string(&c.to_string()).unwrap();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
        out.push('"');
    }

    fn write(out: &mut String, j: &J) {
        match j {
            J::Str(s, e) => write_str(out, s, *e),
            J::Num(n) => out.push_str(&n.to_string()),
            J::Null => out.push_str("null"),
            J::Arr(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write(out, x);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push_str("{ ");
                for (i, (k, e, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k, *e);
                    out.push_str(" :");
                    write(out, v);
                }
                out.push('}');
            }
        }
    }

    fn json() -> impl Strategy<Value = J> {
        let key =
            prop::sample::select(vec!["action", "a", "b", "x\"y", "é"]).prop_map(String::from);
        let leaf = prop_oneof![
            (
                prop::sample::select(vec!["send", "", "a\\b", "{\"}", "ünï"])
                    .prop_map(String::from),
                any::<bool>()
            )
                .prop_map(|(s, e)| J::Str(s, e)),
            any::<i64>().prop_map(J::Num),
            Just(J::Null),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                prop::collection::vec((key.clone(), any::<bool>(), inner), 0..5).prop_map(J::Obj),
            ]
        })
    }

    fn model(sel: &RouteSelection, text: &[u8]) -> Option<String> {
        let mut v: &serde_json::Value = &serde_json::from_slice(text).ok()?;
        for k in sel.path() {
            v = v.as_object()?.get(k)?;
        }
        v.as_str().map(String::from)
    }

    proptest! {
        #[test]
        fn agrees_with_value_model(j in json(), path in prop::sample::select(vec!["$request.body.action", "$request.body.a.b", "$request.body.x\"y", "$request.body.é.action"]), cut in any::<prop::sample::Index>()) {
            let s = sel(path);
            let mut text = String::new();
            write(&mut text, &j);
            prop_assert_eq!(s.select(text.as_bytes()).map(Cow::into_owned), model(&s, text.as_bytes()));
            // Truncated text is not JSON (unless the cut keeps a whole value): same answer again.
            let cut = cut.index(text.len() + 1);
            let part = &text.as_bytes()[..cut];
            prop_assert_eq!(s.select(part).map(Cow::into_owned), model(&s, part));
        }
    }
}
