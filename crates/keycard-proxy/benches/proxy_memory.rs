#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Memory of the real `keycard proxy` binary: resident set when idle and
//! with `CONNS` (default 1000) concurrent mTLS connections through its
//! inbound listener, read from `/proc/<pid>/status` (VmRSS, VmHWM).
//!
//! Each connection does a TLS 1.3 mTLS handshake with an SVID, one
//! HTTP/1.1 request through the proxy to an app on loopback, and stays
//! open; then every connection sends a second request, and the proxy's
//! memory is read again.
//!
//! `scripts/bench-proxy-memory` builds the release binary and runs this
//! with RLIMIT_NOFILE raised; by hand: `KEYCARD_BIN=path/to/keycard
//! cargo bench -p keycard-proxy --bench proxy_memory`. Env: CONNS,
//! WORKERS (the proxy's --workers, default 2), TARGET_IDLE_MB (15),
//! TARGET_LOADED_MB (40); exits 1 when a target is missed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keycard_core::SpiffeId;
use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
use keycard_proxy::proxy::outbound::{MtlsConnector, MtlsStream};
use keycard_proxy::proxy::{Bundles, Expected, IdentityState, ProxyContext, Svid};
use keycard_proxy::{compile_str, Authorizer, Mode};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVER: &str = "spiffe://bench.test/ns/prod/sa/api";
const WEB: &str = "spiffe://bench.test/ns/prod/sa/web";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soft descriptor limit of this process (the script raises it; the proxy inherits it).
fn nofile() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Fields of /proc/<pid>/status, in KiB (0 when absent).
fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> [u64; N] {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    names.map(|name| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// (VmRSS, VmHWM) in KiB.
fn mem(pid: u32) -> (u64, u64) {
    let [rss, hwm] = status_kib(pid, ["VmRSS:", "VmHWM:"]);
    (rss, hwm)
}

/// (RssAnon, RssFile) in KiB: the private heap that grows with connections,
/// and the mapped pages of the binary and its libraries.
fn split(pid: u32) -> (u64, u64) {
    let [anon, file] = status_kib(pid, ["RssAnon:", "RssFile:"]);
    (anon, file)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn keycard_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEYCARD_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/keycard")
}

async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the app\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One request on a raw connection; the status line must say 200.
async fn request(s: &mut MtlsStream, buf: &mut Vec<u8>) {
    s.write_all(b"GET /bench/x HTTP/1.1\r\nhost: api\r\n\r\n")
        .await
        .unwrap();
    buf.clear();
    let mut chunk = [0u8; 1024];
    // The response is small: headers and a 19-byte body.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "the proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"hello from the app\n") {
            break;
        }
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(buf)
    );
}

fn main() {
    let conns = env("CONNS", 1000) as usize;
    let workers = env("WORKERS", 2);
    let target_idle = env("TARGET_IDLE_MB", 15) as f64;
    let target_loaded = env("TARGET_LOADED_MB", 40) as f64;
    let nofile = nofile();
    assert!(
        nofile as usize > conns * 2 + 64,
        "RLIMIT_NOFILE is {nofile}: too low for {conns} connections (ulimit -n; scripts/bench-proxy-memory does it)"
    );
    let bin = keycard_bin();
    assert!(
        bin.exists(),
        "{} not built (see scripts/bench-proxy-memory)",
        bin.display()
    );

    let ca = Ca::open(
        CaConfig::new("bench.test".parse().unwrap(), "b"),
        RootSource::Generate,
        &mut keycard_store::MemoryStore::new(),
        &MemoryKeyStore::new(),
        SystemTime::now(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id: SpiffeId = SERVER.parse().unwrap();
    let (s, key) = ca
        .mint_x509_svid_with_key(&id, &SvidOptions::default(), SystemTime::now())
        .unwrap();
    std::fs::write(dir.path().join("svid.pem"), s.chain_pem()).unwrap();
    std::fs::write(dir.path().join("svid.key"), key.to_pem().as_bytes()).unwrap();
    std::fs::write(dir.path().join("bundle.pem"), ca.bundle().x509_pem()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let app_addr = rt.block_on(app());

    let mut child = Command::new(&bin)
        .arg("proxy")
        .arg("--inbound")
        .arg(format!("127.0.0.1:0={app_addr}"))
        .arg("--cert")
        .arg(dir.path().join("svid.pem"))
        .arg("--key")
        .arg(dir.path().join("svid.key"))
        .arg("--bundle")
        .arg(dir.path().join("bundle.pem"))
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--max-connections")
        .arg((conns + 100).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The proxy names its bound addresses on one stderr line.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let inbound: SocketAddr = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "keycard proxy exited"
        );
        if let Some(rest) = line.split("inbound=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Drain the rest of stderr so that the proxy never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, idle_hwm) = mem(pid);
    let idle_split = split(pid);
    let idle_threads = threads(pid);

    let mut bundles = Bundles::new();
    bundles
        .insert(ca.trust_domain().as_str(), &ca.bundle().x509_authorities)
        .unwrap();
    let wid: SpiffeId = WEB.parse().unwrap();
    let (ws, wkey) = ca
        .mint_x509_svid_with_key(&wid, &SvidOptions::default(), SystemTime::now())
        .unwrap();
    let client_svid = Svid::new(
        ws.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(wkey.pkcs8_der().to_vec())),
    )
    .unwrap();
    let ctx = ProxyContext::new(
        IdentityState::with(client_svid, bundles),
        Arc::new(Authorizer::with_policies(
            compile_str("none", "", Mode::Enforce).unwrap(),
        )),
    );
    let connector = Arc::new(
        MtlsConnector::new(
            &ctx,
            inbound,
            Expected::parse(SERVER).unwrap(),
            None,
            &[b"http/1.1"],
        )
        .unwrap(),
    );

    let t0 = Instant::now();
    let (loaded, after_second, open_threads) = rt.block_on(async {
        // Open every connection (100 handshakes at a time) and do one request on each.
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (c, gate) = (connector.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.unwrap();
                let mut s = c.connect().await.expect("mTLS connect");
                let mut buf = Vec::with_capacity(512);
                request(&mut s, &mut buf).await;
                drop(permit);
                s
            }));
        }
        let mut open = Vec::with_capacity(conns);
        for t in tasks {
            open.push(t.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = mem(pid);
        let open_threads = threads(pid);
        // A second request on every open connection, all at once.
        let mut tasks = Vec::with_capacity(conns);
        for mut s in open {
            tasks.push(tokio::spawn(async move {
                let mut buf = Vec::with_capacity(512);
                request(&mut s, &mut buf).await;
                s
            }));
        }
        let mut open = Vec::with_capacity(conns);
        for t in tasks {
            open.push(t.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = (mem(pid), split(pid));
        drop(open);
        (loaded, after, open_threads)
    });
    let (after_second, after_split) = after_second;
    let elapsed = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "keycard proxy memory ({}; --workers {workers})",
        bin.display()
    );
    println!(
        "idle:                      VmRSS {:>6.1} MB  VmHWM {:>6.1} MB  threads {idle_threads}",
        mb(idle_rss),
        mb(idle_hwm)
    );
    println!(
        "{conns} mTLS connections open: VmRSS {:>6.1} MB  VmHWM {:>6.1} MB  threads {open_threads}",
        mb(loaded.0),
        mb(loaded.1)
    );
    println!(
        "after a 2nd request each:  VmRSS {:>6.1} MB  VmHWM {:>6.1} MB  ({:.1} KB per connection over idle; {:.1} s)",
        mb(after_second.0),
        mb(after_second.1),
        (after_second.0.saturating_sub(idle_rss)) as f64 / conns as f64,
        elapsed.as_secs_f64()
    );
    println!(
        "of which anonymous / file:  idle {:.1} / {:.1} MB; after the 2nd requests {:.1} / {:.1} MB",
        mb(idle_split.0),
        mb(idle_split.1),
        mb(after_split.0),
        mb(after_split.1)
    );
    let idle_ok = mb(idle_rss) <= target_idle;
    let loaded_ok = mb(after_second.1) <= target_loaded;
    println!(
        "targets: idle <= {target_idle} MB: {}; peak with {conns} connections <= {target_loaded} MB: {}",
        if idle_ok { "met" } else { "MISSED" },
        if loaded_ok { "met" } else { "MISSED" }
    );
    if !(idle_ok && loaded_ok) {
        std::process::exit(1);
    }
}
