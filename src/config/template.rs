//! Templates in config values: `${stageVariables.x}`, `${request.path.p}` and, in proxy URIs,
//! `{p}` (a path parameter, `{proxy}` for a greedy one).
//!
//! This module owns the template syntax: parsing, printing, and substituting stage variables. It
//! does not know which variables or parameters exist; `load` checks references against the route
//! key and the stages, and the runtime fills path parameters per request.

use std::collections::BTreeMap;
use std::fmt;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    StageVar(String),
    PathParam(String),
}

/// A parsed template.
///
/// Invariant: no empty `Literal` and no two adjacent `Literal`s, so equal templates have equal
/// parts and `is_literal` needs to look at one part only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

const STAGE_VAR_PREFIX: &str = "stageVariables.";
const PATH_PARAM_PREFIX: &str = "request.path.";

impl Template {
    /// Mock headers and bodies: `${stageVariables.x}` and `${request.path.p}`; any other `${...}`
    /// is an error; `$` and `{` alone are literal (JSON bodies).
    pub fn parse_text(s: &str) -> Result<Template, String> {
        parse(s, false)
    }

    /// Proxy URIs: as `parse_text`, plus `{p}` for path parameter `p` (a greedy `{p+}` of the
    /// route key is written `{p}` here). Any other `{` or `}` is an error.
    pub fn parse_uri(s: &str) -> Result<Template, String> {
        parse(s, true)
    }

    /// Names of the stage variables referenced, in template order, repeats included.
    pub fn stage_vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::StageVar(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Names of the path parameters referenced, in template order, repeats included.
    pub fn path_params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::PathParam(p) => Some(p.as_str()),
            _ => None,
        })
    }

    /// Replaces every stage variable found in `vars` by its value. Variables not in `vars` stay.
    pub fn substitute_stage_vars(&self, vars: &BTreeMap<String, String>) -> Template {
        let mut out = Builder::default();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.literal(l),
                Part::StageVar(v) => match vars.get(v) {
                    Some(value) => out.literal(value),
                    None => out.push(part.clone()),
                },
                Part::PathParam(_) => out.push(part.clone()),
            }
        }
        out.finish()
    }

    /// The whole text when the template has no variables (`""` for an empty template).
    pub fn is_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(l)] => Some(l),
            _ => None,
        }
    }
}

/// Prints the `parse_text` form: `parse_text(&t.to_string()) == Ok(t)` for text templates.
impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(l) => f.write_str(l)?,
                Part::StageVar(v) => write!(f, "${{{STAGE_VAR_PREFIX}{v}}}")?,
                Part::PathParam(p) => write!(f, "${{{PATH_PARAM_PREFIX}{p}}}")?,
            }
        }
        Ok(())
    }
}

/// Collects parts, keeping the `Template` invariant.
#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
}

impl Builder {
    fn literal(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        match self.parts.last_mut() {
            Some(Part::Literal(l)) => l.push_str(s),
            _ => self.parts.push(Part::Literal(s.to_string())),
        }
    }

    fn push(&mut self, part: Part) {
        match part {
            Part::Literal(l) => self.literal(&l),
            other => self.parts.push(other),
        }
    }

    fn finish(self) -> Template {
        Template { parts: self.parts }
    }
}

fn parse(s: &str, uri: bool) -> Result<Template, String> {
    let bytes = s.as_bytes();
    let mut out = Builder::default();
    let mut literal_start = 0;
    let mut i = 0;
    // Every index below points at an ASCII byte ('$', '{', '}'), so slicing is on char
    // boundaries.
    while i < bytes.len() {
        let (part, end) = match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let Some(close) = s[i + 2..].find('}') else {
                    return Err(format!(
                        "unclosed \"${{\" in {s:?} (expected ${{stageVariables.NAME}} or ${{request.path.NAME}})"
                    ));
                };
                let end = i + 2 + close + 1;
                (variable(&s[i + 2..end - 1])?, end)
            }
            b'{' if uri => {
                let Some(close) = s[i + 1..].find('}') else {
                    return Err(format!(
                        "unclosed '{{' in URI {s:?} (a path parameter is written {{name}})"
                    ));
                };
                let end = i + 1 + close + 1;
                (uri_param(&s[i + 1..end - 1])?, end)
            }
            b'}' if uri => {
                return Err(format!(
                    "unmatched '}}' in URI {s:?} (a path parameter is written {{name}})"
                ));
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.literal(&s[literal_start..i]);
        out.push(part);
        i = end;
        literal_start = end;
    }
    out.literal(&s[literal_start..]);
    Ok(out.finish())
}

/// The inside of `${...}`.
fn variable(inner: &str) -> Result<Part, String> {
    let (prefix, make): (&str, fn(String) -> Part) = if inner.starts_with(STAGE_VAR_PREFIX) {
        (STAGE_VAR_PREFIX, Part::StageVar)
    } else if inner.starts_with(PATH_PARAM_PREFIX) {
        (PATH_PARAM_PREFIX, Part::PathParam)
    } else {
        return Err(format!(
            "unknown template variable ${{{inner}}} (expected ${{stageVariables.NAME}} or ${{request.path.NAME}})"
        ));
    };
    let name = &inner[prefix.len()..];
    if !is_name(name) {
        return Err(format!(
            "template variable ${{{inner}}}: the name must be letters, digits or '_'"
        ));
    }
    Ok(make(name.to_string()))
}

/// The inside of `{...}` in a URI.
fn uri_param(inner: &str) -> Result<Part, String> {
    if is_name(inner) {
        return Ok(Part::PathParam(inner.to_string()));
    }
    if let Some(name) = inner.strip_suffix('+')
        && is_name(name)
    {
        return Err(format!(
            "in a URI a greedy path parameter is written without '+': {{{name}}}, not {{{inner}}}"
        ));
    }
    Err(format!(
        "invalid path parameter {{{inner}}} in URI (a path parameter is written {{name}}, name of letters, digits or '_')"
    ))
}

/// Stage variable and path parameter names: `[A-Za-z0-9_]+`, as route keys allow.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lit(s: &str) -> Part {
        Part::Literal(s.to_string())
    }
    fn var(s: &str) -> Part {
        Part::StageVar(s.to_string())
    }
    fn param(s: &str) -> Part {
        Part::PathParam(s.to_string())
    }

    #[test]
    fn text_variables_and_literal_braces() {
        let t =
            Template::parse_text(r#"{"hi":"${request.path.name}","env":"${stageVariables.env}"}"#)
                .unwrap();
        assert_eq!(
            t.parts,
            vec![
                lit(r#"{"hi":""#),
                param("name"),
                lit(r#"","env":""#),
                var("env"),
                lit(r#""}"#)
            ]
        );
        assert_eq!(Template::parse_text("").unwrap().parts, vec![]);
        assert_eq!(
            Template::parse_text("$ { } $x {y}").unwrap().parts,
            vec![lit("$ { } $x {y}")]
        );
        assert_eq!(
            Template::parse_text("$${stageVariables.a}$").unwrap().parts,
            vec![lit("$"), var("a"), lit("$")]
        );
    }

    #[test]
    fn text_refuses_unknown_and_unclosed() {
        for (s, want) in [
            ("${foo}", "${foo}"),
            ("a ${request.body.x} b", "${request.body.x}"),
            ("${stageVariables.}", "${stageVariables.}"),
            ("${request.path.a-b}", "${request.path.a-b}"),
            ("x ${stageVariables.a", "unclosed"),
        ] {
            let e = Template::parse_text(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn uri_params() {
        let t =
            Template::parse_uri("http://${stageVariables.backend}/orders/{id}/${request.path.x}")
                .unwrap();
        assert_eq!(
            t.parts,
            vec![
                lit("http://"),
                var("backend"),
                lit("/orders/"),
                param("id"),
                lit("/"),
                param("x")
            ]
        );
        assert_eq!(t.path_params().collect::<Vec<_>>(), ["id", "x"]);
        assert_eq!(t.stage_vars().collect::<Vec<_>>(), ["backend"]);
    }

    #[test]
    fn uri_refuses_stray_braces() {
        for (s, want) in [
            ("http://h/{proxy+}", "without '+'"),
            ("http://h/{}", "invalid path parameter {}"),
            ("http://h/{a-b}", "invalid path parameter {a-b}"),
            ("http://h/{a", "unclosed '{'"),
            ("http://h/a}", "unmatched '}'"),
            ("http://h/${x}", "${x}"),
        ] {
            let e = Template::parse_uri(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        // The same text is fine outside a URI.
        assert!(Template::parse_text("http://h/{a-b}").is_ok());
    }

    #[test]
    fn substitution_merges_literals() {
        let t = Template::parse_uri("http://${stageVariables.h}:${stageVariables.p}/{x}").unwrap();
        let vars = BTreeMap::from([("h".to_string(), "10.0.0.1".to_string())]);
        assert_eq!(
            t.substitute_stage_vars(&vars).parts,
            vec![lit("http://10.0.0.1:"), var("p"), lit("/"), param("x")]
        );
        let vars = BTreeMap::from([
            ("h".to_string(), "10.0.0.1".to_string()),
            ("p".to_string(), String::new()),
        ]);
        assert_eq!(
            t.substitute_stage_vars(&vars).parts,
            vec![lit("http://10.0.0.1:/"), param("x")]
        );
        let t = Template::parse_text("${stageVariables.a}${stageVariables.b}").unwrap();
        let vars = BTreeMap::from([("a".into(), "x".into()), ("b".into(), "y".into())]);
        assert_eq!(t.substitute_stage_vars(&vars).is_literal(), Some("xy"));
    }

    #[test]
    fn is_literal() {
        assert_eq!(Template::parse_text("").unwrap().is_literal(), Some(""));
        assert_eq!(
            Template::parse_text("abc {").unwrap().is_literal(),
            Some("abc {")
        );
        assert_eq!(
            Template::parse_text("a${request.path.p}")
                .unwrap()
                .is_literal(),
            None
        );
    }

    /// A valid text template as parts, with the text it is written as.
    fn text_parts() -> impl Strategy<Value = Vec<Part>> {
        let name = "[A-Za-z0-9_]{1,6}";
        let part = prop_oneof![
            3 => "[a-z${}\" é\n]{0,6}".prop_map(Part::Literal),
            1 => name.prop_map(Part::StageVar),
            1 => name.prop_map(Part::PathParam),
        ];
        prop::collection::vec(part, 0..8)
    }

    /// The naive model: what parsing the concatenation should give.
    fn normalize(parts: &[Part]) -> Vec<Part> {
        let mut b = Builder::default();
        for p in parts {
            b.push(p.clone());
        }
        b.parts
    }

    proptest! {
        #[test]
        fn text_round_trip(parts in text_parts()) {
            let model = normalize(&parts);
            // Literals that join into "${" would be a variable, not text: not a valid template.
            prop_assume!(model.iter().all(|p| !matches!(p, Part::Literal(l) if l.contains("${"))));
            let text = Template { parts: model.clone() }.to_string();
            let parsed = Template::parse_text(&text).unwrap();
            prop_assert_eq!(&parsed.parts, &model);
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn parse_never_panics(s in "(\\$|\\{|\\}|stageVariables\\.|request\\.path\\.|[a-z+.]|é){0,24}") {
            if let Ok(t) = Template::parse_text(&s) {
                prop_assert_eq!(t.to_string(), s.clone());
            }
            let _ = Template::parse_uri(&s);
        }

        #[test]
        fn parse_never_panics_arbitrary(s in any::<String>()) {
            let _ = Template::parse_text(&s);
            let _ = Template::parse_uri(&s);
        }
    }
}
