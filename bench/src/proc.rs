//! CPU time and context switches of processes and threads, read from `/proc`: what every bench reports per
//! request beside its throughput.

/// Linux's clock tick for the CPU times in `/proc` (USER_HZ, 100 on every architecture we run on).
pub const CPU_TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time of process `pid` (every thread), in ticks, from `/proc/{pid}/stat`.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let (utime, stime) = (fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?);
    Some(utime + stime)
}

/// Direct children of process `pid` (for example nginx's workers under its master).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// CPU time of the children of process `pid` that it has waited for (user plus system, in ticks, the
/// `cutime` and `cstime` of `/proc/{pid}/stat`): for this process, the load generators it ran to the end.
pub fn waited_children_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?)
}

/// CPU time every core spent busy since boot (all but idle and iowait), in ticks, from `/proc/stat`.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(ticks.iter().take(8).sum::<u64>() - idle)
}

/// Context switches (voluntary and not) of the live threads of process `pid`, from `/proc/{pid}/task/*/status`;
/// threads that already exited are not counted.
pub fn process_context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let switches = |status: String| -> u64 {
        status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    tasks.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok()).map(switches).sum()
}

/// CPU time in ticks of each live thread of process `pid`: (thread id, thread name, ticks).
pub fn thread_cpu_ticks(pid: u32) -> Vec<(u32, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let parse = |stat: &str| -> Option<(String, u64)> {
        let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        Some((name, fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let (name, ticks) = parse(&std::fs::read_to_string(t.path().join("stat")).ok()?)?;
            Some((tid, name, ticks))
        })
        .collect()
}
