//! Cache keys: which request parts vary a cached response, encoded into bytes in a reusable
//! per-core buffer and hashed with one set of seeds per process, so every core computes the
//! same hash while clients cannot predict it (and so cannot grow one hash chain on purpose).
//!
//! A key is the stage, the cache method, the path, the configured query parameters (in the
//! configured order, every occurrence, values raw as sent) and the configured headers (names
//! ASCII case-insensitive, every occurrence in request order, values as sent). Nothing else varies
//! the key: not the host, not other parameters, not `Authorization` unless it is listed.
//!
//! The index compares the key bytes, not just the hash, so a hash collision costs a comparison,
//! never a wrong response. Names are written into the bytes too, so a key built under one
//! `KeySpec` never equals one built under another (a reload that changes `key_query`).

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use crate::router::Method;

use super::CACHE_KEY_BYTES_MAX;

/// The hasher of every cache key and stage id: random seeds drawn once per process, shared by
/// every core (hashes never leave the process). Reading it is an atomic load, no write.
fn seeds() -> &'static ahash::RandomState {
    static SEEDS: OnceLock<ahash::RandomState> = OnceLock::new();
    SEEDS.get_or_init(ahash::RandomState::new)
}

/// A stage, stable across reloads: a 64-bit hash of the API and stage names.
///
/// Indices into the snapshot would shift when an API is added, and then one API's cached
/// responses could answer another's requests. Two stages colliding needs a 64-bit collision:
/// for n stages the chance is about n²/2⁶⁵ (10⁻¹¹ for 10,000 stages); `compile` may refuse a
/// snapshot with two equal ids to make it impossible rather than improbable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub u64);

impl StageId {
    pub fn new(api: &str, stage: &str) -> StageId {
        let mut h = seeds().build_hasher();
        h.write_usize(api.len());
        h.write(api.as_bytes());
        h.write(stage.as_bytes());
        StageId(h.finish())
    }
}

/// Which request parts vary the key, compiled once per route and snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// Query parameter names, compared byte for byte (case-sensitive, not percent-decoded).
    query: Box<[Box<[u8]>]>,
    /// Header names, lower-cased.
    headers: Box<[Box<[u8]>]>,
}

/// The request parts a key is built from, all borrowed from the parsed head.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    pub stage: StageId,
    /// The cache method (`RoutePolicy::lookup_method`): GET for a HEAD request.
    pub method: Method,
    /// The request path as received, without the query.
    pub path: &'a str,
    /// The raw query, without the `?`.
    pub query: Option<&'a str>,
    pub headers: &'a [httparse::Header<'a>],
}

/// A per-core buffer keys are built into, reused for every request (no allocation once warm).
#[derive(Debug, Default)]
pub struct KeyBuf {
    bytes: Vec<u8>,
}

/// A key borrowed from a `KeyBuf`: what lookups take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey<'k> {
    pub stage: StageId,
    pub hash: u64,
    pub bytes: &'k [u8],
}

/// A key that owns its bytes: kept by the index, fill tickets, entries and published deltas.
/// The bytes are shared, so an entry published to every core carries one copy of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedKey {
    pub stage: StageId,
    pub hash: u64,
    pub bytes: Arc<[u8]>,
}

impl KeySpec {
    /// `query` names as configured; `headers` names in any case.
    pub fn new<Q: AsRef<str>, H: AsRef<str>>(query: &[Q], headers: &[H]) -> KeySpec {
        KeySpec {
            query: query.iter().map(|q| q.as_ref().as_bytes().into()).collect(),
            headers: headers
                .iter()
                .map(|h| h.as_ref().to_ascii_lowercase().into_bytes().into())
                .collect(),
        }
    }

    /// Builds the key of `req` into `buf`. `None` when the key would exceed
    /// `CACHE_KEY_BYTES_MAX` (the request is then served without the cache).
    pub fn build<'k>(&self, buf: &'k mut KeyBuf, req: &KeyRequest<'_>) -> Option<CacheKey<'k>> {
        let out = &mut buf.bytes;
        out.clear();
        out.extend_from_slice(&req.stage.0.to_le_bytes());
        out.push(req.method as u8);
        field(out, req.path.as_bytes());
        let query = req.query.unwrap_or("").as_bytes();
        for name in &self.query {
            out.push(b'Q');
            field(out, name);
            let mut rest = query;
            loop {
                let (pair, next) = match memchr::memchr(b'&', rest) {
                    Some(amp) => (&rest[..amp], Some(&rest[amp + 1..])),
                    None => (rest, None),
                };
                // `name` or `name=value`; names hold no '=' (validated), so this is exact.
                let value = match pair.strip_prefix(&name[..]) {
                    Some([]) => Some(&b""[..]),
                    Some([b'=', v @ ..]) => Some(v),
                    _ => None,
                };
                if let Some(v) = value {
                    // Invariant: a marker byte before each value, so `a=1&a=2` and `a=12` differ.
                    out.push(1);
                    field(out, v);
                }
                match next {
                    Some(n) => rest = n,
                    None => break,
                }
            }
            out.push(0);
        }
        for name in &self.headers {
            out.push(b'H');
            field(out, name);
            for h in req.headers {
                if h.name.as_bytes().eq_ignore_ascii_case(name) {
                    out.push(1);
                    field(out, h.value);
                }
            }
            out.push(0);
        }
        if out.len() > CACHE_KEY_BYTES_MAX {
            return None;
        }
        Some(CacheKey {
            stage: req.stage,
            hash: hash_bytes(out),
            bytes: out,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.headers.is_empty()
    }
}

/// Length-prefixed, so no two sequences of fields encode to the same bytes.
fn field(out: &mut Vec<u8>, v: &[u8]) {
    // Fields are bounded by the request head (`HEADER_BYTES_MAX`), far below u32::MAX.
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

fn hash_bytes(b: &[u8]) -> u64 {
    seeds().hash_one(b)
}

impl CacheKey<'_> {
    pub fn to_owned_key(&self) -> OwnedKey {
        OwnedKey {
            stage: self.stage,
            hash: self.hash,
            bytes: self.bytes.into(),
        }
    }
}

impl OwnedKey {
    pub fn as_key(&self) -> CacheKey<'_> {
        CacheKey {
            stage: self.stage,
            hash: self.hash,
            bytes: &self.bytes,
        }
    }
}

/// A `Hasher` for keys that already are good 64-bit hashes (`CacheKey::hash`, `StageId`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for types other than u64; fold them in so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) type IdBuild = std::hash::BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn key(
        spec: &KeySpec,
        path: &str,
        query: Option<&str>,
        headers: &[httparse::Header<'_>],
    ) -> Vec<u8> {
        let mut buf = KeyBuf::default();
        let req = KeyRequest {
            stage: StageId::new("api", "prod"),
            method: Method::Get,
            path,
            query,
            headers,
        };
        let k = spec.build(&mut buf, &req).expect("small key");
        assert_eq!(k.hash, hash_bytes(k.bytes));
        k.bytes.to_vec()
    }

    #[test]
    fn only_configured_parts_vary_the_key() {
        let spec = KeySpec::new(&["page"], &["Accept-Language"]);
        let base = key(
            &spec,
            "/a",
            Some("page=1&x=2"),
            &[h("accept-language", "fr"), h("x-other", "1")],
        );
        // Unlisted query parameters and headers, and their order, do not matter.
        assert_eq!(
            base,
            key(
                &spec,
                "/a",
                Some("y=3&page=1"),
                &[h("ACCEPT-LANGUAGE", "fr")]
            )
        );
        // Listed ones do.
        assert_ne!(
            base,
            key(&spec, "/a", Some("page=2"), &[h("accept-language", "fr")])
        );
        assert_ne!(
            base,
            key(&spec, "/a", Some("page=1"), &[h("accept-language", "de")])
        );
        assert_ne!(base, key(&spec, "/a", Some("page=1"), &[]));
        assert_ne!(
            base,
            key(&spec, "/b", Some("page=1"), &[h("accept-language", "fr")])
        );
    }

    #[test]
    fn presence_occurrences_and_values_are_unambiguous() {
        let spec = KeySpec::new(&["a"], &[] as &[&str]);
        let absent = key(&spec, "/", None, &[]);
        let empty = key(&spec, "/", Some("a="), &[]);
        let bare = key(&spec, "/", Some("a"), &[]);
        let twice = key(&spec, "/", Some("a=1&a=2"), &[]);
        let joined = key(&spec, "/", Some("a=12"), &[]);
        assert_ne!(absent, empty);
        assert_eq!(empty, bare, "a bare name is an empty value");
        assert_ne!(twice, joined);
        assert_ne!(
            twice,
            key(&spec, "/", Some("a=2&a=1"), &[]),
            "occurrence order is kept"
        );
        // Raw values: no percent-decoding.
        assert_ne!(
            key(&spec, "/", Some("a=%41"), &[]),
            key(&spec, "/", Some("a=A"), &[])
        );
    }

    #[test]
    fn spec_names_are_part_of_the_key() {
        let by_query = KeySpec::new(&["lang"], &[] as &[&str]);
        let by_header = KeySpec::new(&[] as &[&str], &["lang"]);
        assert_ne!(
            key(&by_query, "/", Some("lang=fr"), &[]),
            key(&by_header, "/", None, &[h("lang", "fr")])
        );
    }

    #[test]
    fn stage_and_method_vary_the_key() {
        let spec = KeySpec::default();
        let mut b1 = KeyBuf::default();
        let mut b2 = KeyBuf::default();
        let req = KeyRequest {
            stage: StageId::new("api", "prod"),
            method: Method::Get,
            path: "/",
            query: None,
            headers: &[],
        };
        let k1 = spec.build(&mut b1, &req).unwrap();
        let k2 = spec
            .build(
                &mut b2,
                &KeyRequest {
                    stage: StageId::new("api", "dev"),
                    ..req
                },
            )
            .unwrap();
        assert_ne!(k1.bytes, k2.bytes);
        let k3 = spec
            .build(
                &mut b2,
                &KeyRequest {
                    method: Method::Post,
                    ..req
                },
            )
            .unwrap();
        assert_ne!(k1.bytes, k3.bytes);
        assert_ne!(StageId::new("ab", "c"), StageId::new("a", "bc"));
    }

    /// The naive key: the selected values, in spec order, as a tuple of owned strings.
    fn naive(
        spec_q: &[&str],
        spec_h: &[&str],
        path: &str,
        query: &str,
        headers: &[(String, String)],
    ) -> (String, Vec<Vec<String>>, Vec<Vec<String>>) {
        let q = spec_q
            .iter()
            .map(|n| {
                query
                    .split('&')
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k == *n).then(|| v.to_string())
                    })
                    .collect()
            })
            .collect();
        let h = spec_h
            .iter()
            .map(|n| {
                headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .collect();
        (path.to_string(), q, h)
    }

    fn request_parts()
    -> impl proptest::strategy::Strategy<Value = (String, String, Vec<(String, String)>)> {
        use proptest::prelude::*;
        let param = ("[abc]{1,2}", "[=x1]{0,2}").prop_map(|(k, v)| format!("{k}={v}"));
        (
            "/[ab]{0,2}",
            prop::collection::vec(param, 0..4).prop_map(|v| v.join("&")),
            prop::collection::vec(("[aAbB]", "[xy]{0,2}").prop_map(|(k, v)| (k, v)), 0..3),
        )
    }

    proptest::proptest! {
        #[test]
        fn keys_are_equal_exactly_when_the_selected_parts_are(
            a in request_parts(),
            b in request_parts(),
        ) {
            let (q, hs) = (["a", "b"], ["a"]);
            let spec = KeySpec::new(&q, &hs);
            let ka = {
                let headers: Vec<_> = a.2.iter().map(|(k, v)| h(k, v)).collect();
                key(&spec, &a.0, Some(&a.1), &headers)
            };
            let kb = {
                let headers: Vec<_> = b.2.iter().map(|(k, v)| h(k, v)).collect();
                key(&spec, &b.0, Some(&b.1), &headers)
            };
            let na = naive(&q, &hs, &a.0, &a.1, &a.2);
            let nb = naive(&q, &hs, &b.0, &b.1, &b.2);
            proptest::prop_assert_eq!(ka == kb, na == nb);
        }
    }

    #[test]
    fn oversized_keys_are_refused() {
        let spec = KeySpec::new(&[] as &[&str], &["x"]);
        let big = "v".repeat(CACHE_KEY_BYTES_MAX);
        let mut buf = KeyBuf::default();
        let headers = [h("x", &big)];
        let req = KeyRequest {
            stage: StageId(1),
            method: Method::Get,
            path: "/",
            query: None,
            headers: &headers,
        };
        assert!(spec.build(&mut buf, &req).is_none());
    }
}
