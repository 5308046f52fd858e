//! Interactive mode (`aether` with no verb): reads lines with a line editor (rustyline), runs each as a
//! verb with the session's global options as defaults, and keeps a bounded history in `~/.aether_history`
//! (mode 0600; lines naming `--key` are not kept). `exit`, `quit` or Ctrl-D leaves; Ctrl-C clears the line.

use crate::args::{Cli, Global};
use clap::Parser;
use rustyline::error::ReadlineError;

/// Most lines kept in the history file.
const HISTORY_LINES_MAX: usize = 1000;
/// Longest line run.
const LINE_CHARS_MAX: usize = 8192;

pub fn run(session: &Global) -> i32 {
    let config =
        rustyline::Config::builder().max_history_size(HISTORY_LINES_MAX).map(|b| b.auto_add_history(false).build());
    let editor = config
        .map_err(|e| e.to_string())
        .and_then(|c| rustyline::DefaultEditor::with_config(c).map_err(|e| e.to_string()));
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("aether: cannot start the line editor: {e}");
            return crate::error::EXIT_USAGE;
        }
    };
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    loop {
        match editor.readline("aether> ") {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if !line.contains("--key") {
                    let _ = editor.add_history_entry(line);
                }
                if matches!(line, "exit" | "quit") {
                    break;
                }
                run_line(session, line);
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("aether: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        save_history(&mut editor, path);
    }
    crate::error::EXIT_OK
}

/// Runs one line as a verb; mistakes are printed and the session goes on.
fn run_line(session: &Global, line: &str) {
    if line.chars().count() > LINE_CHARS_MAX {
        eprintln!("aether: the line is longer than {LINE_CHARS_MAX} characters");
        return;
    }
    let words = match split_words(line) {
        Ok(words) => words,
        Err(e) => {
            eprintln!("aether: {e}");
            return;
        }
    };
    match Cli::try_parse_from(std::iter::once("aether".to_string()).chain(words)) {
        Ok(cli) => {
            if let Some(verb) = cli.verb {
                crate::run_verb(&merge(session, &cli.global), &verb, true);
            }
        }
        Err(e) => {
            let _ = e.print();
        }
    }
}

/// The line's options where it gives them, the session's otherwise.
pub fn merge(session: &Global, line: &Global) -> Global {
    Global {
        node: line.node.clone().or_else(|| session.node.clone()),
        json: line.json || session.json,
        api_key: line.api_key.clone().or_else(|| session.api_key.clone()),
        ca: line.ca.clone().or_else(|| session.ca.clone()),
        timeout: line.timeout.or(session.timeout),
    }
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| std::path::PathBuf::from(home).join(".aether_history"))
}

fn save_history(editor: &mut rustyline::DefaultEditor, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = editor.save_history(path) {
        eprintln!("aether: cannot save the history to {}: {e}", path.display());
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Splits a line into words as a shell would for simple cases: whitespace separates, `'...'` is literal,
/// `"..."` allows `\"` and `\\`, a backslash outside quotes escapes the next character.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("a ' is not closed".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("a \" is not closed".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("a \" is not closed".into()),
                    }
                }
            }
            '\\' => {
                let next = chars.next().ok_or("a line cannot end with \\")?;
                word.get_or_insert_with(String::new).push(next);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(split_words("  kv put user/a 'hello world' ").unwrap(), ["kv", "put", "user/a", "hello world"]);
        assert_eq!(split_words(r#"config set k "a \"b\" \\ \n""#).unwrap(), ["config", "set", "k", r#"a "b" \ \n"#]);
        assert_eq!(split_words(r"a\ b '' c").unwrap(), ["a b", "", "c"]);
        assert_eq!(split_words("x'y'z").unwrap(), ["xyz"]);
        for bad in ["'open", "\"open", "end\\"] {
            assert!(split_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_line_overrides_the_session_options() {
        let session =
            Global { node: Some("a:1".into()), json: true, api_key: Some("k".into()), ca: None, timeout: Some(5) };
        let line = Global { node: Some("b:2".into()), json: false, api_key: None, ca: None, timeout: None };
        let merged = merge(&session, &line);
        assert_eq!(
            (merged.node.as_deref(), merged.json, merged.api_key.as_deref(), merged.timeout),
            (Some("b:2"), true, Some("k"), Some(5))
        );
    }
}
