//! `--profile` in `bench kv` and `bench app`: a sampling profile of a node process while it serves load,
//! kept as files a reader can open and summed up in the bench's output.
//!
//! A [`Recording`] is `perf record -F 999 -g -p <pid>` (frame-pointer call chains: `cargo xtask bench ...
//! --profile` builds the `aetherd` it runs with frame pointers forced on, since a release build without
//! them gives perf nothing to walk) from the start of a phase to its end (SIGINT, as Ctrl-C does). Then
//! [`render`] runs `perf script` on the data, folds the stacks with inferno (one line per distinct stack,
//! the thread's name as the root frame, kernel frames marked `_[k]`), writes `{name}.folded` and the flame
//! graph `{name}.svg` beside `{name}.perf.data`, and sums up the samples by thread group and by the function
//! they were in (self time), which [`Profile::print`] shows.
//!
//! Shares are of perf's sample weights (its period: nanoseconds of CPU under the `cpu-clock` event a machine
//! without a hardware PMU uses, cycles under `cycles`), so they are shares of the process's CPU time.
//! perf names a thread that was started after it attached only by its id (`:1234`): the names of the live
//! threads are read from `/proc` when the recording stops and put in.
//!
//! Invariant: a recording ends when the phase ends; a perf that does not stop within 30 s of SIGINT is
//! killed, and its data is then not read.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Samples per second and per thread.
pub const FREQUENCY_HZ: u32 = 999;
/// Functions shown by self time.
pub const TOP: usize = 15;

/// `perf`, when installed.
pub fn perf() -> Option<PathBuf> {
    crate::which("perf")
}

/// A `perf record` attached to one process.
pub struct Recording {
    child: Child,
    pid: u32,
    data: PathBuf,
    log: PathBuf,
}

/// A finished recording: its data file, the samples perf says it wrote, and the process's thread names.
pub struct Recorded {
    pub data: PathBuf,
    pub samples: Option<u64>,
    pub thread_names: HashMap<u32, String>,
}

impl Recording {
    /// Attaches to `pid`, writing `{dir}/{name}.perf.data` (perf's own messages in `{name}.perf.log`).
    pub fn start(perf: &Path, pid: u32, dir: &Path, name: &str) -> Result<Recording, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let data = dir.join(format!("{name}.perf.data"));
        let log = dir.join(format!("{name}.perf.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(perf)
            .args(["record", "-F", &FREQUENCY_HZ.to_string(), "-g", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", perf.display()))?;
        // perf fails at once when it cannot attach (no such process, perf_event_paranoid): say why.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("perf record -p {pid} ended at once ({status}): {}", said.trim()));
        }
        Ok(Recording { child, pid, data, log })
    }

    /// Stops the recording (SIGINT) and waits for perf to write its data.
    pub fn stop(mut self) -> Result<Recorded, String> {
        let thread_names = crate::thread_cpu_ticks(self.pid).into_iter().map(|(tid, name, _)| (tid, name)).collect();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("perf record did not stop within 30 s; see {}", self.log.display()));
                }
            }
        }
        let said = std::fs::read_to_string(&self.log).unwrap_or_default();
        if self.data.metadata().map_or(true, |m| m.len() == 0) {
            return Err(format!("perf wrote no data to {}: {}", self.data.display(), said.trim()));
        }
        Ok(Recorded { data: self.data, samples: samples_written(&said), thread_names })
    }
}

/// The sample count in perf record's closing line (`... perf.data (1502 samples) ]`).
fn samples_written(log: &str) -> Option<u64> {
    let (before, _) = log.rsplit_once(" samples)")?;
    before.rsplit('(').next()?.trim().parse().ok()
}

/// `line` (`thread;frames COUNT`) with a root frame perf left as `:tid` named from `names`.
fn name_thread(line: &str, names: &HashMap<u32, String>) -> String {
    let (root, rest) = line.split_once(';').unwrap_or((line, ""));
    let named = root.strip_prefix(':').and_then(|tid| tid.parse::<u32>().ok()).and_then(|tid| names.get(&tid));
    match named {
        Some(name) if !rest.is_empty() => format!("{name};{rest}"),
        _ => line.to_string(),
    }
}

/// A rendered profile of one process.
pub struct Profile {
    pub title: String,
    /// Samples perf wrote, when its log said.
    pub samples: Option<u64>,
    /// The samples' total weight (the shares are of it).
    pub weight: u64,
    /// Samples by thread group (the thread name less its number: `app-http-3` -> `app-http`), largest first.
    pub threads: Vec<(String, u64)>,
    /// Samples by the function they were taken in (self time), largest first, at most [`TOP`].
    pub top: Vec<(String, u64)>,
    /// Samples taken in the kernel (a leaf frame marked `_[k]`).
    pub kernel: u64,
    pub folded: PathBuf,
    pub svg: PathBuf,
}

impl Profile {
    /// The thread shares and the top functions, as percentages of the samples.
    pub fn print(&self) {
        let share = |n: u64| 100.0 * n as f64 / self.weight.max(1) as f64;
        let samples = self.samples.map_or("?".to_string(), |n| n.to_string());
        println!("Profile {}: {samples} samples, {:.1}% in the kernel", self.title, share(self.kernel));
        let threads: Vec<String> = self.threads.iter().map(|(t, n)| format!("{t} {:.1}%", share(*n))).collect();
        println!("  by thread: {}", threads.join(", "));
        println!("  top {} functions by self time:", self.top.len());
        for (function, n) in &self.top {
            println!("    {:>5.1}%  {function}", share(*n));
        }
        println!("  flame graph {}, folded stacks {}", self.svg.display(), self.folded.display());
    }
}

/// Folds a recording's data into `{name}.folded` and `{name}.svg` in `dir`, and sums it up.
pub fn render(perf: &Path, recorded: &Recorded, dir: &Path, name: &str, title: &str) -> Result<Profile, String> {
    let data = &recorded.data;
    let mut script = Command::new(perf)
        .arg("script")
        .arg("-i")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} script: {e}", perf.display()))?;
    let stdout = script.stdout.take().ok_or("perf script: no output pipe")?;
    let mut folded = Vec::new();
    let mut options = inferno::collapse::perf::Options::default();
    options.annotate_kernel = true;
    options.nthreads = 1;
    let collapsed = inferno::collapse::Collapse::collapse(
        &mut inferno::collapse::perf::Folder::from(options),
        BufReader::new(stdout),
        &mut folded,
    );
    let status = script.wait().map_err(|e| format!("perf script: {e}"))?;
    collapsed.map_err(|e| format!("folding perf script's output: {e}"))?;
    if !status.success() {
        return Err(format!("perf script -i {} failed ({status})", data.display()));
    }
    let folded: String =
        String::from_utf8_lossy(&folded).lines().map(|line| name_thread(line, &recorded.thread_names) + "\n").collect();
    let folded_path = dir.join(format!("{name}.folded"));
    std::fs::write(&folded_path, &folded).map_err(|e| format!("{}: {e}", folded_path.display()))?;
    let svg_path = dir.join(format!("{name}.svg"));
    let svg = std::fs::File::create(&svg_path).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".to_string();
    if folded.trim().is_empty() {
        return Err(format!("no samples in {}", data.display()));
    }
    inferno::flamegraph::from_lines(&mut options, folded.lines(), std::io::BufWriter::new(svg))
        .map_err(|e| format!("flame graph {}: {e}", svg_path.display()))?;
    let sums = Sums::of(&folded);
    Ok(Profile {
        title: title.to_string(),
        samples: recorded.samples,
        weight: sums.samples,
        threads: sums.threads,
        top: sums.top,
        kernel: sums.kernel,
        folded: folded_path,
        svg: svg_path,
    })
}

/// What the folded stacks add up to.
#[derive(Debug, PartialEq)]
struct Sums {
    samples: u64,
    threads: Vec<(String, u64)>,
    top: Vec<(String, u64)>,
    kernel: u64,
}

impl Sums {
    /// From folded lines (`thread;outer;...;leaf COUNT`); lines that are not are skipped.
    fn of(folded: &str) -> Sums {
        let (mut threads, mut leaves): (HashMap<String, u64>, HashMap<&str, u64>) = Default::default();
        let (mut samples, mut kernel) = (0, 0);
        for line in folded.lines() {
            let Some((stack, count)) = line.rsplit_once(' ') else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            let thread = stack.split(';').next().unwrap_or_default();
            let leaf = stack.rsplit(';').next().unwrap_or_default();
            samples += count;
            if leaf.ends_with("_[k]") {
                kernel += count;
            }
            *threads.entry(thread_group(thread)).or_default() += count;
            *leaves.entry(leaf).or_default() += count;
        }
        let mut threads: Vec<(String, u64)> = threads.into_iter().collect();
        threads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut top: Vec<(String, u64)> = leaves.into_iter().map(|(f, n)| (f.to_string(), n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP);
        Sums { samples, threads, top, kernel }
    }
}

/// A thread's name less its number (`app-http-3` -> `app-http`, `slice-worker-12` -> `slice-worker`).
pub fn thread_group(name: &str) -> String {
    let group = name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-');
    if group.is_empty() {
        name.to_string()
    } else {
        group.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_add_up_by_thread_group_and_leaf() {
        let folded = "app-http-1;main;write_[k] 3\napp-http-2;main;parse 2\napp-io;epoll_wait_[k] 5\nbad line\n";
        let sums = Sums::of(folded);
        assert_eq!(sums.samples, 10);
        assert_eq!(sums.kernel, 8);
        assert_eq!(sums.threads, vec![("app-http".to_string(), 5), ("app-io".to_string(), 5)]);
        assert_eq!(sums.top[0], ("epoll_wait_[k]".to_string(), 5));
        assert_eq!(sums.top.len(), 3);
    }

    #[test]
    fn threads_perf_knew_only_by_id_get_their_names() {
        let names = HashMap::from([(42, "mgmt-http-3".to_string())]);
        assert_eq!(name_thread(":42;main;work 7", &names), "mgmt-http-3;main;work 7");
        assert_eq!(name_thread(":43;main 7", &names), ":43;main 7");
        assert_eq!(name_thread("net-node-1;main 7", &names), "net-node-1;main 7");
        let log = "[ perf record: Captured and wrote 0.265 MB /tmp/x.perf.data (1502 samples) ]\n";
        assert_eq!(samples_written(log), Some(1502));
        assert_eq!(samples_written("nothing"), None);
    }

    #[test]
    fn thread_groups_drop_the_number_only() {
        assert_eq!(thread_group("slice-worker-12"), "slice-worker");
        assert_eq!(thread_group("aetherd"), "aetherd");
        assert_eq!(thread_group("42"), "42");
    }
}
