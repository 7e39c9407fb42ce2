//! The command line: check, exit codes, healthcheck, conf/ examples.

use crate::common::*;

#[test]
fn check_accepts_every_shipped_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.to_string_lossy().contains("alert")
        {
            let out = std::process::Command::new(bin())
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 3, "expected at least three configs in conf/");
}

#[test]
fn invalid_config_exits_64_with_every_error() {
    let (code, _, err) = run_cli(
        &["check"],
        Some("server:\n  listen: \"8.8.8.8:80\"\n  threads: 0\nlimits:\n  max_headers: 257\nendpoints:\n  - path: nope\n    target: ftp://x\n  - path: /a\n    target: http://h\n    enabeld: true\n"),
    );
    assert_eq!(code, 64);
    for needle in [
        "server.listen: must be a loopback",
        "server.threads: must be between 1 and 256",
        "limits.max_headers: must be between 1 and 256",
        "endpoints[0].path: must start with /",
        "endpoints[0].target: scheme must be http or https",
        "endpoints[1].enabeld: unknown key",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // Running (not only checking) refuses the same config with the same code.
    let (code, _, err) = run_cli(&[], Some("endpoints: []\n"));
    assert_eq!(code, 64);
    assert!(
        err.contains("endpoints: at least one endpoint is required"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["check"], Some("server: [1, 2\n"));
    assert_eq!(code, 64);
    assert!(err.contains("invalid YAML"), "{err}");
    let (code, _, err) = run_cli(
        &["check"],
        Some("endpoints:\n  - path: /a\n    target: http://h\n    enabled: maybe\n"),
    );
    assert_eq!(code, 64);
    assert!(err.contains("endpoints[0].enabled"), "{err}");
    let (code, _, err) = run_cli(&["check", "--config", "/nonexistent/tb.yaml"], None);
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/tb.yaml"), "{err}");
}

#[test]
fn invalid_tls_config_names_each_field() {
    let (code, _, err) = run_cli(
        &["check"],
        Some("tls:\n  mode: acme\n  acme:\n    domains: [\"*.example.com\", \"localhost\", \"ok.example.com\", \"OK.example.com\", \"10.0.0.1\", \"b\u{fc}cher.example\"]\n    email: not-an-address\n    directory_url: http://acme.example/dir\n    challenge: dns-01\n    retry_initial: 0s\n    eab:\n      kid: k\n    colour: blue\nendpoints:\n  - path: /a\n    target: http://h\n"),
    );
    assert_eq!(code, 64, "{err}");
    for needle in [
        "tls.acme.domains[0]: `*.example.com`: wildcard names need the DNS-01 challenge",
        "tls.acme.domains[1]: `localhost`: must be a fully qualified name",
        "tls.acme.domains[3]: `OK.example.com` is listed twice",
        "tls.acme.domains[4]: `10.0.0.1`: IP addresses are not supported",
        "tls.acme.domains[5]: `b\u{fc}cher.example`: write internationalised names in their xn-- (punycode) form",
        "tls.acme.email: `not-an-address` is not an email address",
        "tls.acme.directory_url: `http://acme.example/dir`: an ACME directory is served over https://",
        "tls.acme.challenge: `dns-01` is not one of tls-alpn-01, http-01",
        "tls.acme.retry_initial: must be greater than zero",
        "tls.acme.eab.hmac_key: required when tls.acme.eab is set",
        "tls.acme.colour: unknown key",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    let (code, _, err) = run_cli(
        &["check"],
        Some("tls:\n  mode: acme\n  acme:\n    domains: [mcp.example.com]\n    challenge: http-01\nendpoints:\n  - path: /a\n    target: http://h\n"),
    );
    assert_eq!(code, 64);
    assert!(
        err.contains(
            "tls.acme.challenge: http-01 is answered on tls.http_listen, which is not set"
        ),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &["check"],
        Some("tls:\n  mode: off\n  http_listen: \"0.0.0.0:80\"\nendpoints:\n  - path: /a\n    target: http://h\n"),
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("tls.http_listen: redirects to HTTPS, so it needs tls.mode files or acme"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &["check"],
        Some("tls:\n  mode: acme\nendpoints:\n  - path: /a\n    target: http://h\n"),
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("tls.acme: required when tls.mode is acme"),
        "{err}"
    );
}

#[test]
fn check_refuses_certificate_files_that_do_not_load_or_match() {
    let (d1, d2) = (temp_dir("check-tls1"), temp_dir("check-tls2"));
    let (c1, k1) = self_signed(&d1);
    let (_, k2) = self_signed(&d2);
    let cfg = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "tls:\n  mode: files\n  cert_file: {}\n  key_file: {}\nendpoints:\n  - path: /a\n    target: http://h\n",
            cert.display(),
            key.display()
        )
    };
    let (code, out, err) = run_cli(&["check"], Some(&cfg(&c1, &k1)));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run_cli(&["check"], Some(&cfg(&c1, &k2)));
    assert_eq!(code, 64);
    assert!(
        err.contains("tls.key_file does not match tls.cert_file"),
        "{err}"
    );
    let missing = d1.join("nope.pem");
    let (code, _, err) = run_cli(&["check"], Some(&cfg(&missing, &k1)));
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!("tls.cert_file {}", missing.display())),
        "{err}"
    );
}

#[test]
fn acme_start_errors_are_clear() {
    // A storage directory that cannot be created stops the start (exit 1) and names itself.
    let blocker = temp_dir("acme-blocker").join("file");
    std::fs::write(&blocker, "").unwrap();
    let (code, _, err) = run_cli(
        &[],
        Some(&format!(
            "server:\n  listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"\"\ntls:\n  mode: acme\n  acme:\n    domains: [mcp.example.com]\n    storage_dir: {}/acme\ntailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: http://127.0.0.1:1/\n",
            free_port(),
            blocker.display()
        )),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("tls.acme.storage_dir {}/acme", blocker.display())),
        "{err}"
    );
    // So does a ca_root_file that is not a certificate.
    let (code, _, err) = run_cli(
        &[],
        Some(&format!(
            "server:\n  listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"\"\ntls:\n  mode: acme\n  acme:\n    domains: [mcp.example.com]\n    ca_root_file: {}\n    storage_dir: {}\ntailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: http://127.0.0.1:1/\n",
            free_port(),
            blocker.display(),
            temp_dir("acme-store").display()
        )),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("tls.acme.ca_root_file {}", blocker.display())),
        "{err}"
    );
}

#[test]
fn missing_secret_env_exits_64() {
    let (code, _, err) = run_cli(
        &[],
        Some(&format!(
            "server:\n  listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"\"\ntailnet:\n  mode: direct\nauth:\n  issuer: https://idp.example.ts.net\n  audience: https://mcp.example.com\n  introspection_url: https://idp.example.ts.net/introspect\n  client_id: c\n  client_secret_env: TB_SURELY_UNSET_SECRET\nendpoints:\n  - path: /a\n    target: http://127.0.0.1:1/\n",
            free_port()
        )),
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("auth.client_secret: environment variable TB_SURELY_UNSET_SECRET is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn healthcheck_command() {
    let up = Upstream::start().await;
    let b = Bridge::start(
        "",
        &format!(
            "tailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: {}\n",
            up.url("/")
        ),
    )
    .await;
    let ok = std::process::Command::new(bin())
        .args(["healthcheck", "--url", &b.admin("/healthz")])
        .status()
        .unwrap();
    assert!(ok.success());
    let bad = std::process::Command::new(bin())
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}/healthz", free_port()),
        ])
        .status()
        .unwrap();
    assert_eq!(bad.code(), Some(1));
    let v = std::process::Command::new(bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn notifies_systemd_when_listening() {
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let up = Upstream::start().await;
    let b = Bridge::start_with_env(
        "",
        &format!(
            "tailnet:\n  mode: direct\nendpoints:\n  - path: /a\n    target: {}\n",
            up.url("/")
        ),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    )
    .await;
    let mut buf = [0u8; 256];
    let n = tokio::task::spawn_blocking(move || sock.recv(&mut buf).map(|n| (n, buf)))
        .await
        .unwrap()
        .expect("no sd_notify message");
    let msg = String::from_utf8_lossy(&n.1[..n.0]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    drop(b);
}

/// The shipped reference config, `conf/tailbridge.yaml`.
fn reference() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tailbridge.yaml")).unwrap()
}

/// A top-level section header, commented out or not: `server:`, `# auth:`.
fn section_header(line: &str) -> Option<&str> {
    let l = line.strip_prefix("# ").unwrap_or(line);
    let (name, _) = l.split_once(':')?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(name)
}

/// The reference with its commented-out optional sections switched on: a line `# key: …` or
/// `#   …` at column 0 loses its `# `; indented comments (alternatives) stay comments.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with(' ') || section_header(l).is_some() => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_reference_config_documents_every_key_the_parser_accepts() {
    let text = reference();
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    for (path, keys) in tailbridge::config::SECTIONS {
        let top = path.split(['.', '[']).next().unwrap_or_default();
        // The lines of the top-level section the keys belong to (the whole file for the top).
        let block: Vec<&str> = if top.is_empty() {
            lines
                .iter()
                .filter(|l| section_header(l).is_some())
                .copied()
                .collect()
        } else {
            let start = lines
                .iter()
                .position(|l| section_header(l) == Some(top))
                .unwrap_or_else(|| panic!("no `{top}:` section in conf/tailbridge.yaml"));
            let end = lines[start + 1..]
                .iter()
                .position(|l| section_header(l).is_some())
                .map_or(lines.len(), |n| start + 1 + n);
            lines[start..end].to_vec()
        };
        for key in *keys {
            let documented = block.iter().any(|l| {
                let l = l.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
                let l = l.strip_prefix("- ").unwrap_or(l);
                l.starts_with(&format!("{key}:"))
            });
            if !documented {
                missing.push(format!("{path}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "conf/tailbridge.yaml does not document: {missing:?}"
    );
}

#[test]
fn the_reference_config_is_valid_with_its_optional_sections_switched_on() {
    let text = uncommented(&reference());
    assert!(
        text.contains("\nauth:\n"),
        "the auth section was not switched on"
    );
    if let Err(e) = tailbridge::config::parse(&text) {
        panic!("the uncommented reference config is invalid: {e:?}\n{text}");
    }
}

#[test]
fn check_explain_prints_the_effective_config_without_secrets() {
    let cfg = concat!(
        "server:\n  public_url: https://mcp.example.com\n",
        "auth:\n  issuer: https://idp.t.ts.net\n  audience: https://mcp.example.com\n",
        "  introspection_url: https://idp.t.ts.net/introspect\n  client_id: c\n",
        "  client_secret: very-secret-value\n",
        "endpoints:\n  - path: /a\n    target: http://h/mcp\n",
    );
    let (code, out, err) = run_cli(&["check", "--explain"], Some(cfg));
    assert_eq!(code, 0, "{err}");
    for default in [
        "per_client_burst: 20",
        "global_burst: 100",
        "first_byte: 300s",
        "max_headers: 100",
    ] {
        assert!(out.contains(default), "missing default `{default}`:\n{out}");
    }
    assert!(!out.contains("very-secret-value"), "a secret was printed");
    assert!(out.contains("Inline(<redacted>)"), "{out}");
}

#[test]
fn the_kubernetes_manifests_validate_and_carry_a_valid_config() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let validator = root.join("tests/py/.venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "kubernetes-validate not installed: run tests/run.sh (it installs it into tests/py/.venv)"
    );
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    let out = std::process::Command::new(&validator)
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The config the ConfigMap carries, as the init container writes it for pod 0.
    let cm = std::fs::read_to_string(root.join("deploy/kubernetes/config.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(cm.split("\n---\n").next().unwrap()).unwrap();
    let config = doc["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .replace("POD_NAME", "tailbridge-0");
    let (code, out, err) = run_cli(&["check"], Some(&config));
    assert_eq!(code, 0, "{out}{err}");
}
