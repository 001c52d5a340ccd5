//! A real PostgreSQL primary with a streaming standby, and HAProxy in front of them with its
//! runtime API on a unix socket — all on free loopback ports in a temp dir, from the Debian
//! packages `.ci/run` installs, torn down when dropped. PostgreSQL refuses to run as root, so
//! as root its programs run as an unprivileged user made for the purpose.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers' account when we are root (steps that run pg_ctl over SSH log in as it).
pub const PG_USER: &str = "ripcordpg";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub primary: u16,
    pub standby: u16,
    pub proxy: u16,
    pub socket: PathBuf,
    pub bin: PathBuf,
    /// None until started: a `Cluster` exists from its first server on, so a failure part-way
    /// through `start` (a panic included) drops it and stops whatever was started.
    haproxy: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package `postgresql`; .ci/run installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// A PostgreSQL program, as the unprivileged user when we are root.
fn pg(bin: &Path, program: &str, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("PostgreSQL programs run");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = pg_bin();
        // Everything the cluster needs is checked before anything starts.
        let haproxy = Command::new("haproxy")
            .arg("-v")
            .output()
            .map(|o| o.status.success());
        assert!(
            matches!(haproxy, Ok(true)),
            "HAProxy is installed (Debian package `haproxy`; scripts/test installs it)"
        );
        let dir = server_dir("ripcord-cluster-");
        let socket = dir.path().join("haproxy.sock");
        let mut cluster = Cluster {
            dir,
            primary: free_port(),
            standby: free_port(),
            proxy: free_port(),
            socket,
            bin,
            haproxy: None,
        };
        cluster.start_servers();
        cluster
    }

    /// Starts the primary, the standby and HAProxy; on any failure `self` is dropped by the
    /// caller's unwinding, which stops what had started.
    fn start_servers(&mut self) {
        let (bin, d) = (self.bin.clone(), self.dir.path().to_path_buf());
        let (primary, standby, proxy) = (self.primary, self.standby, self.proxy);
        let primary_dir = d.join("primary");
        let standby_dir = d.join("standby");
        initdb(&bin, &primary_dir);
        let conf = format!(
            "\nport = {primary}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nwal_log_hints = on\nfsync = off\nwal_keep_size = 64MB\n",
            d.display()
        );
        append(&primary_dir.join("postgresql.conf"), &conf);
        let log = |n: &str| d.join(format!("{n}.log")).display().to_string();
        pg(
            &bin,
            "pg_ctl",
            &[
                "-D",
                primary_dir.to_str().unwrap(),
                "-l",
                &log("primary"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        pg(
            &bin,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.to_string(),
                "-U",
                "postgres",
                "-D",
                standby_dir.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        );
        append(
            &standby_dir.join("postgresql.conf"),
            &format!("\nport = {standby}\n"),
        );
        pg(
            &bin,
            "pg_ctl",
            &[
                "-D",
                standby_dir.to_str().unwrap(),
                "-l",
                &log("standby"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );

        let cfg = d.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  stats socket {} mode 600 level admin\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend pg\n  bind 127.0.0.1:{proxy}\n  default_backend pg\n\
                 backend pg\n  server primary 127.0.0.1:{primary} check inter 300ms\n  server standby 127.0.0.1:{standby} check inter 300ms disabled\n",
                self.socket.display()
            ),
        )
        .unwrap();
        self.haproxy = Some(
            Command::new("haproxy")
                .args(["-f", cfg.to_str().unwrap(), "-db"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("haproxy.log")).unwrap())
                .spawn()
                .expect(
                    "HAProxy is installed (Debian package `haproxy`; scripts/test installs it)",
                ),
        );
        self.wait_for(
            || self.sql(self.standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming",
            "the standby to stream",
        );
        // The socket file exists a moment before HAProxy listens on it: wait for a connection.
        self.wait_for(
            || std::os::unix::net::UnixStream::connect(&self.socket).is_ok(),
            "HAProxy's socket",
        );
    }

    /// A server's data directory: `primary`, `standby` (named for their first roles).
    pub fn data(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    /// `pg_ctl ARGS` on a node, as the servers' account; whether it succeeded.
    pub fn pg_ctl(&self, node: &str, args: &[&str]) -> bool {
        let log = self.dir.path().join(format!("{node}.log"));
        pg_ctl(&self.bin, &self.data(node), &log, args)
    }

    /// An input file for runbooks/postgres-dr.yaml naming this cluster's two servers as sites
    /// `a` (the first primary) and `b`, reached over SSH at `ssh` (port, user, identity,
    /// known_hosts: an sshd that logs in as the servers' account), with a clone directory and
    /// port for test mode; its path.
    pub fn dr_inputs(&self, ssh: (u16, &str, &Path, &Path)) -> PathBuf {
        let (port, user, identity, known_hosts) = ssh;
        let site = |node: &str, server_port: u16, server: &str| {
            format!(
                "  {node}:\n    dsn: \"{}\"\n    host: 127.0.0.1\n    ssh_port: {port}\n    ssh_user: {user}\n    \
                 identity: {}\n    known_hosts: {}\n    data_dir: {}\n    bin: {}\n    server: {server}\n    \
                 log_file: {}\n",
                self.dsn(server_port),
                identity.display(),
                known_hosts.display(),
                self.data(if server_port == self.primary {
                    "primary"
                } else {
                    "standby"
                })
                .display(),
                self.bin.display(),
                self.dir.path().join(format!("{server}.log")).display(),
            )
        };
        let clone_port = free_port();
        let text = format!(
            "sites:\n{}{}proxy: \"{}\"\nhaproxy: {}\nclone_dir: {}\nclone_port: {clone_port}\n\
             clone_dsn: \"{}\"\nmin_free_mb: 1\nreason: end-to-end test\n",
            site("a", self.primary, "primary"),
            site("b", self.standby, "standby"),
            self.dsn(self.proxy),
            self.socket.display(),
            self.dir.path().join("clone").display(),
            self.dsn(clone_port),
        );
        let path = self.dir.path().join("dr-inputs.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn dsn(&self, port: u16) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
    }

    /// One SQL statement through psql; its trimmed output ("" on error).
    pub fn sql(&self, port: u16, statement: &str) -> String {
        self.try_sql(port, statement).unwrap_or_default()
    }

    /// Like [`Cluster::sql`], but says whether it worked, with the error.
    pub fn try_sql(&self, port: u16, statement: &str) -> Result<String, String> {
        let out = psql(&self.bin, port, statement)
            .output()
            .expect("psql runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    pub fn wait_for(&self, done: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Cluster {
    /// Kills the primary as a crash would (immediate shutdown: no checkpoint, no goodbye).
    pub fn kill_primary(&self) {
        let data = self.dir.path().join("primary");
        pg(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

/// `psql` running one statement as `postgres` on a loopback port; failing on any SQL error.
pub fn psql(bin: &Path, port: u16, statement: &str) -> Command {
    let mut cmd = Command::new(bin.join("psql"));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .args(["-v", "ON_ERROR_STOP=1", "-Atqc", statement])
    .env("PGCONNECT_TIMEOUT", "2");
    cmd
}

/// `pg_ctl -D DATA -l LOG ARGS`, as the servers' account when we are root; whether it
/// succeeded.
fn pg_ctl(bin: &Path, data: &Path, log: &Path, args: &[&str]) -> bool {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(bin.join("pg_ctl"));
        c
    } else {
        Command::new(bin.join("pg_ctl"))
    };
    cmd.args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A new cluster in `data`: superuser `postgres`, trusted on loopback, UTF-8.
fn initdb(bin: &Path, data: &Path) {
    pg(
        bin,
        "initdb",
        &[
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(haproxy) = &mut self.haproxy {
            let _ = haproxy.kill();
            let _ = haproxy.wait();
        }
        for node in ["primary", "standby", "clone/data"] {
            let data = self.dir.path().join(node);
            if !data.join("postmaster.pid").exists() {
                continue;
            }
            let mut cmd = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", PG_USER, "--"]).arg(self.bin.join("pg_ctl"));
                c
            } else {
                Command::new(self.bin.join("pg_ctl"))
            };
            let _ = cmd
                .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// A temp dir for servers, owned by the servers' account when we are root (made if missing).
fn server_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    if is_root() {
        let exists = || {
            Command::new("id")
                .arg(PG_USER)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !exists() {
            // Tests run in parallel: another may create the user first.
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_USER,
                ])
                .status();
            assert!(exists(), "cannot create the user {PG_USER}");
        }
        let owned = Command::new("chown")
            .args([PG_USER, dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(owned.success());
    }
    dir
}

/// One PostgreSQL server alone on a free loopback port: a shared state database.
pub struct StateServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bin: PathBuf,
}

impl StateServer {
    pub fn start() -> StateServer {
        let bin = pg_bin();
        let dir = server_dir("ripcord-state-");
        let server = StateServer {
            port: free_port(),
            bin,
            dir,
        };
        let data = server.data();
        initdb(&server.bin, &data);
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 fsync = off\nmax_connections = 100\n",
                server.port,
                server.dir.path().display()
            ),
        );
        assert!(
            server.pg_ctl(&["-w", "-t", "60", "start"]),
            "the state server starts"
        );
        server
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One SQL statement; its trimmed output, or the error.
    pub fn query(&self, statement: &str) -> Result<String, String> {
        let out = psql(&self.bin, self.port, statement).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The URL ripcord takes with `--state`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// One SQL statement; its trimmed output, or "" when it fails (a table not made yet).
    pub fn try_sql(&self, statement: &str) -> String {
        let out = psql(&self.bin, self.port, statement).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// One SQL statement; its trimmed output (panics on error).
    pub fn sql(&self, statement: &str) -> String {
        let out = psql(&self.bin, self.port, statement).output().unwrap();
        assert!(
            out.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `pg_ctl ARGS` on the server, as the servers' account; whether it succeeded.
    pub fn pg_ctl(&self, args: &[&str]) -> bool {
        pg_ctl(
            &self.bin,
            &self.data(),
            &self.dir.path().join("server.log"),
            args,
        )
    }
}

impl Drop for StateServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
