//! Templates in config values: `${stageVariables.x}`, `${request.path.p}` and, in proxy URIs,
//! `{p}` (a path parameter, `{proxy}` for a greedy one).

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    StageVar(String),
    PathParam(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    /// Mock headers and bodies: `${stageVariables.x}` and `${request.path.p}`; any other `${...}`
    /// is an error; `{` alone is literal (JSON bodies).
    pub fn parse_text(s: &str) -> Result<Template, String> {
        let _ = s;
        todo!("config helper")
    }

    /// Proxy URIs: as `parse_text`, plus `{p}` for path parameter `p`.
    pub fn parse_uri(s: &str) -> Result<Template, String> {
        let _ = s;
        todo!("config helper")
    }
}
