//! The compiled routing table: host → base path → stage → segment trie.

use super::RouteKey;
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
        Params { len: 0, ranges: [(0, 0); PATH_PARAMS_MAX] }
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
    _todo: (),
}

impl Router {
    pub fn build(apis: &[ApiSpec]) -> Result<Router, RouterError> {
        let _ = apis;
        todo!("router helper")
    }

    /// Finds the route for a request. `host` is the Host header without port (any case);
    /// `method` the request method; `path` the request path without query string.
    pub fn find(&self, host: &str, method: &str, path: &str, params: &mut Params) -> Option<Match> {
        let _ = (host, method, path, params);
        todo!("router helper")
    }
}
