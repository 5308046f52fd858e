//! Verbs to management routes: each verb sends its request(s) through the [`Client`], then prints the
//! server's JSON (`--json`, pretty) or a human rendering of it. Renderers are pure functions from the JSON
//! to text, one file per area of the API.

mod backup;
mod blueprint;
mod cluster;
mod data;
mod members;
mod messaging;
mod observe;
mod rollout;
mod settings;
mod tasks;

use crate::args::Verb;
use crate::client::Client;
use crate::error::{CliError, EXIT_OK};
use serde_json::Value;
use std::io::Write;

/// What a verb needs: the client and how to print.
pub struct Ctx<'a> {
    pub client: &'a Client,
    pub json: bool,
    /// A line of an interactive session: more output follows this verb's.
    pub interactive: bool,
}

impl Ctx<'_> {
    /// Prints `value` as pretty JSON (`--json`) or as `human(value)`.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> Result<(), CliError> {
        if self.json {
            print_json(value);
        } else {
            emit(&human(value));
        }
        Ok(())
    }
}

pub fn print_json(value: &Value) {
    emit(&format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())));
}

/// Writes to stdout. A closed pipe (`aether events --follow | head`) ends the program quietly: nobody is
/// reading any more.
pub fn emit(text: &str) {
    emit_bytes(text.as_bytes());
}

pub fn emit_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_OK);
        }
    }
}

/// Runs one verb; the exit code when it succeeded (a verb may report a state, as `health` does).
pub fn run(verb: &Verb, ctx: &Ctx) -> Result<i32, CliError> {
    match verb {
        Verb::Status => cluster::status(ctx),
        Verb::Health => return cluster::health(ctx),
        Verb::Nodes => cluster::nodes(ctx),
        Verb::Node(v) => cluster::node(v, ctx),
        Verb::Member(crate::args::MemberVerb::List) => members::list(ctx),
        Verb::Member(crate::args::MemberVerb::Add { id, address }) => members::add(id, address, ctx),
        Verb::Member(crate::args::MemberVerb::Remove { id }) => members::remove(id, ctx),
        Verb::Slices => cluster::slices(ctx),
        Verb::Routes => cluster::routes(ctx),
        Verb::Blueprint(v) => blueprint::run(v, ctx),
        Verb::Rollout(v) => rollout::run(v, ctx),
        Verb::Kv(v) => data::kv(v, ctx),
        Verb::Backup { file } => backup::backup(file, ctx),
        Verb::Artifact(v) => data::artifact(v, ctx),
        Verb::Events(a) => observe::events(a, ctx),
        Verb::Metrics(a) => observe::metrics(a, ctx),
        Verb::Invocations(a) => observe::invocations(a, ctx),
        Verb::LogLevel(v) => settings::log_level(v, ctx),
        Verb::Config(v) => settings::config(v, ctx),
        Verb::Tasks { action } => tasks::run(action.as_ref(), ctx),
        Verb::Topics { topic } => messaging::topics(topic.as_deref(), ctx),
        Verb::Publish { topic, data } => messaging::publish(topic, data.as_deref(), ctx),
        Verb::DeadLetters { verb } => messaging::dead_letters(verb.as_ref(), ctx),
        Verb::Completion { .. } => Ok(()),
    }
    .map(|()| EXIT_OK)
}

/// The array at `field` of `value` (empty when absent).
fn items<'v>(value: &'v Value, field: &str) -> &'v [Value] {
    value[field].as_array().map_or(&[], Vec::as_slice)
}

/// Reads a file named on the command line, `-` for stdin, at most `max` bytes.
fn read_input(path: &std::path::Path, max: usize) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let name = path.display();
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(max as u64 + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::Usage(format!("cannot read {name}: {e}")))?;
    if bytes.len() > max {
        return Err(CliError::Usage(format!("{name} is larger than {max} bytes")));
    }
    Ok(bytes)
}
