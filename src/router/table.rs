//! The compiled routing table: host → base path → stage → segment trie. Owns the matching rules;
//! does not own route-key syntax (`key.rs`), config validation messages with file positions
//! (`config`), or anything done with a match (auth, throttles, integrations).
//!
//! # Matching rules
//!
//! **API.** `ApiSpec::host` `None` serves any host; `"api.example.com"` serves exactly that host,
//! compared case-insensitively; `"*.example.com"` serves any host with one or more labels before
//! `.example.com` (not `example.com` itself). The Host given to [`Router::find`] has no port; a
//! Host longer than 255 bytes (the DNS limit) matches only host-less APIs. `ApiSpec::base_path`
//! `None` serves every path; `"v1"` or `"v1/beta"` serves the path `/v1` and paths starting with
//! `/v1/` (base paths and everything below are case-sensitive, like paths). Candidates are tried
//! in this order: exact-host APIs, then wildcard APIs (longest suffix first), then host-less APIs;
//! within one host class, longest base path first. The first candidate whose base path matches
//! is *the* API: if its stages or routes do not match, the answer is `None`, not another API.
//!
//! **Stage.** If the segment after the base path is one of the API's stage names (other than
//! `$default`), that is the stage and the route path is what follows it. Otherwise the
//! `$default` stage, if any, gets the whole remainder; otherwise `None`. An empty remainder, or
//! a lone `/`, is the route path `/`.
//!
//! **Route.** Routes belong to the API and are shared by all its stages. Matching is on the raw,
//! still percent-encoded path, without normalization. Segment by segment, a literal beats a
//! `{param}` (one non-empty segment), which beats a greedy `{name+}` (the non-empty rest of the
//! path, any number of segments, empty ones included); if the more specific branch finds no
//! route, the next one is tried (backtracking). At the node where the path ends, the request's
//! own method wins, then (for HEAD only) GET, then ANY; if none is there, backtracking goes on.
//! Empty segments (`//`, a trailing `/`) are only ever matched by a greedy parameter. Methods
//! `Method::from_request` does not know match only ANY routes. When nothing matches, the API's
//! `$default` route, if any, is the match.
//!
//! **Parameters** land in [`Params`] as byte ranges into the whole `path` given to `find`, in path
//! order, which is the order of `RouteKey::param_names` for the matched route.
//!
//! # Cost
//!
//! `find` does not allocate. Host and base path are hashed lookups (one per dot in the Host, one
//! per base-path depth in use); each path segment costs one hashed literal lookup plus, on
//! backtracking, the alternatives that exist at that node. The work is bounded by the trie nodes
//! the path can reach, so it does not grow with the number of routes in realistic tables
//! (10,000 routes under distinct literal prefixes cost the same as 10). Only adversarial tables
//! with a `{param}` next to a literal at every depth make backtracking visit many nodes.

use ahash::AHashMap;
use memchr::memchr_iter;

use crate::scan::find;

use super::{Method, RouteKey, Segment};
use crate::limits::PATH_PARAMS_MAX;

/// One API as the router sees it.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    /// `None`: any host. `"api.example.com"` (exact, case-insensitive) or `"*.example.com"`.
    pub host: Option<String>,
    /// `None`: at the root. `"v1"` or `"v1/beta"` (no leading or trailing '/').
    pub base_path: Option<String>,
    /// Stage names; `"$default"` serves at the root, any other at `/{stage}`. Never empty
    /// (config compile inserts an implicit `$default`).
    pub stages: Vec<String>,
    /// Routes in config order; `Match::route` indexes this.
    pub routes: Vec<RouteKey>,
}

/// A successful match. Indices refer to the `ApiSpec` slice and its `stages`/`routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub api: usize,
    pub stage: usize,
    pub route: usize,
}

/// Path parameter values as byte ranges into the matched path, in the route's parameter order
/// (`RouteKey::param_names`). Lives on the stack.
#[derive(Debug, Clone)]
pub struct Params {
    len: usize,
    ranges: [(u32, u32); PATH_PARAMS_MAX],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            len: 0,
            ranges: [(0, 0); PATH_PARAMS_MAX],
        }
    }
}

impl Params {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The i-th parameter's value, sliced out of `path` (the same path given to `Router::find`).
    pub fn get<'p>(&self, path: &'p str, i: usize) -> Option<&'p str> {
        if i >= self.len {
            return None;
        }
        let (s, e) = self.ranges[i];
        path.get(s as usize..e as usize)
    }

    /// The i-th parameter's byte range in the path.
    pub fn range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let &(s, e) = self.ranges[..self.len].get(i)?;
        Some(s as usize..e as usize)
    }

    /// Appends a range. Callers guarantee at most `PATH_PARAMS_MAX` (route keys are validated).
    pub fn push(&mut self, start: usize, end: usize) {
        if self.len < PATH_PARAMS_MAX {
            self.ranges[self.len] = (start as u32, end as u32);
            self.len += 1;
        }
    }

    /// Drops parameters pushed after `len` (backtracking).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A config the router cannot compile (two APIs on the same host and base path, two routes with
/// the same key in one API...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouterError(pub String);

/// The compiled, immutable routing table.
#[derive(Debug)]
pub struct Router {
    apis: Vec<CompiledApi>,
    /// Keyed by the lowercase host.
    exact: AHashMap<Box<[u8]>, HostGroup>,
    /// Keyed by the lowercase suffix with its leading dot: `"*.example.com"` → `".example.com"`.
    wildcard: AHashMap<Box<[u8]>, HostGroup>,
    any_host: HostGroup,
}

impl Router {
    /// Compiles the table. Refuses two APIs on the same host and base path, two routes with the
    /// same method and path shape in one API, two `$default` routes, duplicate or malformed stage
    /// names, malformed hosts or base paths, and routes with more than `PATH_PARAMS_MAX` params.
    pub fn build(apis: &[ApiSpec]) -> Result<Router, RouterError> {
        let mut router = Router {
            apis: Vec::with_capacity(apis.len()),
            exact: AHashMap::new(),
            wildcard: AHashMap::new(),
            any_host: HostGroup::default(),
        };
        for (i, spec) in apis.iter().enumerate() {
            let api = u32::try_from(i).map_err(|_| RouterError("too many APIs".into()))?;
            let group = match host_class(spec).map_err(|e| err(apis, i, &e))? {
                HostClass::Any => &mut router.any_host,
                HostClass::Exact(h) => router.exact.entry(h).or_default(),
                HostClass::Wildcard(s) => router.wildcard.entry(s).or_default(),
            };
            if let Some(other) = group
                .insert(spec.base_path.as_deref(), api)
                .map_err(|e| err(apis, i, &e))?
            {
                return Err(RouterError(format!(
                    "{} and {} have the same host and base path",
                    describe(apis, other as usize),
                    describe(apis, i),
                )));
            }
            router
                .apis
                .push(CompiledApi::build(spec).map_err(|e| err(apis, i, &e))?);
        }
        Ok(router)
    }

    /// Finds the route for a request. `host` is the Host header without port (any case);
    /// `method` the request method; `path` the request path without query string.
    /// `params` is cleared, then filled with the matched route's parameters.
    pub fn find(&self, host: &str, method: &str, path: &str, params: &mut Params) -> Option<Match> {
        params.clear();
        if !path.starts_with('/') {
            return None; // asterisk or absolute form: nothing to route on
        }
        let (api_ix, base_end) = self.select_api(host, path)?;
        let api = &self.apis[api_ix as usize];
        let (stage, route_start) = api.select_stage(path, base_end)?;
        // After the stage, the route path is "" or "/..."; both "" and "/" are the root.
        let first = (route_start + 1 < path.len()).then_some(route_start + 1);
        let slots = method_slots(method);
        let route = match api.walk(ROOT, first, path, slots, params) {
            Some(r) => r,
            None => api.default_route?,
        };
        Some(Match {
            api: api_ix as usize,
            stage: stage as usize,
            route: route as usize,
        })
    }

    /// The API chosen by host and base path, with the byte offset in `path` where its base path
    /// ends (0 for an API at the root).
    fn select_api(&self, host: &str, path: &str) -> Option<(u32, usize)> {
        let mut buf = [0u8; HOST_BYTES_MAX];
        if let Some(lower) = buf.get_mut(..host.len()) {
            lower.copy_from_slice(host.as_bytes());
            lower.make_ascii_lowercase();
            let lower = &*lower;
            if let Some(hit) = self.exact.get(lower).and_then(|g| g.resolve(path)) {
                return Some(hit);
            }
            if !self.wildcard.is_empty() {
                // Leftmost dot first is longest suffix first; a dot at 0 would leave no label.
                for dot in memchr_iter(b'.', lower).filter(|&d| d > 0) {
                    if let Some(hit) = self
                        .wildcard
                        .get(&lower[dot..])
                        .and_then(|g| g.resolve(path))
                    {
                        return Some(hit);
                    }
                }
            }
        }
        self.any_host.resolve(path)
    }
}

/// Hosts are at most 255 bytes (RFC 1035 §2.3.4); a protocol fact, not a tunable limit.
const HOST_BYTES_MAX: usize = 255;

type NodeId = u32;
type RouteId = u32;
const ROOT: NodeId = 0;
const NO_ROUTE: RouteId = RouteId::MAX;
/// Method slot of `ANY`; concrete methods use `Method as usize` (0..7).
const SLOT_ANY: usize = Method::Any as usize;
const SLOTS: usize = SLOT_ANY + 1;

/// The APIs of one host class (one exact host, one wildcard suffix, or host-less).
#[derive(Debug, Default)]
struct HostGroup {
    /// The API without a base path.
    root: Option<u32>,
    /// Base path (`"v1/beta"`) → API.
    by_base: AHashMap<Box<str>, u32>,
    /// Most segments in any key of `by_base`: how deep `resolve` has to look.
    base_depth_max: usize,
}

impl HostGroup {
    /// Adds an API; returns the API already there with the same base path, if any.
    fn insert(&mut self, base: Option<&str>, api: u32) -> Result<Option<u32>, String> {
        let Some(base) = base else {
            return Ok(self.root.replace(api));
        };
        let mut depth = 0;
        for seg in base.split('/') {
            segment_check(seg).map_err(|e| format!("base path {base:?}: {e}"))?;
            depth += 1;
        }
        self.base_depth_max = self.base_depth_max.max(depth);
        Ok(self.by_base.insert(base.into(), api))
    }

    /// The API whose base path is the longest segment-prefix of `path`, then the root API.
    /// Shortest prefix first, keeping the last hit: no stack of segment ends needed.
    fn resolve(&self, path: &str) -> Option<(u32, usize)> {
        let bytes = path.as_bytes();
        let mut best = None;
        let mut start = 1; // Invariant: `path` starts with '/'.
        for _ in 0..self.base_depth_max {
            let end = find(b'/', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            if let Some(&api) = self.by_base.get(&path[1..end]) {
                best = Some((api, end));
            }
            if end == bytes.len() {
                break;
            }
            start = end + 1;
        }
        best.or_else(|| self.root.map(|api| (api, 0)))
    }
}

/// One API: its stages and its route trie.
#[derive(Debug)]
struct CompiledApi {
    /// Named stages (not `$default`) → index in `ApiSpec::stages`.
    stages: AHashMap<Box<str>, u32>,
    default_stage: Option<u32>,
    /// `nodes[ROOT]` is the root path `/`.
    nodes: Vec<Node>,
    default_route: Option<RouteId>,
}

/// A trie node: the routes that end here, by method, and the ways on.
#[derive(Debug)]
struct Node {
    routes: [RouteId; SLOTS],
    literals: AHashMap<Box<str>, NodeId>,
    param: Option<NodeId>,
    /// A greedy child has no children, only routes.
    greedy: Option<NodeId>,
}

impl Node {
    fn new() -> Node {
        Node {
            routes: [NO_ROUTE; SLOTS],
            literals: AHashMap::new(),
            param: None,
            greedy: None,
        }
    }

    /// The route for the first method slot that has one.
    fn route(&self, slots: &[usize]) -> Option<RouteId> {
        slots
            .iter()
            .map(|&s| self.routes[s])
            .find(|&r| r != NO_ROUTE)
    }
}

impl CompiledApi {
    fn build(spec: &ApiSpec) -> Result<CompiledApi, String> {
        let mut api = CompiledApi {
            stages: AHashMap::new(),
            default_stage: None,
            nodes: vec![Node::new()],
            default_route: None,
        };
        api.add_stages(&spec.stages)?;
        for (i, key) in spec.routes.iter().enumerate() {
            let id = RouteId::try_from(i)
                .ok()
                .filter(|&id| id != NO_ROUTE)
                .ok_or("too many routes")?;
            match key {
                RouteKey::Default => {
                    if let Some(prev) = api.default_route.replace(id) {
                        return Err(format!("routes #{prev} and #{i} are both \"$default\""));
                    }
                }
                RouteKey::Path { method, segments } => {
                    if let Some(prev) = api.insert(*method, segments, id)? {
                        return Err(format!(
                            "routes \"{}\" and \"{key}\" have the same method and path shape",
                            spec.routes[prev as usize]
                        ));
                    }
                }
            }
        }
        Ok(api)
    }

    fn add_stages(&mut self, names: &[String]) -> Result<(), String> {
        if names.is_empty() {
            return Err("no stages (config compile adds an implicit \"$default\")".into());
        }
        for (i, name) in names.iter().enumerate() {
            let ix = u32::try_from(i).map_err(|_| "too many stages".to_string())?;
            let dup = if name == "$default" {
                self.default_stage.replace(ix).is_some()
            } else {
                segment_check(name).map_err(|e| format!("stage name {name:?}: {e}"))?;
                self.stages.insert(name.as_str().into(), ix).is_some()
            };
            if dup {
                return Err(format!("stage {name:?} is declared twice"));
            }
        }
        Ok(())
    }

    /// Adds a route; returns the route already in its slot, if any.
    fn insert(
        &mut self,
        method: Method,
        segments: &[Segment],
        id: RouteId,
    ) -> Result<Option<RouteId>, String> {
        let params = segments
            .iter()
            .filter(|s| !matches!(s, Segment::Literal(_)))
            .count();
        if params > PATH_PARAMS_MAX {
            return Err(format!(
                "a route has {params} path parameters, more than {PATH_PARAMS_MAX}"
            ));
        }
        let mut node = ROOT;
        for seg in segments {
            node = match seg {
                Segment::Literal(text) => {
                    match self.nodes[node as usize].literals.get(text.as_str()) {
                        Some(&child) => child,
                        None => {
                            let child = self.push_node()?;
                            self.nodes[node as usize]
                                .literals
                                .insert(text.as_str().into(), child);
                            child
                        }
                    }
                }
                Segment::Param(_) => match self.nodes[node as usize].param {
                    Some(child) => child,
                    None => {
                        let child = self.push_node()?;
                        self.nodes[node as usize].param = Some(child);
                        child
                    }
                },
                Segment::Greedy(_) => match self.nodes[node as usize].greedy {
                    Some(child) => child,
                    None => {
                        let child = self.push_node()?;
                        self.nodes[node as usize].greedy = Some(child);
                        child
                    }
                },
            };
        }
        let slot = &mut self.nodes[node as usize].routes[method as usize];
        let prev = std::mem::replace(slot, id);
        Ok((prev != NO_ROUTE).then_some(prev))
    }

    fn push_node(&mut self) -> Result<NodeId, String> {
        let id = NodeId::try_from(self.nodes.len())
            .map_err(|_| "too many route segments".to_string())?;
        self.nodes.push(Node::new());
        Ok(id)
    }

    /// The stage and the offset where the route path starts (`""` or `"/..."` from there).
    fn select_stage(&self, path: &str, base_end: usize) -> Option<(u32, usize)> {
        if !self.stages.is_empty() && path.len() > base_end + 1 {
            // Invariant: `path[base_end]` is '/' here (base paths end at a segment boundary).
            let seg_start = base_end + 1;
            let rest = &path.as_bytes()[seg_start..];
            let seg_end = find(b'/', rest).map_or(path.len(), |i| seg_start + i);
            if let Some(&stage) = self.stages.get(&path[seg_start..seg_end]) {
                return Some((stage, seg_end));
            }
        }
        self.default_stage.map(|stage| (stage, base_end))
    }

    /// Depth-first search, most specific branch first. `next` is where the next path segment
    /// starts, `None` once the path is used up. Invariant: returns with `params` as it found
    /// them unless it returns a route.
    fn walk(
        &self,
        node: NodeId,
        next: Option<usize>,
        path: &str,
        slots: &[usize],
        params: &mut Params,
    ) -> Option<RouteId> {
        let n = &self.nodes[node as usize];
        let Some(start) = next else {
            return n.route(slots);
        };
        let rest = &path[start..];
        let (seg, after) = match find(b'/', rest.as_bytes()) {
            Some(i) => (&rest[..i], Some(start + i + 1)),
            None => (rest, None),
        };
        if !seg.is_empty() {
            if let Some(&child) = n.literals.get(seg)
                && let Some(r) = self.walk(child, after, path, slots, params)
            {
                return Some(r);
            }
            if let Some(child) = n.param {
                let mark = params.len();
                params.push(start, start + seg.len());
                if let Some(r) = self.walk(child, after, path, slots, params) {
                    return Some(r);
                }
                params.truncate(mark);
            }
        }
        if let Some(child) = n.greedy
            && !rest.is_empty()
            && let Some(r) = self.nodes[child as usize].route(slots)
        {
            params.push(start, path.len());
            return Some(r);
        }
        None
    }
}

/// Method slots to try at a node, best first.
fn method_slots(method: &str) -> &'static [usize] {
    const HEAD: &[usize] = &[Method::Head as usize, Method::Get as usize, SLOT_ANY];
    const BY_METHOD: [&[usize]; 7] = [
        &[Method::Get as usize, SLOT_ANY],
        HEAD,
        &[Method::Post as usize, SLOT_ANY],
        &[Method::Put as usize, SLOT_ANY],
        &[Method::Delete as usize, SLOT_ANY],
        &[Method::Patch as usize, SLOT_ANY],
        &[Method::Options as usize, SLOT_ANY],
    ];
    match Method::from_request(method) {
        Some(m) if m != Method::Any => BY_METHOD[m as usize],
        _ => &[SLOT_ANY],
    }
}

enum HostClass {
    Any,
    Exact(Box<[u8]>),
    Wildcard(Box<[u8]>),
}

fn host_class(spec: &ApiSpec) -> Result<HostClass, String> {
    let Some(host) = spec.host.as_deref() else {
        return Ok(HostClass::Any);
    };
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    let bad = |why: &str| Err(format!("host {host:?}: {why}"));
    if name.is_empty() || name.starts_with('.') || name.ends_with('.') {
        return bad("must be a host name like \"api.example.com\" or \"*.example.com\"");
    }
    if host.len() > HOST_BYTES_MAX {
        return bad("longer than 255 bytes");
    }
    if let Some(b) = name
        .bytes()
        .find(|&b| !(b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)))
    {
        let why = if b == b'*' {
            "'*' only as a whole first label (\"*.example.com\")"
        } else {
            "invalid character (use the xn-- form of international names)"
        };
        return bad(why);
    }
    let lower = host.to_ascii_lowercase();
    Ok(if wildcard {
        HostClass::Wildcard(lower.as_bytes()[1..].into())
    } else {
        HostClass::Exact(lower.as_bytes().into())
    })
}

/// Whether `seg` can be one whole segment of a request path (RFC 3986 `segment-nz` of `pchar`),
/// so that a base path or stage name can ever match. `.` and `..` are refused: clients
/// normalize them away.
fn segment_check(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty path segment".into());
    }
    if seg == "." || seg == ".." {
        return Err(format!("{seg:?} is not a usable path segment"));
    }
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let ok = match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                i += 2;
                hex
            }
            c => c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&c),
        };
        if !ok {
            return Err(format!("{seg:?} is not a valid path segment"));
        }
        i += 1;
    }
    Ok(())
}

/// `API #2 (host api.example.com, base path /v1)`, for error messages.
fn describe(apis: &[ApiSpec], i: usize) -> String {
    let spec = &apis[i];
    format!(
        "API #{i} (host {}, base path /{})",
        spec.host.as_deref().unwrap_or("any"),
        spec.base_path.as_deref().unwrap_or("")
    )
}

fn err(apis: &[ApiSpec], i: usize, msg: &str) -> RouterError {
    RouterError(format!("{}: {msg}", describe(apis, i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn api(host: Option<&str>, base: Option<&str>, stages: &[&str], routes: &[&str]) -> ApiSpec {
        ApiSpec {
            host: host.map(str::to_string),
            base_path: base.map(str::to_string),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            routes: routes.iter().map(|r| RouteKey::parse(r).unwrap()).collect(),
        }
    }

    /// A host-less API at the root with only the `$default` stage.
    fn plain(routes: &[&str]) -> Router {
        Router::build(&[api(None, None, &["$default"], routes)]).unwrap()
    }

    /// (api, stage, route, param values)
    type Found = (usize, usize, usize, Vec<String>);

    fn find(r: &Router, host: &str, method: &str, path: &str) -> Option<Found> {
        let mut p = Params::default();
        let m = r.find(host, method, path, &mut p)?;
        let vals = (0..p.len())
            .map(|i| p.get(path, i).unwrap().to_string())
            .collect();
        Some((m.api, m.stage, m.route, vals))
    }

    /// The matched route index and param values, for a host-less single API.
    fn route(r: &Router, method: &str, path: &str) -> Option<(usize, Vec<String>)> {
        find(r, "h", method, path).map(|(_, _, route, p)| (route, p))
    }

    fn r(i: usize, params: &[&str]) -> Option<(usize, Vec<String>)> {
        Some((i, params.iter().map(|s| s.to_string()).collect()))
    }

    fn build_err(apis: &[ApiSpec]) -> String {
        Router::build(apis).unwrap_err().0
    }

    // ---- API selection ----

    #[test]
    fn exact_host_is_case_insensitive() {
        let t = Router::build(&[api(
            Some("Api.Example.com"),
            None,
            &["$default"],
            &["GET /"],
        )])
        .unwrap();
        assert!(find(&t, "api.example.com", "GET", "/").is_some());
        assert!(find(&t, "API.EXAMPLE.COM", "GET", "/").is_some());
        assert!(find(&t, "api.example.org", "GET", "/").is_none());
        assert!(find(&t, "x.api.example.com", "GET", "/").is_none());
    }

    #[test]
    fn wildcard_needs_a_label_and_prefers_longest_suffix() {
        let t = Router::build(&[
            api(Some("*.example.com"), None, &["$default"], &["GET /"]),
            api(Some("*.B.example.com"), None, &["$default"], &["GET /"]),
        ])
        .unwrap();
        let api_of = |h: &str| find(&t, h, "GET", "/").map(|f| f.0);
        assert_eq!(api_of("a.example.com"), Some(0));
        assert_eq!(api_of("x.y.Example.COM"), Some(0));
        assert_eq!(api_of("b.example.com"), Some(0));
        assert_eq!(api_of("x.b.example.com"), Some(1));
        assert_eq!(api_of("x.y.b.example.com"), Some(1));
        assert_eq!(api_of("example.com"), None);
        assert_eq!(api_of(".example.com"), None);
        assert_eq!(api_of("fooexample.com"), None);
    }

    #[test]
    fn host_classes_in_order_with_fallthrough_on_base_path() {
        let t = Router::build(&[
            api(None, None, &["$default"], &["$default"]),
            api(
                Some("*.example.com"),
                Some("w"),
                &["$default"],
                &["$default"],
            ),
            api(
                Some("api.example.com"),
                Some("e"),
                &["$default"],
                &["$default"],
            ),
        ])
        .unwrap();
        let api_of = |h: &str, p: &str| find(&t, h, "GET", p).map(|f| f.0);
        assert_eq!(api_of("api.example.com", "/e"), Some(2));
        // The exact host's base path does not match: wildcard next, then host-less.
        assert_eq!(api_of("api.example.com", "/w"), Some(1));
        assert_eq!(api_of("api.example.com", "/"), Some(0));
        assert_eq!(api_of("other.example.com", "/e"), Some(0));
        assert_eq!(api_of("nohost", "/w"), Some(0));
        assert_eq!(api_of("x.example.com", "/w/1"), Some(1));
    }

    #[test]
    fn too_long_host_matches_only_hostless() {
        let long = format!("{}.example.com", "a".repeat(250));
        let t = Router::build(&[
            api(Some("*.example.com"), None, &["$default"], &["GET /"]),
            api(None, None, &["$default"], &["GET /"]),
        ])
        .unwrap();
        assert_eq!(find(&t, &long, "GET", "/").map(|f| f.0), Some(1));
        assert_eq!(find(&t, &long[200..], "GET", "/").map(|f| f.0), Some(0));
    }

    #[test]
    fn base_path_on_segment_boundary_longest_first() {
        let t = Router::build(&[
            api(
                None,
                Some("v1"),
                &["$default"],
                &["GET /", "GET /x", "GET /beta/y"],
            ),
            api(None, Some("v1/beta"), &["$default"], &["GET /", "GET /x"]),
        ])
        .unwrap();
        let f = |p: &str| find(&t, "h", "GET", p).map(|f| (f.0, f.2));
        assert_eq!(f("/v1"), Some((0, 0)));
        assert_eq!(f("/v1/"), Some((0, 0)));
        assert_eq!(f("/v1/x"), Some((0, 1)));
        assert_eq!(f("/v1x"), None);
        assert_eq!(f("/v1/beta"), Some((1, 0)));
        assert_eq!(f("/v1/beta/x"), Some((1, 1)));
        assert_eq!(f("/v1/betax"), None, "API 0 chosen, no route /betax");
        // THE api is v1/beta: its routes don't match, and API 0's `GET /beta/y` is not tried.
        assert_eq!(f("/v1/beta/y"), None);
        assert_eq!(f("/v2"), None);
        assert_eq!(f("/V1"), None, "base paths are case-sensitive");
        assert_eq!(f("*"), None);
        assert_eq!(f(""), None);
    }

    // ---- stage selection ----

    #[test]
    fn named_stage_then_default_stage() {
        let t = Router::build(&[api(
            None,
            Some("v1"),
            &["prod", "$default", "dev"],
            &["GET /", "GET /prod", "GET /a"],
        )])
        .unwrap();
        let f = |p: &str| find(&t, "h", "GET", p).map(|f| (f.1, f.2));
        assert_eq!(f("/v1/prod"), Some((0, 0)));
        assert_eq!(f("/v1/prod/"), Some((0, 0)));
        assert_eq!(f("/v1/prod/a"), Some((0, 2)));
        assert_eq!(f("/v1/dev/a"), Some((2, 2)));
        assert_eq!(f("/v1/a"), Some((1, 2)));
        assert_eq!(f("/v1"), Some((1, 0)));
        assert_eq!(f("/v1/production"), None);
        // The stage wins over a route of the same name.
        assert_eq!(f("/v1/prod/prod"), Some((0, 1)));
    }

    #[test]
    fn no_default_stage_means_no_match_outside_stages() {
        let t =
            Router::build(&[api(None, None, &["prod"], &["GET /", "GET /a", "$default"])]).unwrap();
        let f = |p: &str| find(&t, "h", "GET", p).map(|f| (f.1, f.2));
        assert_eq!(f("/prod"), Some((0, 0)));
        assert_eq!(f("/prod/a"), Some((0, 1)));
        assert_eq!(f("/prod/zzz"), Some((0, 2)));
        assert_eq!(f("/a"), None);
        assert_eq!(f("/"), None);
    }

    // ---- route matching ----

    #[test]
    fn literal_over_param_over_greedy_with_backtracking() {
        let t = plain(&[
            "GET /a/{x}/c",
            "GET /{y}/b/d",
            "GET /a/b/{z}",
            "GET /{p+}",
            "GET /a/{q+}",
        ]);
        assert_eq!(route(&t, "GET", "/a/b/d"), r(2, &["d"]));
        assert_eq!(route(&t, "GET", "/a/b/c"), r(2, &["c"]));
        assert_eq!(route(&t, "GET", "/a/x/c"), r(0, &["x"]));
        assert_eq!(route(&t, "GET", "/z/b/d"), r(1, &["z"]));
        assert_eq!(route(&t, "GET", "/a/x/d"), r(4, &["x/d"]));
        assert_eq!(route(&t, "GET", "/z/x/d"), r(3, &["z/x/d"]));
        assert_eq!(route(&t, "GET", "/a"), r(3, &["a"]));
        let t = plain(&["GET /a/{x}/c", "GET /{y}/b/d"]);
        assert_eq!(route(&t, "GET", "/a/b/d"), r(1, &["a"]));
        assert_eq!(route(&t, "GET", "/a/b/c"), r(0, &["b"]));
    }

    #[test]
    fn method_then_head_as_get_then_any() {
        let t = plain(&["GET /x", "ANY /x", "HEAD /y", "GET /y", "GET /z", "ANY /w"]);
        assert_eq!(route(&t, "GET", "/x"), r(0, &[]));
        assert_eq!(route(&t, "POST", "/x"), r(1, &[]));
        assert_eq!(route(&t, "HEAD", "/x"), r(0, &[]));
        assert_eq!(route(&t, "HEAD", "/y"), r(2, &[]));
        assert_eq!(route(&t, "HEAD", "/z"), r(4, &[]));
        assert_eq!(route(&t, "POST", "/z"), None);
        assert_eq!(route(&t, "BREW", "/w"), r(5, &[]));
        assert_eq!(route(&t, "BREW", "/x"), r(1, &[]));
        assert_eq!(route(&t, "BREW", "/z"), None);
        assert_eq!(
            route(&t, "ANY", "/z"),
            None,
            "a request method ANY is unknown"
        );
        assert_eq!(route(&t, "get", "/z"), None, "methods are case-sensitive");
    }

    #[test]
    fn method_miss_backtracks_to_less_specific_nodes() {
        let t = plain(&["GET /pets", "ANY /{proxy+}", "POST /{kind}"]);
        assert_eq!(route(&t, "GET", "/pets"), r(0, &[]));
        assert_eq!(route(&t, "POST", "/pets"), r(2, &["pets"]));
        assert_eq!(route(&t, "PUT", "/pets"), r(1, &["pets"]));
        let t = plain(&["GET /pets/{id}", "POST /{a}/{b}"]);
        assert_eq!(route(&t, "POST", "/pets/1"), r(1, &["pets", "1"]));
    }

    #[test]
    fn empty_segments_only_match_greedy() {
        let t = plain(&["GET /hello", "GET /hello/{name}"]);
        assert_eq!(route(&t, "GET", "/hello/"), None);
        assert_eq!(route(&t, "GET", "/hello//"), None);
        assert_eq!(route(&t, "GET", "//hello"), None);
        let t = plain(&[
            "GET /hello",
            "GET /hello/{name}",
            "ANY /{proxy+}",
            "GET /a/{rest+}",
        ]);
        assert_eq!(route(&t, "GET", "/hello/"), r(2, &["hello/"]));
        assert_eq!(route(&t, "GET", "//"), r(2, &["/"]));
        assert_eq!(route(&t, "GET", "/"), None, "greedy needs a non-empty rest");
        assert_eq!(
            route(&t, "GET", "/a/"),
            r(2, &["a/"]),
            "{{rest+}} would be empty"
        );
        assert_eq!(route(&t, "GET", "/a//"), r(3, &["/"]));
        assert_eq!(route(&t, "GET", "/a/b//c/"), r(3, &["b//c/"]));
    }

    #[test]
    fn root_route() {
        let t = plain(&["GET /", "GET /{x}"]);
        assert_eq!(route(&t, "GET", "/"), r(0, &[]));
        assert_eq!(route(&t, "GET", "/a"), r(1, &["a"]));
        assert_eq!(route(&t, "POST", "/"), None);
    }

    #[test]
    fn default_route_catches_the_rest() {
        let t = plain(&["GET /a", "$default", "GET /b/{x}"]);
        assert_eq!(route(&t, "GET", "/a"), r(0, &[]));
        assert_eq!(route(&t, "POST", "/a"), r(1, &[]));
        assert_eq!(route(&t, "GET", "/b/"), r(1, &[]));
        assert_eq!(route(&t, "GET", "/"), r(1, &[]));
    }

    #[test]
    fn params_are_ranges_into_the_full_raw_path() {
        let t = Router::build(&[api(
            Some("api.example.com"),
            Some("v1/x"),
            &["prod"],
            &["GET /users/{id}/files/{path+}"],
        )])
        .unwrap();
        let path = "/v1/x/prod/users/a%20b/files/c%2Fd/e.txt";
        let mut p = Params::default();
        p.push(1, 2); // stale: find clears
        let m = t.find("API.example.com", "GET", path, &mut p).unwrap();
        assert_eq!(
            m,
            Match {
                api: 0,
                stage: 0,
                route: 0
            }
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p.get(path, 0), Some("a%20b"));
        assert_eq!(p.get(path, 1), Some("c%2Fd/e.txt"));
        assert_eq!(p.range(1), Some(path.len() - 11..path.len()));
        assert_eq!(p.get(path, 2), None);
        // A miss leaves no parameters behind, even after a partial param match.
        assert!(
            t.find("api.example.com", "GET", "/v1/x/prod/users/a/files", &mut p)
                .is_none()
        );
        assert!(p.is_empty());
    }

    #[test]
    fn failed_branches_leave_no_params() {
        let t = plain(&["GET /{a}/{b}/x", "GET /{c+}"]);
        assert_eq!(route(&t, "GET", "/1/2/y"), r(1, &["1/2/y"]));
    }

    #[test]
    fn sixteen_params_fit() {
        let key: String = (0..PATH_PARAMS_MAX).map(|i| format!("/{{p{i}}}")).collect();
        let path: String = (0..PATH_PARAMS_MAX).map(|i| format!("/v{i}")).collect();
        let t = plain(&[&format!("GET {key}")]);
        let (_, vals) = route(&t, "GET", &path).unwrap();
        assert_eq!(vals.len(), PATH_PARAMS_MAX);
        assert_eq!(vals[15], "v15");
    }

    #[test]
    fn ten_thousand_routes() {
        let keys: Vec<String> = (0..5000)
            .flat_map(|i| {
                [
                    format!("GET /v1/resource{i}/{{id}}"),
                    format!("POST /v1/resource{i}/{{id}}/sub"),
                ]
            })
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let t = plain(&keys);
        assert_eq!(route(&t, "GET", "/v1/resource4321/7"), r(8642, &["7"]));
        assert_eq!(route(&t, "POST", "/v1/resource4999/7/sub"), r(9999, &["7"]));
        assert_eq!(route(&t, "GET", "/v1/resource5000/7"), None);
    }

    // ---- build errors ----

    #[test]
    fn refuses_same_method_and_shape() {
        let e = build_err(&[api(
            Some("a.com"),
            Some("v1"),
            &["$default"],
            &["GET /a/{x}", "GET /a/{y}"],
        )]);
        assert!(e.contains("API #0 (host a.com, base path /v1)"), "{e}");
        assert!(e.contains("GET /a/{x}") && e.contains("GET /a/{y}"), "{e}");
        let e = build_err(&[api(
            None,
            None,
            &["$default"],
            &["ANY /a/{p+}", "GET /b", "ANY /a/{q+}"],
        )]);
        assert!(
            e.contains("ANY /a/{p+}") && e.contains("ANY /a/{q+}"),
            "{e}"
        );
        // Different methods, or a param next to a literal, are fine.
        plain(&[
            "GET /a/{x}",
            "POST /a/{y}",
            "GET /a/b",
            "ANY /a/{x}",
            "GET /a/{x+}",
        ]);
    }

    #[test]
    fn refuses_two_default_routes() {
        let e = build_err(&[api(
            None,
            None,
            &["$default"],
            &["$default", "GET /", "$default"],
        )]);
        assert!(
            e.contains("API #0") && e.contains("$default") && e.contains("#0") && e.contains("#2"),
            "{e}"
        );
    }

    #[test]
    fn refuses_same_host_and_base_path() {
        let e = build_err(&[
            api(Some("API.example.com"), Some("v1"), &["$default"], &[]),
            api(Some("api.example.com"), Some("v2"), &["$default"], &[]),
            api(Some("api.EXAMPLE.com"), Some("v1"), &["$default"], &[]),
        ]);
        assert!(
            e.contains("API #0") && e.contains("API #2") && e.contains("same host and base path"),
            "{e}"
        );
        let e = build_err(&[
            api(Some("*.a.com"), None, &["$default"], &[]),
            api(Some("*.A.com"), None, &["$default"], &[]),
        ]);
        assert!(e.contains("API #1"), "{e}");
        let e = build_err(&[
            api(None, None, &["$default"], &[]),
            api(None, None, &["$default"], &[]),
        ]);
        assert!(e.contains("API #1"), "{e}");
        // Same base path on different hosts or host classes is fine.
        Router::build(&[
            api(None, Some("v1"), &["$default"], &[]),
            api(Some("a.com"), Some("v1"), &["$default"], &[]),
            api(Some("*.a.com"), Some("v1"), &["$default"], &[]),
        ])
        .unwrap();
    }

    #[test]
    fn refuses_duplicate_or_invalid_stages() {
        let e = build_err(&[api(None, None, &["prod", "$default", "prod"], &[])]);
        assert!(
            e.contains("API #0") && e.contains("\"prod\" is declared twice"),
            "{e}"
        );
        let e = build_err(&[api(None, None, &["$default", "$default"], &[])]);
        assert!(e.contains("declared twice"), "{e}");
        for bad in ["", "a/b", "a b", "{x}", "a?", ".", "..", "%zz", "é"] {
            let e = build_err(&[api(None, None, &[bad], &[])]);
            assert!(e.contains("stage name"), "{bad:?}: {e}");
        }
        let e = build_err(&[api(None, None, &[], &[])]);
        assert!(e.contains("no stages"), "{e}");
        Router::build(&[api(None, None, &["v1.0", "a-b_c~", "%41", "x:y@z"], &[])]).unwrap();
    }

    #[test]
    fn refuses_bad_hosts_and_base_paths() {
        for host in [
            "", "*", "*.", "a.*.com", "*a.com", "a com", "a/b", "ä.com", ".a.com", "a.com.",
        ] {
            let e = build_err(&[api(Some(host), None, &["$default"], &[])]);
            assert!(e.contains("host"), "{host:?}: {e}");
        }
        let e = build_err(&[api(Some(&"a".repeat(256)), None, &["$default"], &[])]);
        assert!(e.contains("255"), "{e}");
        for base in ["", "/v1", "v1/", "v1//b", "{x}"] {
            let e = build_err(&[api(None, Some(base), &["$default"], &[])]);
            assert!(e.contains("base path"), "{base:?}: {e}");
        }
    }

    #[test]
    fn refuses_too_many_params() {
        let key: String = (0..=PATH_PARAMS_MAX)
            .map(|i| format!("/{{p{i}}}"))
            .collect();
        let e = build_err(&[api(None, None, &["$default"], &[&format!("GET {key}")])]);
        assert!(e.contains("17 path parameters"), "{e}");
    }

    // ---- the naive reference: every route scored, best kept ----

    type Ranges = Vec<(usize, usize)>;
    /// Per-position segment kinds, then the method rank: lower is more specific.
    type Rank = (Vec<u8>, u8);

    /// Kinds a route segment can have, in order of preference.
    const LIT: u8 = 0;
    const PARAM: u8 = 1;
    const GREEDY: u8 = 2;

    /// Scores one route against a route path whose segments are `segs` (byte ranges into
    /// `path`). `None` if it does not fit; else its per-position kinds and its parameter ranges.
    fn score(
        segments: &[Segment],
        segs: &[(usize, usize)],
        path: &str,
    ) -> Option<(Vec<u8>, Ranges)> {
        let mut kinds = Vec::new();
        let mut ranges = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let &(a, b) = segs.get(i)?;
            match s {
                Segment::Literal(l) if path[a..b] == **l => kinds.push(LIT),
                Segment::Param(_) if b > a => {
                    kinds.push(PARAM);
                    ranges.push((a, b));
                }
                Segment::Greedy(_) if path.len() > a => {
                    kinds.push(GREEDY);
                    ranges.push((a, path.len()));
                    return Some((kinds, ranges));
                }
                _ => return None,
            }
        }
        (segments.len() == segs.len()).then_some((kinds, ranges))
    }

    /// How well a route's method serves the request: lower is better, `None` not at all.
    fn method_rank(route: Method, request: &str) -> Option<u8> {
        match (route, request) {
            (Method::Any, _) => Some(2),
            (Method::Get, "HEAD") => Some(1),
            (m, r) if m.as_str() == r && r != "ANY" => Some(0),
            _ => None,
        }
    }

    /// The route for `path[start..]` (the route path, `""` meaning `/`) in `routes`.
    fn naive_route(
        routes: &[RouteKey],
        method: &str,
        path: &str,
        start: usize,
    ) -> Option<(usize, Ranges)> {
        let rp = &path[start..];
        let mut segs = Vec::new();
        if rp.len() > 1 {
            let mut at = start + 1;
            for part in rp[1..].split('/') {
                segs.push((at, at + part.len()));
                at += part.len() + 1;
            }
        }
        let mut best: Option<(Rank, usize, Ranges)> = None;
        for (i, key) in routes.iter().enumerate() {
            let RouteKey::Path {
                method: m,
                segments,
            } = key
            else {
                continue;
            };
            let Some(mr) = method_rank(*m, method) else {
                continue;
            };
            let Some((kinds, ranges)) = score(segments, &segs, path) else {
                continue;
            };
            let rank = (kinds, mr);
            if best.as_ref().is_none_or(|b| rank < b.0) {
                best = Some((rank, i, ranges));
            }
        }
        match best {
            Some((_, i, ranges)) => Some((i, ranges)),
            None => routes
                .iter()
                .position(|k| *k == RouteKey::Default)
                .map(|i| (i, Vec::new())),
        }
    }

    /// The whole request, naively: every API scored by (host class, suffix, base path).
    fn naive_find(
        apis: &[ApiSpec],
        host: &str,
        method: &str,
        path: &str,
    ) -> Option<(Match, Vec<String>)> {
        let host = host.to_ascii_lowercase();
        let mut best: Option<((u8, isize, isize), usize, usize)> = None;
        for (i, a) in apis.iter().enumerate() {
            let class = match a.host.as_deref().map(str::to_ascii_lowercase) {
                None => (2, 0),
                Some(_) if host.len() > 255 => continue,
                Some(h) if h.starts_with("*.") => {
                    let suffix = &h[1..];
                    if !(host.ends_with(suffix) && host.len() > suffix.len()) {
                        continue;
                    }
                    (1, -(suffix.len() as isize))
                }
                Some(h) if h == host => (0, 0),
                Some(_) => continue,
            };
            let base_end = match &a.base_path {
                None => 0,
                Some(b) => {
                    let prefix = format!("/{b}");
                    if path == prefix || path.starts_with(&format!("{prefix}/")) {
                        prefix.len()
                    } else {
                        continue;
                    }
                }
            };
            let rank = (class.0, class.1, -(base_end as isize));
            if path.starts_with('/') && best.is_none_or(|b| rank < b.0) {
                best = Some((rank, i, base_end));
            }
        }
        let (_, api, base_end) = best?;
        let rem = &path[base_end..];
        let next = rem.strip_prefix('/').and_then(|r| r.split('/').next());
        let named = apis[api]
            .stages
            .iter()
            .position(|s| s != "$default" && Some(s.as_str()) == next);
        let (stage, start) = match named {
            Some(s) => (s, base_end + 1 + apis[api].stages[s].len()),
            None => (
                apis[api].stages.iter().position(|s| s == "$default")?,
                base_end,
            ),
        };
        let (route, ranges) = naive_route(&apis[api].routes, method, path, start)?;
        let vals = ranges
            .iter()
            .map(|&(a, b)| path[a..b].to_string())
            .collect();
        Some((Match { api, stage, route }, vals))
    }

    fn router_find(
        t: &Router,
        host: &str,
        method: &str,
        path: &str,
    ) -> Option<(Match, Vec<String>)> {
        let mut p = Params::default();
        let m = t.find(host, method, path, &mut p)?;
        Some((
            m,
            (0..p.len())
                .map(|i| p.get(path, i).unwrap().to_string())
                .collect(),
        ))
    }

    /// Route keys over a small alphabet so that prefixes, shapes and conflicts collide.
    fn key_strategy() -> impl Strategy<Value = String> {
        let seg = prop_oneof![Just("a"), Just("b"), Just("c"), Just("{p}"), Just("{q}")];
        let method = prop_oneof![Just("GET"), Just("HEAD"), Just("POST"), Just("ANY")];
        let path = (
            prop::collection::vec(seg, 0..4),
            prop::option::weighted(0.3, Just("{g+}")),
        );
        prop_oneof![
            1 => Just("$default".to_string()),
            12 => (method, path).prop_map(|(m, (segs, greedy))| {
                // Number the names so keys never repeat a parameter.
                let mut p: Vec<String> = segs.iter().enumerate().map(|(i, s)| s.replace('}', &format!("{i}}}"))).collect();
                p.extend(greedy.map(str::to_string));
                format!("{m} /{}", p.join("/"))
            }),
        ]
    }

    /// The shape of a key: its method and segments with parameter names erased.
    fn shape(k: &RouteKey) -> String {
        match k {
            RouteKey::Default => "$default".into(),
            RouteKey::Path { method, segments } => {
                let s: Vec<&str> = segments
                    .iter()
                    .map(|s| match s {
                        Segment::Literal(l) => l.as_str(),
                        Segment::Param(_) => "{}",
                        Segment::Greedy(_) => "{+}",
                    })
                    .collect();
                format!("{} /{}", method.as_str(), s.join("/"))
            }
        }
    }

    /// Parses keys, dropping any whose shape an earlier key already has.
    fn distinct(keys: &[String]) -> Vec<RouteKey> {
        let mut seen = std::collections::HashSet::new();
        keys.iter()
            .map(|k| RouteKey::parse(k).unwrap())
            .filter(|k| seen.insert(shape(k)))
            .collect()
    }

    fn path_strategy(alphabet: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 0..6)
            .prop_map(|s| format!("/{}", s.join("/")))
    }

    fn method_strategy() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["GET", "HEAD", "POST", "PUT", "ANY", "BREW"][..])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn routes_agree_with_naive(
            keys in prop::collection::vec(key_strategy(), 0..14),
            requests in prop::collection::vec(
                (method_strategy(), path_strategy(&["a", "b", "c", "d", "", "a%2F"])), 1..16),
        ) {
            let routes = distinct(&keys);
            let specs = [ApiSpec { host: None, base_path: None, stages: vec!["$default".into()], routes }];
            let t = Router::build(&specs).unwrap();
            for (method, path) in &requests {
                let got = router_find(&t, "h", method, path);
                let want = naive_find(&specs, "h", method, path);
                prop_assert_eq!(got, want, "{} {} with {:?}", method, path, keys);
            }
        }

        #[test]
        fn build_refuses_exactly_the_duplicates(keys in prop::collection::vec(key_strategy(), 0..10)) {
            let routes: Vec<RouteKey> = keys.iter().map(|k| RouteKey::parse(k).unwrap()).collect();
            let dup = distinct(&keys).len() != routes.len();
            let specs = [ApiSpec { host: None, base_path: None, stages: vec!["$default".into()], routes }];
            prop_assert_eq!(Router::build(&specs).is_err(), dup);
        }
    }

    fn api_strategy() -> impl Strategy<Value = ApiSpec> {
        let host = prop::sample::select(
            &[
                None,
                Some("api.example.com"),
                Some("API.example.com"),
                Some("*.example.com"),
                Some("*.b.example.com"),
                Some("other.org"),
            ][..],
        );
        let base = prop::sample::select(&[None, Some("v1"), Some("v1/beta"), Some("a")][..]);
        let stages =
            prop::sample::subsequence(&["$default", "prod", "a"][..], 1..=3).prop_shuffle();
        (
            host,
            base,
            stages,
            prop::collection::vec(key_strategy(), 0..6),
        )
            .prop_map(|(h, b, s, keys)| ApiSpec {
                host: h.map(str::to_string),
                base_path: b.map(str::to_string),
                stages: s.iter().map(|s| s.to_string()).collect(),
                routes: distinct(&keys),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn requests_agree_with_naive(
            apis in prop::collection::vec(api_strategy(), 1..7),
            requests in prop::collection::vec((
                prop::sample::select(&["api.example.com", "API.EXAMPLE.COM", "x.example.com", "x.B.example.com",
                    "b.example.com", "example.com", "other.org", "", "a.other.org"][..]),
                method_strategy(),
                path_strategy(&["v1", "beta", "prod", "a", "b", ""]),
            ), 1..16),
        ) {
            // Keep the first API of each host and base path, as build would refuse the rest.
            let mut seen = std::collections::HashSet::new();
            let apis: Vec<ApiSpec> = apis
                .into_iter()
                .filter(|a| seen.insert((a.host.as_ref().map(|h| h.to_ascii_lowercase()), a.base_path.clone())))
                .collect();
            let t = Router::build(&apis).unwrap();
            for (host, method, path) in &requests {
                let got = router_find(&t, host, method, path);
                let want = naive_find(&apis, host, method, path);
                prop_assert_eq!(got, want, "{} {} {}", host, method, path);
            }
        }
    }
}
