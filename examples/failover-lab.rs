//! A PostgreSQL primary + streaming standby behind HAProxy on this machine — the same harness the
//! end-to-end tests use — to try a real failover by hand:
//!
//!     cargo build --release && cargo run --release --example failover-lab
//!
//! It prints the commands to run in another terminal and tears everything down on Enter.
//! Needs PostgreSQL, HAProxy and an OpenSSH server (Debian: `apt-get install postgresql haproxy
//! openssh-server`; the sshd runs on a loopback port as its own account, for the runbook's
//! SSH pre-flight on the standby's host).

// The tests' harness, shared as is; this example uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/it/sshd.rs"]
mod sshd;

fn main() {
    let c = cluster::Cluster::start();
    c.sql(
        c.primary,
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    // The standby's "host", reached over SSH by the runbook's pre-flight: an sshd on loopback.
    let s = sshd::Sshd::start();
    let inputs = format!(
        "-i primary='{}' -i standby='{}' -i proxy='{}' -i haproxy={} -i reason='trying it out' \\\n    \
         -i standby_host=127.0.0.1 -i ssh_port={} -i ssh_user={} -i ssh_identity={} \\\n    \
         -i ssh_known_hosts={} -i standby_data_dir=/tmp -i min_free_mb=1",
        c.dsn(c.primary),
        c.dsn(c.standby),
        c.dsn(c.proxy),
        c.socket.display(),
        s.port,
        s.user,
        s.identity.display(),
        s.known_hosts.display()
    );
    let state = c.dir.path().join("state");
    println!(
        "A primary (port {}) streams to a standby (port {}); HAProxy listens on {}.\n",
        c.primary, c.standby, c.proxy
    );
    println!("In another terminal, from the repository:\n");
    println!("  export RIPCORD_STATE_DIR={}", state.display());
    println!("  R=target/release/ripcord");
    println!("  # keep writing through HAProxy while you fail over:");
    println!(
        "  while :; do psql -h 127.0.0.1 -p {} -U postgres -qc 'INSERT INTO orders DEFAULT VALUES'; sleep 0.2; done &",
        c.proxy
    );
    println!("  $R run runbooks/postgres-switchover.yaml --dry-run {inputs}   # rehearse");
    println!(
        "  $R run runbooks/postgres-switchover.yaml {inputs}             # for real: approve at the prompt"
    );
    println!(
        "  $R report $($R runs --json | jq -r '.[0].run_id') --format html -o switchover.html"
    );
    println!("\nPress Enter to stop the servers and delete everything.");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
