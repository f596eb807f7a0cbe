//! Route keys as written in config: `"GET /orders/{id}"`, `"ANY /files/{path+}"`, `"$default"`.

use std::fmt;

/// The method part of a route key. `Any` matches every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Any,
}

impl Method {
    /// Every concrete method, in slot order; `Any` is not included.
    pub const CONCRETE: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
    ];

    /// Parses a route-key method (upper case, as in config).
    pub fn from_config(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "ANY" => Method::Any,
            _ => return None,
        })
    }

    /// The method of a request (case-sensitive, RFC 9110). Unknown methods are `None` and can
    /// only match `ANY` routes.
    pub fn from_request(s: &str) -> Option<Method> {
        match s {
            "ANY" => None,
            _ => Method::from_config(s),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Any => "ANY",
        }
    }
}

/// One path segment of a route key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `{name}`: matches one non-empty segment.
    Param(String),
    /// `{name+}`: matches one or more segments, to the end of the path. Last segment only.
    Greedy(String),
}

/// A parsed route key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// `$default`: the catch-all when nothing else matches.
    Default,
    Path {
        method: Method,
        segments: Vec<Segment>,
    },
}

impl RouteKey {
    /// Parses `"$default"` or `"METHOD /path"`. The error says what is wrong, for `validate`.
    pub fn parse(s: &str) -> Result<RouteKey, String> {
        if s == "$default" {
            return Ok(RouteKey::Default);
        }
        let Some((method, path)) = s.split_once(' ') else {
            return Err(format!(
                "route key {s:?} must be \"$default\" or \"METHOD /path\" (e.g. \"GET /orders/{{id}}\")"
            ));
        };
        let method = Method::from_config(method).ok_or_else(|| {
            format!(
                "route key {s:?}: unknown method {method:?} (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY)"
            )
        })?;
        if !path.starts_with('/') {
            return Err(format!("route key {s:?}: the path must start with '/'"));
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = path[1..].split('/').collect();
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                if i == last && i == 0 {
                    break; // "/" alone: the root
                }
                return Err(format!("route key {s:?}: empty path segment"));
            }
            let seg = if let Some(inner) = part.strip_prefix('{') {
                let Some(inner) = inner.strip_suffix('}') else {
                    return Err(format!(
                        "route key {s:?}: unclosed '{{' in segment {part:?}"
                    ));
                };
                let (name, greedy) = match inner.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "route key {s:?}: parameter name {name:?} must be letters, digits or '_'"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!(
                        "route key {s:?}: parameter {{{name}}} appears twice"
                    ));
                }
                names.push(name);
                if greedy {
                    if i != last {
                        return Err(format!(
                            "route key {s:?}: greedy parameter {{{name}+}} must be the last segment"
                        ));
                    }
                    Segment::Greedy(name.to_string())
                } else {
                    Segment::Param(name.to_string())
                }
            } else {
                if part.contains(['{', '}']) {
                    return Err(format!(
                        "route key {s:?}: a parameter must be a whole segment, not {part:?}"
                    ));
                }
                if part
                    .bytes()
                    .any(|b| b <= b' ' || b == b'?' || b == b'#' || b >= 0x7f)
                {
                    return Err(format!(
                        "route key {s:?}: invalid character in segment {part:?}"
                    ));
                }
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(RouteKey::Path { method, segments })
    }

    /// Names of the path parameters, in path order.
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            RouteKey::Default => Vec::new(),
            RouteKey::Path { segments, .. } => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect(),
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Default => f.write_str("$default"),
            RouteKey::Path { method, segments } => {
                write!(f, "{} ", method.as_str())?;
                if segments.is_empty() {
                    return f.write_str("/");
                }
                for s in segments {
                    match s {
                        Segment::Literal(l) => write!(f, "/{l}")?,
                        Segment::Param(n) => write!(f, "/{{{n}}}")?,
                        Segment::Greedy(n) => write!(f, "/{{{n}+}}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for k in [
            "$default",
            "GET /",
            "GET /hello/{name}",
            "ANY /orders/{proxy+}",
            "POST /a/b/c",
        ] {
            assert_eq!(RouteKey::parse(k).unwrap().to_string(), k);
        }
    }

    #[test]
    fn refuses_bad_keys() {
        for k in [
            "GET",
            "FETCH /a",
            "GET a",
            "GET /a//b",
            "GET /{x+}/b",
            "GET /{x}/{x}",
            "GET /a{x}",
            "GET /{}",
            "GET /{x",
            "get /a",
        ] {
            assert!(RouteKey::parse(k).is_err(), "{k} should be refused");
        }
    }
}
