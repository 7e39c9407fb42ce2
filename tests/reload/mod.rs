//! Zero-downtime reload: continuous load and an open SSE stream while `tailbridge reload`
//! replaces the running process.

use crate::common::*;
use futures::StreamExt;

fn config(
    dir: &std::path::Path,
    port: u16,
    admin: u16,
    up: &Upstream,
    extra_endpoint: bool,
) -> String {
    let mut s = format!(
        "server:\n  listen: \"127.0.0.1:{port}\"\n  pid_file: \"{d}/tb.pid\"\n  upgrade_sock: \"{d}/tb.sock\"\n  grace_period: 20s\n  shutdown_timeout: 1s\nadmin:\n  listen: \"127.0.0.1:{admin}\"\ntailnet:\n  mode: direct\nendpoints:\n  - path: /mcp/a\n    target: {a}\n  - path: /mcp/sse\n    target: {sse}\n",
        d = dir.display(),
        a = up.url("/up/a"),
        sse = up.url("/sse"),
    );
    if extra_endpoint {
        s.push_str(&format!(
            "  - path: /mcp/new\n    target: {}\n",
            up.url("/up/new")
        ));
    }
    s
}

#[tokio::test]
async fn reload_under_load_drops_nothing() {
    let up = Upstream::start().await;
    let dir = temp_dir("reload");
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, config(&dir, port, admin, &up, false)).unwrap();
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut first = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(log)
        .spawn()
        .unwrap();
    let c = client();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while c
        .get(url("/livez"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "first process never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // An open event stream on the first process.
    let r = c.get(url("/mcp/sse")).send();
    let (r, tx) = tokio::join!(r, async {
        let tx = up.next_stream().await;
        send_event(&tx, "before").await;
        tx
    });
    let mut stream = r.unwrap().bytes_stream();
    assert!(std::str::from_utf8(&stream.next().await.unwrap().unwrap())
        .unwrap()
        .contains("before"));

    // Continuous load: 4 workers posting until told to stop.
    let load = Load::start(&url("/mcp/a"), vec![(c.clone(), false); 4]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // An invalid config is refused and the running process keeps serving.
    std::fs::write(&cfg, "server:\n  listen: nowhere\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["reload", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));

    // A valid new config (one more endpoint) takes over.
    std::fs::write(&cfg, config(&dir, port, admin, &up, true)).unwrap();
    // The new process inherits the reload command's stdio: give it files, not pipes.
    let reload_log = dir.join("reload.log");
    let status = reload(cfg.clone(), reload_log.clone()).await;
    assert!(
        status.success(),
        "reload failed: {}",
        std::fs::read_to_string(&reload_log).unwrap_or_default()
    );
    let new_pid: i32 = std::fs::read_to_string(dir.join("tb.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, first.id() as i32);
    // For a few seconds both processes accept on the shared socket; then only the new one
    // does. Wait for the new endpoint on fresh connections while the load keeps running.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let r = c
            .post(url("/mcp/new"))
            .header("connection", "close")
            .body("{}")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(
            r.status(),
            404,
            "only the old config's 404 is expected meanwhile"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the new config never went live"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Let the load run past the old process's hand-over window.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    // The stream opened before the reload still delivers (the old process drains).
    send_event(&tx, "after").await;
    let next = tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&next).unwrap().contains("after"));

    let (ok, failed) = load.stop().await;
    eprintln!("reload under load: {ok} requests ok, {failed} failed");
    assert!(ok > 100, "the load did not run: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the reload",
        ok + failed
    );

    // The old process exits once its stream is gone.
    drop(stream);
    drop(tx);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while first.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "old process never exited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = std::process::Command::new("kill")
        .arg(new_pid.to_string())
        .status();
}
