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
        Some("server:\n  listen: \"8.8.8.8:80\"\nendpoints:\n  - path: nope\n    target: ftp://x\n  - path: /a\n    target: http://h\n    enabeld: true\n"),
    );
    assert_eq!(code, 64);
    for needle in [
        "server.listen: must be a loopback",
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
