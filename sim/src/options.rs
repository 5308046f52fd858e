//! What one simulated run does: the fault classes switched on, and the parameters drawn from the seed
//! (delays, loss, partition and crash rates, clock skew and offsets, workload size). A run is fully determined by
//! (seed, replicas, faults, broken variants), which is what the replay line prints.

use consensus::Broken;

use crate::rng::Rng;

/// Fault classes. `--faults` takes a comma list of these names, `all` or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub loss: bool,
    pub duplication: bool,
    /// Widely varying delays (reordering) and occasional delay spikes.
    pub delay: bool,
    pub partition: bool,
    pub crash: bool,
    pub skew: bool,
    /// Process clocks: each replica's clock counts from its process start, the first starts hours
    /// apart, and every restart starts the clock at zero again (skew and drift on top, with `skew`).
    pub clock: bool,
    /// A stranded command: one replica's next forward to one peer is lost and it crashes at once,
    /// staying down for the rest of the run (also through the healed phase), while clients go on
    /// submitting at the others. Not part of `all`: it takes a replica away for good.
    pub strand: bool,
    /// A scheduler that knows the common coin and delays states and votes that agree with it, trying
    /// to keep replicas split (the coin is a keyed hash, but the simulator holds the key).
    pub adversary: bool,
    /// Crashes that keep the disk: the replica comes back with `Replica::resume` from its durable log,
    /// any number at a time, sometimes in the middle of a turn (a torn write of that turn's records).
    pub durable: bool,
    /// Every replica crashes at about the same time (disks kept) and all come back with `Replica::resume`.
    pub cluster_crash: bool,
    /// Storage that fails: a write fails in the middle of a turn (ENOSPC, EIO), and the shell stops
    /// before the turn's messages leave and comes back distrusting its own votes; and a delayed second
    /// snapshot writer, whose older snapshot lands after a newer one (and must be ignored).
    pub disk_errors: bool,
    /// A non-transitive partition: one pair of replicas cannot talk while every other link works, with the
    /// control plane's leader logic running on top (`leader`).
    pub bridged: bool,
    /// The transport's byte limit on one message (an oversize send is refused, as a node's peer queue
    /// refuses it), with written values padded so that the decided log and the state machine outgrow it:
    /// catch-up must come in pieces that fit.
    pub size: bool,
    /// Membership changes (with `--replicas 5`): members {0,1,2} at the start, ids 3 and 4 as learners,
    /// and random reconfigurations that add and remove members during the faulty phase (`world/members`).
    /// Not part of `all`: it changes who the members are.
    pub members: bool,
}

impl Faults {
    pub const ALL: Faults = Faults {
        loss: true,
        duplication: true,
        delay: true,
        partition: true,
        crash: true,
        skew: true,
        clock: true,
        strand: false,
        adversary: true,
        durable: true,
        cluster_crash: true,
        disk_errors: true,
        bridged: true,
        size: true,
        members: false,
    };
    pub const NONE: Faults = Faults {
        loss: false,
        duplication: false,
        delay: false,
        partition: false,
        crash: false,
        skew: false,
        clock: false,
        strand: false,
        adversary: false,
        durable: false,
        cluster_crash: false,
        disk_errors: false,
        bridged: false,
        size: false,
        members: false,
    };

    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut faults = Faults::NONE;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => faults = Faults::ALL,
                "none" => faults = Faults::NONE,
                "loss" => faults.loss = true,
                "dup" | "duplication" => faults.duplication = true,
                "delay" | "reorder" => faults.delay = true,
                "partition" => faults.partition = true,
                "crash" => faults.crash = true,
                "skew" => faults.skew = true,
                "clock" => faults.clock = true,
                "strand" => faults.strand = true,
                "adversary" => faults.adversary = true,
                "durable" => faults.durable = true,
                "cluster-crash" => faults.cluster_crash = true,
                "disk-errors" => faults.disk_errors = true,
                "bridged" => faults.bridged = true,
                "size" => faults.size = true,
                "members" => faults.members = true,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (loss, dup, delay, partition, crash, skew, clock, strand, adversary, \
                         durable, cluster-crash, disk-errors, bridged, size, members, all, none)"
                    ))
                }
            }
        }
        Ok(faults)
    }

    pub fn names(&self) -> String {
        let all = [
            (self.loss, "loss"),
            (self.duplication, "dup"),
            (self.delay, "delay"),
            (self.partition, "partition"),
            (self.crash, "crash"),
            (self.skew, "skew"),
            (self.clock, "clock"),
            (self.strand, "strand"),
            (self.adversary, "adversary"),
            (self.durable, "durable"),
            (self.cluster_crash, "cluster-crash"),
            (self.disk_errors, "disk-errors"),
            (self.bridged, "bridged"),
            (self.size, "size"),
            (self.members, "members"),
        ];
        let names: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    }
}

/// Deliberate bugs in the simulated shell, for tests that prove the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShellBroken {
    #[default]
    Nothing,
    /// Answer reads from the local replica's state without going through consensus.
    LocalReads,
    /// Resume a replica that crashed before it finished recovering as an ordinary voter, as if its disk
    /// held every vote of its earlier life (it does not: that disk was lost).
    ResumeRecoveringAsVoter,
    /// The whole-cluster crash loses every disk, so every replica comes back as `Replica::restarted`:
    /// nobody is left to answer a recovery probe and the cluster stalls (what `resume` exists to avoid).
    ClusterCrashLosesDisks,
    /// Messages leave once their records are written, but the disk is synced only every 10 ms, and a
    /// crash that keeps the disk loses what was not synced (a power loss with the kernel's cache gone):
    /// a resumed replica forgets votes its peers already hold.
    SendBeforeSync,
    /// A storage write fails mid-turn, yet the turn's messages leave, and the restart trusts the log
    /// that lacks their records (a node that only stops replicating on the error, and restarts as a voter).
    SendAfterFailedWrite,
    /// An older snapshot written late replaces the newer one on disk (leaving a gap before the records
    /// after the newer one), and the restart resumes as a voter from what it can replay, ignoring the
    /// records past the gap.
    StaleSnapshotWins,
    /// A replica whose disk was wiped comes back as a voter from slot 0 (`Replica::new`), though it voted
    /// before.
    WipedDiskVotesFresh,
    /// The control plane's leader acts on its private view of who is alive (the smallest node it hears
    /// leads, and removes at once the records of nodes it does not hear), instead of on lease records.
    PrivateLiveness,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub replicas: u8,
    pub faults: Faults,
    pub broken: Broken,
    pub shell_broken: ShellBroken,
    /// Encode and decode every message through the wire codec.
    pub codec: bool,
    // Drawn from the seed:
    pub delay_us_min: u64,
    pub delay_us_max: u64,
    pub loss_permille: u64,
    pub duplicate_permille: u64,
    pub spike_permille: u64,
    pub partition_every_ms: u64,
    pub crash_every_ms: u64,
    pub skew_ms_max: u64,
    /// With `Faults::clock`: the first start of replica i is up to this long before the run begins.
    pub clock_offset_ms_max: u64,
    /// With `Faults::strand`: when the stranding replica's next forward is lost.
    pub strand_at_ms: u64,
    pub clients: u64,
    pub ops_per_client: u64,
    pub keys: u64,
    pub read_permille: u64,
    pub client_retry_ms: u64,
    pub batch_commands_max: usize,
    pub propose_delay_ms: u64,
    pub queue_commands_max: usize,
    pub snapshot_every_slots: u64,
    pub queue_bytes_max: usize,
    pub log_bytes_max: usize,
    /// How long the faulty phase lasts (only safety is checked there).
    pub faulty_ms: u64,
    /// Mean time between failed storage writes (`Faults::disk_errors`).
    pub disk_error_every_ms: u64,
    /// Of the snapshots a replica takes, how many its disk writes late (`Faults::disk_errors`).
    pub late_snapshot_permille: u64,
    /// Mean time between crashes that keep the disk (`Faults::durable`).
    pub durable_crash_every_ms: u64,
    /// Of those crashes (and of each replica's part in a whole-cluster crash), how many happen inside a
    /// turn, after part of its records were written and before anything of it left the replica.
    pub torn_permille: u64,
    /// When the whole cluster crashes (`Faults::cluster_crash`), from the start of the run.
    pub cluster_crash_at_ms: u64,
    /// Replicas crash within this long of each other.
    pub cluster_crash_spread_ms: u64,
    /// The whole-cluster crash also loses every message in flight (connections reset everywhere).
    pub cluster_crash_drops_in_flight: bool,
    /// After faults stop, every operation must complete within this much simulated time.
    pub liveness_ms: u64,
    /// With `Faults::bridged`: when the non-transitive partition starts, and how long it lasts.
    pub bridge_at_ms: u64,
    pub bridge_ms: u64,
    /// The transport's limit on one encoded message (`usize::MAX` without `Faults::size`).
    pub message_bytes_max: usize,
    /// Filler bytes every written value carries (0 without `Faults::size`).
    pub value_pad_bytes: usize,
}

impl Options {
    /// Slots each replica keeps below a snapshot when it compacts its log: none on even seeds (every
    /// replica behind a snapshot's slot fetches the snapshot), half a snapshot period on odd ones (a little
    /// behind, it catches up from the log). Derived, not drawn, so every other parameter of a seed stays
    /// what it was.
    pub fn log_tail_slots(&self) -> usize {
        if self.seed % 2 == 1 {
            (self.snapshot_every_slots / 2) as usize
        } else {
            0
        }
    }

    /// Draws the run's parameters from the seed.
    pub fn draw(seed: u64, replicas: u8, faults: Faults) -> Options {
        let mut rng = Rng::new(seed ^ 0x005E_ED0F_0A7E_u64);
        let delay_us_max = if faults.delay { rng.between(500, 20_000) } else { 1_000 };
        let mut options = Options {
            seed,
            replicas,
            faults,
            broken: Broken::Nothing,
            shell_broken: ShellBroken::Nothing,
            codec: false,
            delay_us_min: rng.between(50, 500),
            delay_us_max,
            loss_permille: if faults.loss { rng.between(0, 200) } else { 0 },
            duplicate_permille: if faults.duplication { rng.between(0, 100) } else { 0 },
            spike_permille: if faults.delay { rng.between(0, 20) } else { 0 },
            partition_every_ms: rng.between(100, 1_000),
            crash_every_ms: rng.between(200, 1_500),
            skew_ms_max: if faults.skew { rng.between(0, 500) } else { 0 },
            clock_offset_ms_max: 0,
            strand_at_ms: 0,
            clients: rng.between(2, 6),
            ops_per_client: rng.between(10, 30),
            keys: rng.between(1, 4),
            read_permille: rng.between(200, 600),
            client_retry_ms: rng.between(30, 300),
            batch_commands_max: [1usize, 4, 16][rng.below(3) as usize],
            propose_delay_ms: rng.between(0, 2),
            queue_commands_max: [4usize, 64, 1024][rng.below(3) as usize],
            snapshot_every_slots: rng.between(8, 64),
            faulty_ms: rng.between(500, 3_000),
            liveness_ms: 10_000,
            queue_bytes_max: [1usize << 20, 2048, 640][rng.below(3) as usize],
            log_bytes_max: [1usize << 20, 4096, 256][rng.below(3) as usize],
            durable_crash_every_ms: rng.between(100, 1_000),
            disk_error_every_ms: 0,
            late_snapshot_permille: 0,
            torn_permille: rng.between(0, 500),
            cluster_crash_at_ms: 0,
            cluster_crash_spread_ms: [0, 2, 20][rng.below(3) as usize],
            cluster_crash_drops_in_flight: rng.chance(500),
            bridge_at_ms: 0,
            bridge_ms: 0,
            message_bytes_max: usize::MAX,
            value_pad_bytes: 0,
        };
        // Anywhere in the faulty phase, up to its very end (minus the spread, so every replica's crash
        // lands in it): then the replicas come back as faults stop.
        let latest_ms = options.faulty_ms - options.cluster_crash_spread_ms - 1;
        options.cluster_crash_at_ms = rng.between(options.faulty_ms / 5, latest_ms);
        // Drawn last, so adding them left every earlier parameter of a seed as it was.
        options.clock_offset_ms_max = if faults.clock { rng.between(3_600_000, 4 * 3_600_000) } else { 0 };
        options.strand_at_ms = rng.between(options.faulty_ms / 5, options.faulty_ms / 2);
        options.disk_error_every_ms = rng.between(100, 1_000);
        options.late_snapshot_permille = if faults.disk_errors { rng.between(100, 900) } else { 0 };
        if faults.bridged {
            // Two to five grace periods of the leader logic, and the faulty phase long enough to hold them.
            let grace_ms = crate::leader::GRACE_MS;
            options.bridge_at_ms = rng.between(100, 600);
            options.bridge_ms = rng.between(2 * grace_ms, 5 * grace_ms);
            options.faulty_ms = options.faulty_ms.max(options.bridge_at_ms + options.bridge_ms + 100);
        }
        // Drawn last, so the other parameters of a seed stay what they were without it.
        if faults.size {
            options.message_bytes_max = [2048usize, 3072, 4096][rng.below(3) as usize];
            options.value_pad_bytes = rng.between(32, options.message_bytes_max as u64 / 4) as usize;
        }
        options
    }

    /// One line that reruns exactly this run.
    pub fn replay_line(&self) -> String {
        let mut line = format!(
            "cargo xtask sim --seed {} --replicas {} --faults {}",
            self.seed,
            self.replicas,
            self.faults.names()
        );
        if self.broken != Broken::Nothing {
            line.push_str(&format!(" --broken {}", broken_name(self.broken)));
        }
        match self.shell_broken {
            ShellBroken::Nothing => {}
            ShellBroken::LocalReads => line.push_str(" --broken local-reads"),
            ShellBroken::ResumeRecoveringAsVoter => line.push_str(" --broken resume-recovering-as-voter"),
            ShellBroken::ClusterCrashLosesDisks => line.push_str(" --broken cluster-crash-loses-disks"),
            ShellBroken::SendBeforeSync => line.push_str(" --broken send-before-sync"),
            ShellBroken::SendAfterFailedWrite => line.push_str(" --broken send-after-failed-write"),
            ShellBroken::StaleSnapshotWins => line.push_str(" --broken stale-snapshot-wins"),
            ShellBroken::WipedDiskVotesFresh => line.push_str(" --broken wiped-disk-votes-fresh"),
            ShellBroken::PrivateLiveness => line.push_str(" --broken private-liveness"),
        }
        if self.codec {
            line.push_str(" --codec");
        }
        line
    }

    /// The drawn parameters, for the failure report.
    pub fn describe(&self) -> String {
        format!(
            "delay {}..{}us spike {}‰ loss {}‰ dup {}‰ partition/{}ms crash/{}ms skew<={}ms clock-offset<={}ms strand at {}ms clients {}x{} keys {} reads {}‰ retry {}ms batch {} propose-delay {}ms queue {} / {}B log {}B snapshot/{} tail {} faulty {}ms durable-crash/{}ms disk-error/{}ms late-snapshot {}‰ torn {}‰ cluster-crash at {}ms spread {}ms drop-in-flight {} bridge at {}ms for {}ms message<={}B pad {}B",
            self.delay_us_min,
            self.delay_us_max,
            self.spike_permille,
            self.loss_permille,
            self.duplicate_permille,
            self.partition_every_ms,
            self.crash_every_ms,
            self.skew_ms_max,
            self.clock_offset_ms_max,
            self.strand_at_ms,
            self.clients,
            self.ops_per_client,
            self.keys,
            self.read_permille,
            self.client_retry_ms,
            self.batch_commands_max,
            self.propose_delay_ms,
            self.queue_commands_max,
            self.queue_bytes_max,
            self.log_bytes_max,
            self.snapshot_every_slots,
            self.log_tail_slots(),
            self.faulty_ms,
            self.durable_crash_every_ms,
            self.disk_error_every_ms,
            self.late_snapshot_permille,
            self.torn_permille,
            self.cluster_crash_at_ms,
            self.cluster_crash_spread_ms,
            self.cluster_crash_drops_in_flight,
            self.bridge_at_ms,
            self.bridge_ms,
            self.message_bytes_max,
            self.value_pad_bytes
        )
    }
}

pub fn broken_name(broken: Broken) -> &'static str {
    match broken {
        Broken::Nothing => "nothing",
        Broken::DecideAfterFirstRound => "decide-after-first-round",
        Broken::NoDedupe => "no-dedupe",
        Broken::RestartWithoutRecovery => "restart-without-recovery",
        Broken::LocalCoin => "local-coin",
        Broken::ResumeWithoutOwnMessages => "resume-without-own-messages",
        Broken::ReforwardByOriginStamp => "reforward-by-origin-stamp",
        Broken::ProposalsNotQueued => "proposals-not-queued",
        Broken::ProcessClockQueue => "process-clock-queue",
        Broken::UnboundedSyncReply => "unbounded-sync-reply",
        Broken::NoSnapshotForLostSlots => "no-snapshot-for-lost-slots",
        Broken::MembersFromProposal => "members-from-proposal",
    }
}

pub fn parse_broken(name: &str) -> Result<(Broken, ShellBroken), String> {
    Ok(match name {
        "decide-after-first-round" => (Broken::DecideAfterFirstRound, ShellBroken::Nothing),
        "no-dedupe" => (Broken::NoDedupe, ShellBroken::Nothing),
        "restart-without-recovery" => (Broken::RestartWithoutRecovery, ShellBroken::Nothing),
        "local-coin" => (Broken::LocalCoin, ShellBroken::Nothing),
        "resume-without-own-messages" => (Broken::ResumeWithoutOwnMessages, ShellBroken::Nothing),
        "reforward-by-origin-stamp" => (Broken::ReforwardByOriginStamp, ShellBroken::Nothing),
        "proposals-not-queued" => (Broken::ProposalsNotQueued, ShellBroken::Nothing),
        "process-clock-queue" => (Broken::ProcessClockQueue, ShellBroken::Nothing),
        "unbounded-sync-reply" => (Broken::UnboundedSyncReply, ShellBroken::Nothing),
        "no-snapshot-for-lost-slots" => (Broken::NoSnapshotForLostSlots, ShellBroken::Nothing),
        "members-from-proposal" => (Broken::MembersFromProposal, ShellBroken::Nothing),
        "local-reads" => (Broken::Nothing, ShellBroken::LocalReads),
        "resume-recovering-as-voter" => (Broken::Nothing, ShellBroken::ResumeRecoveringAsVoter),
        "cluster-crash-loses-disks" => (Broken::Nothing, ShellBroken::ClusterCrashLosesDisks),
        "send-before-sync" => (Broken::Nothing, ShellBroken::SendBeforeSync),
        "send-after-failed-write" => (Broken::Nothing, ShellBroken::SendAfterFailedWrite),
        "stale-snapshot-wins" => (Broken::Nothing, ShellBroken::StaleSnapshotWins),
        "wiped-disk-votes-fresh" => (Broken::Nothing, ShellBroken::WipedDiskVotesFresh),
        "private-liveness" => (Broken::Nothing, ShellBroken::PrivateLiveness),
        other => return Err(format!("unknown broken variant `{other}`")),
    })
}
