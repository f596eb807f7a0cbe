//! The command line: `tollgate validate FILE` and start-up failures of `tollgate serve`.

mod common;

use std::process::Command;

use common::{bin, config, write_temp_config};

const VALID: &str = r#"
[[api]]
name = "shop"

[[api.route]]
key = "GET /hello/{name}"
integration = { type = "mock", body = "hi ${request.path.name}" }

[[api.route]]
key = "ANY /orders/{proxy+}"
integration = { type = "http_proxy", uri = "http://127.0.0.1:9000/orders/{proxy}" }
"#;

#[test]
fn validate_accepts_a_valid_file() {
    let path = write_temp_config(&config(VALID));
    let out = Command::new(bin())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{}: ok (", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("2 route(s)"), "{stdout}");
}

#[test]
fn validate_accepts_the_quickstart_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    let out = Command::new(bin())
        .arg("validate")
        .arg(path)
        .output()
        .expect("run validate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_error_with_its_position() {
    // Errors on lines 3, 9, 13 and 17.
    let text = r#"[server]
listen = ["127.0.0.1:0"]
backlog = 0

[admin]
listen = "127.0.0.1:0"

[[api]]
name = "bad name!"

[[api.route]]
key = "GET /x"
integration = { type = "mock", status = 99 }

[[api.route]]
key = "GET /y"
integration = { type = "http_proxy", uri = "http://${stageVariables.missing}/y" }
"#;
    let path = write_temp_config(text);
    let out = Command::new(bin())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display().to_string();
    for line in [3, 9, 13, 17] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{p}:{line}:")) && l.contains(": error: ")),
            "no error at {p}:{line}:COL in:\n{stderr}"
        );
    }
    let located = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{p}:")))
        .count();
    assert!(located >= 4, "{stderr}");
    for l in stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{p}:")) && l.contains(": error: "))
    {
        // path:line:col: error: message, with numeric line and column.
        let rest = &l[p.len() + 1..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or_default();
        let col = parts.next().unwrap_or_default();
        assert!(
            line.parse::<usize>().is_ok() && col.parse::<usize>().is_ok(),
            "bad position in {l:?}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for an invalid file"
    );
}

#[test]
fn validate_reports_a_toml_syntax_error_with_its_position() {
    let path = write_temp_config("[server]\nlisten = [\"127.0.0.1:0\"\n");
    let out = Command::new(bin())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:", path.display())), "{stderr}");
}

#[test]
fn validate_of_a_missing_file_fails() {
    let out = Command::new(bin())
        .arg("validate")
        .arg("/nonexistent/tollgate/config.toml")
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}

#[test]
fn serve_with_an_invalid_config_exits_with_the_errors() {
    let path = write_temp_config(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nbacklog = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run serve");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", path.display())),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("tollgate ready"));
}
