//! What users feel in a planned PostgreSQL switchover: ripcord's `runbooks/postgres-dr.yaml
//! --mode planned` beside Patroni's `patronictl switchover`, each on a comparable two-node
//! cluster on loopback behind its own HAProxy, with one writer through HAProxy the whole time.
//! Run by `benches/switchover.sh`, which builds ripcord and makes Patroni's venv and etcd.
//!
//!     switchover-bench RIPCORD PATRONI_VENV ROUNDS
//!
//! Per switchover:
//! - gap: the longest time between two acknowledged writes through HAProxy, from one second
//!   before the command to the first acknowledged write after it ended (one autocommit
//!   writer, a new connection per write, 10 ms after a failed one);
//! - lost: acknowledged writes missing from the new primary;
//! - redundancy: from the command's start until the old primary streams from the new one;
//! - command: how long the command itself ran.
//!
//! Patroni runs with its defaults (ttl 30, loop_wait 10, use_pg_rewind) and HAProxy routing by
//! its REST check `OPTIONS /primary` (`inter 1s fall 2 rise 1 on-marked-down
//! shutdown-sessions`), as its documentation shows; ripcord's cluster is the tests' harness
//! (HAProxy's TCP check every 300 ms, the runbook moving traffic through the runtime API).

#[allow(dead_code)]
#[path = "../tests/it/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/it/sshd.rs"]
mod sshd;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Inserts numbered rows through a port until stopped: each acknowledged number with when.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, Instant)>>>,
    thread: std::thread::JoinHandle<()>,
}

fn psql(bin: &Path, port: u16, sql: &str) -> Command {
    let mut cmd = Command::new(bin.join("psql"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null());
    cmd
}

fn sql(bin: &Path, port: u16, statement: &str) -> String {
    psql(bin, port, statement)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Writer {
    fn start(bin: PathBuf, port: u16, first: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = first;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let ok = psql(&bin, port, &format!("INSERT INTO writes VALUES ({n})"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
                if ok {
                    a.lock().unwrap().push((n, Instant::now()));
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Writer {
            stop,
            acked,
            thread,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(self) -> Vec<(u32, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

struct Sample {
    gap: Duration,
    lost: usize,
    acked: usize,
    redundancy: Option<Duration>,
    command: Duration,
}

/// Whether the server on `port` streams from the one on `upstream`.
fn streams_from(bin: &Path, port: u16, upstream: u16) -> bool {
    let row = sql(
        bin,
        port,
        "SELECT status || ' ' || conninfo FROM pg_stat_wal_receiver",
    );
    row.starts_with("streaming") && row.contains(&format!("port={upstream}"))
}

/// One switchover from `old` to `new` (ports) through `proxy`, by `command`.
fn measure(
    bin: &Path,
    proxy: u16,
    old: u16,
    new: u16,
    first: u32,
    command: &mut Command,
) -> Sample {
    let writer = Writer::start(bin.to_path_buf(), proxy, first);
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.count() < 50 {
        assert!(Instant::now() < deadline, "no writes through HAProxy");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    // The old primary streaming from the new one, watched from the command's start.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (bin, w) = (bin.to_path_buf(), watching.clone());
        std::thread::spawn(move || {
            while w.load(Ordering::Relaxed) {
                if streams_from(&bin, old, new) {
                    return Some(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        })
    };
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the command runs");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}{}",
        command,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Writes land again, then a little longer.
    let after = writer.count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.count() < after + 20 {
        assert!(Instant::now() < deadline, "writes never came back");
        std::thread::sleep(Duration::from_millis(10));
    }
    let redundancy_deadline = start + Duration::from_secs(60);
    while !watcher.is_finished() && Instant::now() < redundancy_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    watching.store(false, Ordering::Relaxed);
    let redundancy = watcher.join().unwrap();
    let acked = writer.stop();
    let window_start = start - Duration::from_secs(1);
    let mut gap = Duration::ZERO;
    for pair in acked.windows(2) {
        if pair[1].1 >= window_start {
            gap = gap.max(pair[1].1 - pair[0].1.max(window_start));
        }
    }
    let on_new: std::collections::HashSet<u32> = sql(bin, new, "SELECT n FROM writes")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost = acked.iter().filter(|(n, _)| !on_new.contains(n)).count();
    Sample {
        gap,
        lost,
        acked: acked.len(),
        redundancy,
        command: took,
    }
}

fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Two Patroni nodes (etcd as the DCS) and HAProxy routing by `OPTIONS /primary`.
struct Patroni {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    pg: [u16; 2],
    rest: [u16; 2],
    proxy: u16,
    venv: PathBuf,
}

fn as_pg_user(program: &Path) -> Command {
    if cluster::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", cluster::PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Patroni {
    fn start(venv: &Path, bin: &Path) -> Patroni {
        let dir = tempfile::Builder::new()
            .prefix("ripcord-patroni-")
            .tempdir()
            .unwrap();
        if cluster::is_root() {
            // The servers' account exists once the ripcord cluster has started.
            let ok = Command::new("chown")
                .args([cluster::PG_USER, dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let (etcd_client, etcd_peer) = (cluster::free_port(), cluster::free_port());
        let mut p = Patroni {
            dir,
            children: Vec::new(),
            pg: [cluster::free_port(), cluster::free_port()],
            rest: [cluster::free_port(), cluster::free_port()],
            proxy: cluster::free_port(),
            venv: venv.to_path_buf(),
        };
        p.children.push(
            Command::new("etcd")
                .args(["--data-dir", d.join("etcd").to_str().unwrap()])
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{etcd_client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{etcd_client}"),
                ])
                .args([
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer}"),
                ])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{etcd_peer}"),
                ])
                .env("ETCD_UNSUPPORTED_ARCH", "")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("etcd.log")).unwrap())
                .spawn()
                .expect("etcd runs (Debian package etcd-server)"),
        );
        for i in 0..2 {
            let name = format!("node{}", i + 1);
            let config = format!(
                "scope: bench\nname: {name}\nrestapi:\n  listen: 127.0.0.1:{rest}\n  connect_address: 127.0.0.1:{rest}\n\
                 etcd3:\n  hosts: 127.0.0.1:{etcd_client}\n\
                 bootstrap:\n  dcs:\n    ttl: 30\n    loop_wait: 10\n    retry_timeout: 10\n    maximum_lag_on_failover: 1048576\n    \
                 postgresql:\n      use_pg_rewind: true\n      parameters:\n        wal_log_hints: 'on'\n        fsync: 'off'\n        wal_keep_size: 64MB\n  \
                 initdb:\n  - encoding: UTF8\n  pg_hba:\n  - host replication all 127.0.0.1/32 trust\n  - host all all 127.0.0.1/32 trust\n\
                 postgresql:\n  listen: 127.0.0.1:{port}\n  connect_address: 127.0.0.1:{port}\n  data_dir: {d}/{name}\n  bin_dir: {bin}\n  \
                 pgpass: {d}/{name}.pgpass\n  authentication:\n    superuser:\n      username: postgres\n      password: bench\n    \
                 replication:\n      username: replicator\n      password: bench\n  parameters:\n    unix_socket_directories: '{d}'\n",
                rest = p.rest[i],
                port = p.pg[i],
                d = d.display(),
                bin = bin.display(),
            );
            let file = d.join(format!("{name}.yml"));
            std::fs::write(&file, config).unwrap();
            if i == 1 {
                // The second node bootstraps from the first: wait for its leader.
                wait(
                    Duration::from_secs(90),
                    "the first Patroni node to lead",
                    || http_status(p.rest[0], "OPTIONS", "/primary") == Some(200),
                );
            }
            p.children.push(
                as_pg_user(&venv.join("bin/patroni"))
                    .arg(&file)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(d.join(format!("{name}.log"))).unwrap())
                    .spawn()
                    .expect("patroni runs"),
            );
        }
        wait(Duration::from_secs(90), "the replica to stream", || {
            http_status(p.rest[1], "OPTIONS", "/replica") == Some(200)
                && sql(bin, p.pg[1], "SELECT status FROM pg_stat_wal_receiver") == "streaming"
        });
        let cfg = d.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend pg\n  bind 127.0.0.1:{proxy}\n  default_backend pg\n\
                 backend pg\n  option httpchk OPTIONS /primary\n  http-check expect status 200\n  \
                 default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n  \
                 server node1 127.0.0.1:{} check port {}\n  server node2 127.0.0.1:{} check port {}\n",
                p.pg[0],
                p.rest[0],
                p.pg[1],
                p.rest[1],
                proxy = p.proxy
            ),
        )
        .unwrap();
        p.children.push(
            Command::new("haproxy")
                .args(["-f", cfg.to_str().unwrap(), "-db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        sql(
            bin,
            p.pg[0],
            "CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY)",
        );
        wait(
            Duration::from_secs(30),
            "HAProxy to route to the leader",
            || sql(bin, p.proxy, "SELECT 1") == "1",
        );
        p
    }

    fn leader(&self) -> usize {
        if http_status(self.rest[0], "OPTIONS", "/primary") == Some(200) {
            0
        } else {
            1
        }
    }

    fn switchover(&self, from: usize, to: usize) -> Command {
        let mut c = Command::new(self.venv.join("bin/patronictl"));
        c.arg("-c")
            .arg(self.dir.path().join(format!("node{}.yml", from + 1)))
            .args(["switchover", "--force"])
            .args(["--leader", &format!("node{}", from + 1)])
            .args(["--candidate", &format!("node{}", to + 1)]);
        c
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // Patroni stops its PostgreSQL on SIGTERM; then etcd and HAProxy go.
        for child in self.children.iter_mut().rev() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.path().display().to_string()])
            .status();
    }
}

fn wait(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (ripcord, venv) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
    let repo = std::env::current_dir().unwrap();
    let bin = cluster::pg_bin();

    let c = cluster::Cluster::start();
    let s = sshd::Sshd::start_as(cluster::PG_USER);
    let inputs = c.dr_inputs((s.port, &s.user, &s.identity, &s.known_hosts));
    sql(&bin, c.primary, "CREATE TABLE writes (n int PRIMARY KEY)");
    wait(Duration::from_secs(30), "HAProxy", || {
        sql(&bin, c.proxy, "SELECT 1") == "1"
    });
    let patroni = Patroni::start(&venv, &bin);

    let mut results: Vec<(&str, Sample)> = Vec::new();
    let mut first = 0;
    for round in 0..rounds {
        // ripcord: a to b, then b to a, and so on; the old primary rejoins within the run.
        let (from, to, old, new) = if round % 2 == 0 {
            ("a", "b", c.primary, c.standby)
        } else {
            ("b", "a", c.standby, c.primary)
        };
        let mut cmd = Command::new(&ripcord);
        cmd.current_dir(&repo)
            .args(["run", "--yes", "--mode", "planned"])
            .args(["--state-dir", c.dir.path().join("state").to_str().unwrap()])
            .args(["--input-file", inputs.to_str().unwrap()])
            .args(["-i", &format!("from={from}"), "-i", &format!("to={to}")])
            .arg("runbooks/postgres-dr.yaml");
        let sample = measure(&bin, c.proxy, old, new, first, &mut cmd);
        first += 1_000_000;
        eprintln!(
            "ripcord {from}->{to}: gap {} ms, lost {} of {}, redundancy {:?} ms, command {} ms",
            ms(sample.gap),
            sample.lost,
            sample.acked,
            sample.redundancy.map(ms),
            ms(sample.command)
        );
        results.push(("ripcord", sample));

        let leader = patroni.leader();
        let other = 1 - leader;
        let mut cmd = patroni.switchover(leader, other);
        let sample = measure(
            &bin,
            patroni.proxy,
            patroni.pg[leader],
            patroni.pg[other],
            first,
            &mut cmd,
        );
        first += 1_000_000;
        eprintln!(
            "patroni node{}->node{}: gap {} ms, lost {} of {}, redundancy {:?} ms, command {} ms",
            leader + 1,
            other + 1,
            ms(sample.gap),
            sample.lost,
            sample.acked,
            sample.redundancy.map(ms),
            ms(sample.command)
        );
        results.push(("patroni", sample));
        // Patroni refuses a switchover while the new replica is not yet streaming.
        wait(
            Duration::from_secs(120),
            "Patroni's replica to stream again",
            || streams_from(&bin, patroni.pg[leader], patroni.pg[other]),
        );
    }

    println!(
        "| tool | rounds | write gap ms (median, max) | lost acknowledged writes | old primary streaming again, ms after the command started (median) | command ms (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for tool in ["ripcord", "patroni"] {
        let mine: Vec<&Sample> = results
            .iter()
            .filter(|(t, _)| *t == tool)
            .map(|(_, s)| s)
            .collect();
        let gaps: Vec<u128> = mine.iter().map(|s| ms(s.gap)).collect();
        let redundancy: Vec<u128> = mine
            .iter()
            .map(|s| s.redundancy.map_or(u128::MAX, ms))
            .collect();
        let never = redundancy.iter().filter(|r| **r == u128::MAX).count();
        println!(
            "| {tool} | {} | {}, {} | {} | {}{} | {} |",
            mine.len(),
            median(gaps.clone()),
            gaps.iter().max().unwrap(),
            mine.iter().map(|s| s.lost).sum::<usize>(),
            median(redundancy),
            if never > 0 {
                format!(" ({never} not within 60 s)")
            } else {
                String::new()
            },
            median(mine.iter().map(|s| ms(s.command)).collect()),
        );
    }
}
