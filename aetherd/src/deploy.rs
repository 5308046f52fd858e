//! This node's hands for deployment: the container work the node deployment manager (`control::node`) asks
//! for, done on a thread of its own because loading and starting a plugin may block for seconds.
//!
//! The event loop owns the decisions; this module owns the container state map that feeds them. When the
//! loop starts an action it marks the artifact in progress at once (so `control::node::step` never asks
//! twice), sends the job here, and the result comes back to the loop as a command.
//!
//! Invariants: at most one job per artifact is in flight; a job's result always comes back (success or a
//! failure with its reason), so no artifact stays "in progress" forever; the loop never blocks on a job.

use control::node::{ContainerState, NodeAction, SliceInfo};
use kvstore::Artifact;
use log::{info, warn};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How a job ended.
#[derive(Debug)]
pub enum JobResult {
    Loaded(SliceInfo),
    Active,
    Deactivated,
    Unloaded,
    Failed(String),
}

#[derive(Debug)]
pub struct JobDone {
    pub artifact: Artifact,
    pub result: JobResult,
}

enum Job {
    Run(NodeAction),
    Stop,
}

/// The loop's side: the state map and the job queue.
pub struct Deployer {
    states: BTreeMap<Artifact, ContainerState>,
    infos: BTreeMap<Artifact, SliceInfo>,
    jobs: Sender<Job>,
    worker: Option<JoinHandle<()>>,
}

impl Deployer {
    /// Starts the worker; `done` carries each result back to the event loop.
    pub fn start(
        container: Arc<container::Container>,
        done: impl Fn(JobDone) + Send + 'static,
    ) -> Result<Deployer, String> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("deployer".into())
            .spawn(move || {
                let mut worker = Worker { container, instances: HashMap::new() };
                while let Ok(Job::Run(action)) = rx.recv() {
                    done(worker.run(action));
                }
                worker.container.shutdown();
            })
            .map_err(|e| format!("cannot start the deployer thread: {e}"))?;
        Ok(Deployer { states: BTreeMap::new(), infos: BTreeMap::new(), jobs, worker: Some(worker) })
    }

    pub fn states(&self) -> &BTreeMap<Artifact, ContainerState> {
        &self.states
    }

    pub fn infos(&self) -> &BTreeMap<Artifact, SliceInfo> {
        &self.infos
    }

    /// Marks the artifact in progress and queues the job.
    pub fn begin(&mut self, action: NodeAction) {
        let (artifact, state) = match &action {
            NodeAction::Load { artifact, .. } => (artifact.clone(), ContainerState::Loading),
            NodeAction::Activate { artifact, .. } => (artifact.clone(), ContainerState::Activating),
            NodeAction::Deactivate { artifact } => (artifact.clone(), ContainerState::Deactivating),
            NodeAction::Unload { artifact } => (artifact.clone(), ContainerState::Unloading),
        };
        self.states.insert(artifact, state);
        let _ = self.jobs.send(Job::Run(action));
    }

    /// Records a job's result.
    pub fn finish(&mut self, done: JobDone) {
        match done.result {
            JobResult::Loaded(info) => {
                self.infos.insert(done.artifact.clone(), info);
                self.states.insert(done.artifact, ContainerState::Loaded);
            }
            JobResult::Active => {
                self.states.insert(done.artifact, ContainerState::Active);
            }
            JobResult::Deactivated => {
                self.states.insert(done.artifact, ContainerState::Loaded);
            }
            JobResult::Unloaded => {
                self.states.remove(&done.artifact);
                self.infos.remove(&done.artifact);
            }
            JobResult::Failed(reason) => {
                self.states.insert(done.artifact, ContainerState::Failed { reason });
            }
        }
    }

    /// Unloads everything and stops the worker.
    pub fn stop(mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker thread's side: the container and the instance of each artifact.
struct Worker {
    container: Arc<container::Container>,
    instances: HashMap<Artifact, container::InstanceId>,
}

impl Worker {
    fn run(&mut self, action: NodeAction) -> JobDone {
        let (artifact, result) = match action {
            NodeAction::Load { artifact, config } => {
                let result = self.load(&artifact, &config);
                (artifact, result)
            }
            NodeAction::Activate { artifact, config } => {
                let result = self.activate(&artifact, &config);
                (artifact, result)
            }
            NodeAction::Deactivate { artifact } => {
                let result = self.deactivate(&artifact);
                (artifact, result)
            }
            NodeAction::Unload { artifact } => {
                let result = self.unload(&artifact);
                (artifact, result)
            }
        };
        match &result {
            JobResult::Failed(reason) => warn!("slice {artifact}: {reason}"),
            other => info!("slice {artifact}: {other:?}"),
        }
        JobDone { artifact, result }
    }

    fn load(&mut self, artifact: &Artifact, config: &Map<String, Value>) -> JobResult {
        if let Some(old) = self.instances.remove(artifact) {
            let _ = self.container.unload(old);
        }
        let id = match self.container.load(artifact, config_pairs(config)) {
            Ok(id) => id,
            Err(e) => return JobResult::Failed(e.to_string()),
        };
        self.instances.insert(artifact.clone(), id);
        let Some(handle) = self.container.handle(id) else {
            return JobResult::Failed("the instance vanished after loading".into());
        };
        let info = handle.info();
        let routes = info.routes.iter().map(|r| (r.http_method.as_str(), r.path.as_str(), r.method.as_str()));
        match SliceInfo::parse(routes, info.methods.iter().map(String::as_str)) {
            Ok(info) => JobResult::Loaded(info),
            Err(e) => JobResult::Failed(format!("descriptor does not fit the control plane: {e}")),
        }
    }

    fn activate(&mut self, artifact: &Artifact, config: &Map<String, Value>) -> JobResult {
        let Some(&id) = self.instances.get(artifact) else { return JobResult::Failed("not loaded".into()) };
        if let Err(e) = self.container.set_config(id, config_pairs(config)) {
            return JobResult::Failed(e.to_string());
        }
        match self.container.activate(id) {
            Ok(()) => JobResult::Active,
            Err(e) => JobResult::Failed(e.to_string()),
        }
    }

    fn deactivate(&mut self, artifact: &Artifact) -> JobResult {
        let Some(&id) = self.instances.get(artifact) else { return JobResult::Failed("not loaded".into()) };
        match self.container.deactivate(id) {
            Ok(()) => JobResult::Deactivated,
            Err(e) => JobResult::Failed(e.to_string()),
        }
    }

    fn unload(&mut self, artifact: &Artifact) -> JobResult {
        let Some(id) = self.instances.remove(artifact) else { return JobResult::Unloaded };
        if matches!(self.container.state(id), Some((container::SliceState::Active, _))) {
            let _ = self.container.deactivate(id);
        }
        match self.container.unload(id) {
            Ok(()) => JobResult::Unloaded,
            Err(e) => {
                warn!("slice {artifact}: unload left the library mapped: {e}");
                JobResult::Unloaded
            }
        }
    }
}

/// Slice config values as the container takes them: strings as they are, other JSON as its text.
fn config_pairs(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}
