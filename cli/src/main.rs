//! `aether`: the command-line tool for an Aether cluster. Each verb maps to management API routes
//! ([`verbs`]), sent by a small blocking HTTP/1.1 client with failover across nodes ([`client`], [`wire`]);
//! output is an aligned table ([`table`]) or the server's JSON. Without a verb it runs interactively
//! ([`interactive`]).
//!
//! Invariants: the exit code says what happened (0 ok, 1 refused by the server, 2 usage, 3 unreachable;
//! see [`error`]); a write is never sent to a second node unless it cannot have applied on the first or
//! carries an `Idempotency-Key`; nothing read from the network can panic the tool.

mod args;
mod client;
mod error;
mod interactive;
mod table;
mod verbs;
mod wire;

use args::{Cli, Global, Shell, Verb};
use clap::{CommandFactory, Parser};
use error::CliError;
use std::time::Duration;

/// Seconds to wait for an answer unless `--timeout` says otherwise.
const TIMEOUT_SECS_DEFAULT: u64 = 30;

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let code = match &cli.verb {
        None => interactive::run(&cli.global),
        Some(verb) => run_verb(&cli.global, verb, false),
    };
    std::process::exit(code);
}

/// Runs one verb and reports its outcome; the exit code. `interactive`: one of a session's lines, whose
/// output is followed by more.
pub fn run_verb(global: &Global, verb: &Verb, interactive: bool) -> i32 {
    if let Verb::Completion { shell } = verb {
        print_completion(*shell);
        return error::EXIT_OK;
    }
    let client = match build_client(global) {
        Ok(client) => client,
        Err(e) => return report(&e, global.json),
    };
    let ctx = verbs::Ctx { client: &client, json: global.json, interactive };
    verbs::run(verb, &ctx).unwrap_or_else(|e| report(&e, global.json))
}

fn build_client(global: &Global) -> Result<client::Client, CliError> {
    let nodes_env = std::env::var("AETHER_NODES").ok();
    let targets = client::candidates(global.node.as_deref(), nodes_env.as_deref())?;
    let key = global.api_key.clone().filter(|k| !k.is_empty());
    if let Some(key) = &key {
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::Usage("the API key must be visible ASCII characters".into()));
        }
    }
    let timeout = Duration::from_secs(global.timeout.unwrap_or(TIMEOUT_SECS_DEFAULT));
    Ok(client::Client::new(targets, key, global.ca.clone(), timeout))
}

/// Prints an error (and with `--json` the server's error body on stdout); its exit code.
fn report(e: &CliError, json: bool) -> i32 {
    if json {
        if let Some(body) = e.server_body() {
            verbs::print_json(body);
        }
    }
    eprintln!("aether: {e}");
    e.exit_code()
}

fn print_completion(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aether", &mut script);
    verbs::emit_bytes(&script);
}
