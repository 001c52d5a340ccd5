//! A real OpenSSH server on a free loopback port (Debian's openssh-server), run by the test as
//! an unprivileged account with its own host key and authorized key; a client key and a
//! known_hosts file that trusts exactly that host key. As root, the account is one made for the
//! purpose (`ripcordssh`); otherwise the server runs as, and accepts, the current user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSH_USER: &str = "ripcordssh";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The account steps log in as.
    pub user: String,
    /// The client's private key (readable by the test's user only).
    pub identity: PathBuf,
    /// A known_hosts file naming this server's key.
    pub known_hosts: PathBuf,
    /// The server's log (`LogLevel VERBOSE`: one `Accepted publickey` per connection).
    pub log: PathBuf,
    child: Option<Child>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("the program runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ripcord-test", "-f"])
        .arg(path));
}

/// The account the server runs as: as root, `name` (made for the purpose if missing: tests run
/// in parallel, another may make it first); otherwise the current user. Self-contained:
/// examples/failover-lab.rs includes this file.
fn account(name: &str) -> String {
    let id = |args: &[&str]| {
        Command::new("id")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if !is_root() {
        return id(&["-un"]).expect("id -un works");
    }
    if id(&[name]).is_none() {
        // A POSIX login shell (steps' command lines go through it) and a home that exists, so
        // sshd has nothing to complain about.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/tmp",
                "--shell",
                "/bin/sh",
            ])
            .arg(name)
            .status();
        assert!(id(&[name]).is_some(), "cannot create the user {name}");
    }
    // A `!` password is a locked account, and sshd without PAM refuses a locked account's keys;
    // steps' command lines go through the login shell, which must not be nologin.
    // Changed only when needed: parallel tests would contend for /etc/passwd's lock.
    let entry = |db: &str| {
        Command::new("getent")
            .args([db, name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let ready =
        entry("passwd").ends_with(":/bin/sh") && entry("shadow").split(':').nth(1) == Some("*");
    if !ready {
        run(Command::new("usermod").args(["-p", "*", "-s", "/bin/sh", name]));
    }
    name.to_string()
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_as(SSH_USER)
    }

    /// A server that logs steps in as `name` when we are root (the PostgreSQL servers' own
    /// account, for steps that run pg_ctl), as the current user otherwise.
    pub fn start_as(name: &str) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is installed (Debian package `openssh-server`; scripts/test installs it)"
        );
        let user = account(name);
        let dir = tempfile::Builder::new()
            .prefix("ripcord-sshd-")
            .tempdir()
            .unwrap();
        let server = dir.path().join("server");
        std::fs::create_dir(&server).unwrap();
        keygen(&server.join("host_key"));
        let identity = dir.path().join("client_key");
        keygen(&identity);
        std::fs::copy(
            identity.with_extension("pub"),
            server.join("authorized_keys"),
        )
        .unwrap();
        let port = free_port();
        let log = server.join("sshd.log");
        let config = server.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {server}/host_key\n\
                 AuthorizedKeysFile {server}/authorized_keys\nPidFile none\nUsePAM no\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 LogLevel VERBOSE\nMaxStartups 100\nPrintMotd no\nAcceptEnv none\n",
                server = server.display()
            ),
        )
        .unwrap();
        let host_key = std::fs::read_to_string(server.join("host_key.pub")).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let mut fields = host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n")).unwrap();
        if is_root() {
            run(Command::new("chown").args(["-R", &user]).arg(&server));
        }
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", &user, "--", "/usr/sbin/sshd"]);
            c
        } else {
            Command::new("/usr/sbin/sshd")
        };
        let child = command
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sshd starts");
        let sshd = Sshd {
            dir,
            port,
            user,
            identity,
            known_hosts,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {port}: {}",
                std::fs::read_to_string(&sshd.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    /// `with:` params that reach this server (host, port, user, identity, known_hosts), as YAML
    /// flow-map entries.
    pub fn params(&self) -> String {
        format!(
            "host: 127.0.0.1, port: {}, user: {}, identity: {}, known_hosts: {}",
            self.port,
            self.user,
            self.identity.display(),
            self.known_hosts.display()
        )
    }

    /// The same params as block-map lines, indented by `indent`.
    pub fn params_block(&self, indent: usize) -> String {
        self.params()
            .split(", ")
            .map(|kv| format!("{:indent$}{kv}", ""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many logins the server accepted.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // runuser passes SIGTERM on to sshd (a SIGKILL would orphan it).
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        // Sessions still open die with their connections' server processes.
        let _ = Command::new("pkill")
            .args(["-f", &format!("sshd.*{}", self.dir.path().display())])
            .status();
    }
}
