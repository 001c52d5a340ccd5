//! A PostgreSQL primary + streaming standby behind HAProxy on this machine — the same harness the
//! end-to-end tests use — to try a real failover by hand:
//!
//!     cargo build --release && cargo run --release --example failover-lab
//!
//! It prints the commands to run in another terminal and tears everything down on Enter.
//! Needs PostgreSQL and HAProxy (Debian: `apt-get install postgresql haproxy`).

// The tests' harness, shared as is; this example uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/cluster.rs"]
mod cluster;

fn main() {
    let c = cluster::Cluster::start();
    c.sql(
        c.primary,
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
    let inputs = format!(
        "-i primary='{}' -i standby='{}' -i proxy='{}' -i haproxy={} -i reason='trying it out'",
        c.dsn(c.primary),
        c.dsn(c.standby),
        c.dsn(c.proxy),
        c.socket.display()
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
