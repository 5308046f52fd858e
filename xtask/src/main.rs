//! `cargo xtask`: the project's task runner (tests, local clusters, benchmarks, simulator, fuzzing).
//!
//! Each subcommand lives in its own module; this file only dispatches. Every task prints what it does and
//! exits non-zero with one clear line when it fails.

mod bench;
mod certs;
mod cluster;
mod contract;
mod dist;
mod fuzz;
mod new_slice;
mod signing;
mod sim;
mod slices;
mod test;
mod unit;
mod util;

use std::process::ExitCode;

type TaskResult = Result<(), String>;

const USAGE: &str = "usage: cargo xtask <task>
  test                         fmt check, clippy, the whole test suite (nextest), then the API contract
  contract                     the management API against mgmt/openapi.yaml (schemathesis, 3-node cluster)
  run                          a local 3-node cluster in the foreground (Ctrl-C stops it)
  cluster up N | down          start N aetherd processes in the background / stop them
  sim [--seeds N] [--replicas 3|5] [--faults ...]   deterministic consensus simulation
  sim dht [--seeds N] [--seed S] [--nodes 3|5] [--broken V]   deterministic DHT simulation
  build-slices [--sign-key F]  build the example slices into target/slices-repo (Maven layout, checksums,
                               signatures with F or $AETHER_SLICE_SIGNING_KEY); --publish URL
                               also uploads the examples to a cluster's repository (PUT /repository/...)
  new-slice NAME [--dir DIR]   a ready slice crate DIR/NAME (SDK by path, a route and a test) outside the workspace
  keygen PREFIX                a slice signing key pair: PREFIX.key (secret, 0600) and PREFIX.pub
  sign --key F LIB.so          write LIB.so.sha256 and LIB.so.sig (signed with the secret key file F)
  fuzz <wire|blueprint|keys|consensus> [--seconds N]   fuzz a parser of outside input
  bench <transport|kv|app|consensus-core|invoke-local|slice-kv|dht|messaging>
  certs [--dir DIR] [--nodes N] [--force]   a development CA and TLS certificates (default target/dev-certs)
  check-unit                   systemd-analyze verify and security of dist/aetherd.service (when installed)
  dist [--check | --check-manifests]   the .deb in target/dist (--check: install it in a clean Debian
                               container and wait for /health/ready, then run the Kubernetes example's
                               config as 3 containers); --check-manifests: the dist/kubernetes objects";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match task.as_str() {
        "test" => test::test(rest),
        "contract" => contract::contract(rest),
        "run" => cluster::run_local(rest),
        "cluster" => cluster::cluster(rest),
        "fuzz" => fuzz::fuzz(rest),
        "sim" => sim::sim(rest),
        "build-slices" => slices::build_slices(rest),
        "bench" => bench::bench(rest),
        "new-slice" => new_slice::new_slice(rest),
        "keygen" => signing::keygen(rest),
        "sign" => signing::sign(rest),
        "certs" => certs::certs(rest),
        "check-unit" => unit::check_unit(rest),
        "dist" => dist::dist(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
