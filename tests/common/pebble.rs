//! Pebble, the ACME test CA (Debian package `pebble`), on loopback.
//!
//! `pebble-challtestsrv` answers pebble's DNS queries with 127.0.0.1 for every name, so any
//! test domain validates against the bridge. Pebble's own HTTPS certificate comes from a
//! throwaway CA made here with openssl: that CA is what the bridge gets as `ca_root_file`.
//! The certificates pebble issues chain to a root served on its management port.

use super::{free_port, temp_dir, HANG_GUARD};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test domain; challtestsrv resolves it to 127.0.0.1.
pub const DOMAIN: &str = "mcp.tailbridge.test";

pub struct Pebble {
    pebble: Option<Child>,
    challtestsrv: Child,
    pub dir: PathBuf,
    /// Trust anchor for pebble's own HTTPS (`tls.acme.ca_root_file`).
    pub ca_root_file: PathBuf,
    pub directory_url: String,
    mgmt_port: u16,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pebble {
    /// Start pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`,
    /// issuing certificates valid for `validity_secs`.
    pub async fn start(http_port: u16, tls_port: u16, validity_secs: u64) -> Pebble {
        Self::launch(http_port, tls_port, validity_secs, None).await
    }

    /// Start pebble requiring external account binding with this (kid, base64url key).
    pub async fn start_with_eab(tls_port: u16, kid: &str, key: &str) -> Pebble {
        Self::launch(free_port(), tls_port, 3600, Some((kid, key))).await
    }

    async fn launch(
        http_port: u16,
        tls_port: u16,
        validity_secs: u64,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        let dir = temp_dir("pebble");
        let p = |f: &str| dir.join(f).display().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pebble test ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("req.csr"),
        ]);
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("req.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext"),
            "-out",
            &p("cert.pem"),
        ]);
        let (acme_port, mgmt_port, dns_port, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": p("cert.pem"),
            "privateKey": p("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        if let Some((kid, key)) = eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{chall_mgmt}")])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv not installed (apt-get install pebble)");
        let mut me = Pebble {
            pebble: None,
            challtestsrv,
            ca_root_file: dir.join("ca.pem"),
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            dir: dir.clone(),
            mgmt_port,
        };
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order proves control again: renewals exercise the challenge too.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble not installed (apt-get install pebble)");
        me.pebble = Some(pebble);
        let deadline = Instant::now() + HANG_GUARD;
        while me.get(&me.directory_url).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "pebble never started: {}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        me
    }

    fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_root_file).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(HANG_GUARD)
            .build()
            .unwrap()
    }

    async fn get(&self, url: &str) -> Option<String> {
        let r = self.client().get(url).send().await.ok()?;
        if r.status() != 200 {
            return None;
        }
        r.text().await.ok()
    }

    /// The root that pebble's issued certificates chain to, as PEM.
    pub async fn issuing_root_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.mgmt_port);
        self.get(&url).await.expect("pebble root")
    }

    /// The root that pebble's issued certificates chain to.
    pub async fn issuing_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.issuing_root_pem().await.as_bytes()).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Stop the CA (the DNS stand-in stays): the bridge must keep serving what it has.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}

/// A client that trusts only `root` and reaches `DOMAIN` at 127.0.0.1:`port`. Build one per
/// certificate check: a client's TLS session cache would resume instead of being sent the
/// certificate in service.
pub fn domain_client(root: &reqwest::Certificate, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([root.clone()])
        .resolve(DOMAIN, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(HANG_GUARD)
        .build()
        .unwrap()
}

/// The leaf certificate (DER) a response came over.
pub fn served_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}
