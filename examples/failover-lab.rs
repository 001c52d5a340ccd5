//! A PostgreSQL primary + streaming standby behind HAProxy on this machine — the same harness the
//! end-to-end tests use — to try a real failover by hand:
//!
//!     cargo build --release && cargo run --release --example failover-lab
//!
//! It prints the commands to run in another terminal and tears everything down on Enter.
//! Needs PostgreSQL, HAProxy and an OpenSSH server (Debian: `apt-get install postgresql haproxy
//! openssh-server`; the sshd runs on a loopback port as the servers' account, for the runbook's
//! steps on the servers' hosts).

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
    // The servers' "hosts", reached over SSH by the runbook (pg_ctl, pg_controldata, pg_rewind,
    // pg_basebackup run there as the servers' account): an sshd on loopback.
    let s = sshd::Sshd::start_as(cluster::PG_USER);
    let inputs = c.dr_inputs((s.port, &s.user, &s.identity, &s.known_hosts));
    let state = c.dir.path().join("state");
    println!(
        "A primary (site a, port {}) streams to a standby (site b, port {}); HAProxy listens on {}.\n\
         The sites are described in {}.\n",
        c.primary,
        c.standby,
        c.proxy,
        inputs.display()
    );
    let dr = format!(
        "runbooks/postgres-dr.yaml --input-file {}",
        inputs.display()
    );
    println!("In another terminal, from the repository:\n");
    println!("  export RIPCORD_STATE_DIR={}", state.display());
    println!("  R=target/release/ripcord");
    println!("  # keep writing through HAProxy while you switch over:");
    println!(
        "  while :; do psql -h 127.0.0.1 -p {} -U postgres -qc 'INSERT INTO orders DEFAULT VALUES'; sleep 0.2; done &",
        c.proxy
    );
    println!("  $R run --check --mode planned {dr}            # the nightly pre-flight");
    println!("  $R run --dry-run --mode planned {dr}          # rehearse");
    println!("  $R run --mode planned {dr}                    # for real: approve at the prompt");
    println!("  $R run --mode planned -i from=b -i to=a {dr}  # and back (the failback)");
    println!(
        "  $R run --mode test {dr}                       # a DR test on a clone; then `$R rollback RUN_ID`"
    );
    println!(
        "  $R report $($R runs --json | jq -r '.[0].run_id') --format html -o switchover.html"
    );
    println!("\nPress Enter to stop the servers and delete everything.");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
