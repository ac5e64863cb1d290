//! Many runs at once: the matrix of scenarios x models x repetitions, at most `concurrency`
//! in flight, each run's log written and its record reported as soon as it finishes.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::agent::Agent;
use crate::check::{TurnFacts, evaluate, judge};
use crate::conversation::{About, Assistant, Conversation, Script, UserSide};
use crate::message::Message;
use crate::program::{AgentProgram, Endpoint, RunEnv, RunLink};
use crate::provider::cache::Cached;
use crate::provider::{ModelSpec, Sampling, Target};
use crate::record::{
    AgentLog, CacheUse, CheckKind, CheckRecord, DIVERGED, Ended, JudgeRecord, NotStarted, Reporter, RunOutcome,
    RunRecord, ScenarioRef, Status, ToolCallRecord, TurnRecord, run_name,
};
use crate::rng::mix64;
use crate::scenario::agent::AgentSpec;
use crate::scenario::{Expect, JudgeSpec, Scenario};
use crate::simulate::SimulatedUser;
use crate::tools::mcp::{McpPool, RunServers};
use crate::tools::{ToolContext, ToolRegistry, WeatherConfig};

/// One run of the matrix.
#[derive(Clone)]
pub(crate) struct Job {
    pub scenario: Arc<Scenario>,
    pub target: Arc<Target>,
    /// 1-based.
    pub repetition: u32,
}

/// What every run shares.
pub(crate) struct Shared {
    pub run_id: String,
    pub registry: ToolRegistry,
    pub http: reqwest::Client,
    pub weather: Arc<WeatherConfig>,
    /// Base of every run's tool random stream (`--seed`).
    pub seed: u64,
    /// Sent as the sampling seed where a scenario sets none (`--seed`).
    pub sampling_seed: Option<u64>,
    /// MCP servers started once for the whole batch (`shared: true`).
    pub mcp: McpPool,
    /// `--repeat` > 1: the repetition is part of a request's cache key, so that repeats
    /// still measure flakiness.
    pub repeated: bool,
    /// The models of the judges and simulated users, by the name the scenario settled on.
    pub helpers: std::collections::HashMap<ModelSpec, Arc<Target>>,
    /// The batch's secrets: redacted from tool results and errors.
    pub secrets: crate::secret::Secrets,
    /// The endpoint agent programs call their models through; started only when a scenario
    /// names an agent.
    pub endpoint: Option<Arc<Endpoint>>,
}

/// Why the rest of a batch was not started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopReason {
    /// `--max-cost-usd`: the finished runs cost at least the budget.
    Budget { limit_usd: f64, spent_usd: f64 },
    /// `--fail-fast`: a run did not pass.
    FailFast,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A log or report could not be written (a full disk, say): what runs next would be lost.
    WriteFailed,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Budget { limit_usd, spent_usd } => {
                write!(f, "budget of ${limit_usd} reached: ${spent_usd:.6} spent (--max-cost-usd)")
            }
            StopReason::FailFast => write!(f, "stopped after the first run that did not pass (--fail-fast)"),
            StopReason::Interrupted => write!(f, "interrupted"),
            StopReason::WriteFailed => write!(f, "stopped: a log or report could not be written"),
        }
    }
}

/// When to stop starting runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Start no run once the finished runs cost this much.
    pub max_cost_usd: Option<f64>,
    /// Start no run once one did not pass.
    pub fail_fast: bool,
}

/// Stops a batch from outside: the first interrupt starts no new run, the second aborts the
/// runs in flight.
pub(crate) struct Control {
    stop: std::sync::OnceLock<StopReason>,
    interrupts: std::sync::atomic::AtomicU32,
    /// The exit code the first interrupt asks for (130 for Ctrl-C, 143 for SIGTERM).
    interrupt_code: std::sync::OnceLock<u8>,
    abort: tokio::sync::watch::Sender<bool>,
}

impl Control {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            stop: Default::default(),
            interrupts: Default::default(),
            interrupt_code: Default::default(),
            abort: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Counts an interrupt (its exit code: 130, 143) and acts on it; returns how many there
    /// have been.
    pub(crate) fn interrupt(&self, exit_code: u8) -> u32 {
        let count = self.interrupts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let _ = self.interrupt_code.set(exit_code);
        if count == 1 {
            let _ = self.stop.set(StopReason::Interrupted);
        } else {
            self.abort.send_replace(true);
        }
        count
    }

    /// The exit code of the first interrupt, when there was one.
    pub(crate) fn interrupted(&self) -> Option<u8> {
        self.interrupt_code.get().copied()
    }

    fn stop(&self, reason: StopReason) {
        let _ = self.stop.set(reason);
    }

    fn stopped(&self) -> Option<&StopReason> {
        self.stop.get()
    }
}

/// How a batch ended.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Runs of the plan that did not finish: never started, or aborted.
    pub not_started: usize,
    pub stopped: Option<StopReason>,
    /// Every failure to write a log or a report row, in order (each names its file).
    pub write_errors: Vec<anyhow::Error>,
}

/// Plays every job with at most `concurrency` in flight, feeding each finished run to
/// `reporter` as it finishes. Once `limits` say stop, or a reporter fails to write, no
/// further job starts: those in flight finish and the rest are reported as not started.
pub(crate) async fn run_all(
    jobs: impl Iterator<Item = Job>,
    total: usize,
    concurrency: usize,
    limits: Limits,
    control: Arc<Control>,
    shared: Arc<Shared>,
    reporter: &mut dyn Reporter,
) -> Totals {
    enum Ended {
        Ran(Box<RunRecord>),
        NotStarted(Job),
        Aborted(Job),
    }
    reporter.plan(total);
    let mut totals = Totals::default();
    let mut spent_usd = 0.0;
    let mut write_errors = Vec::new();
    // Runs play on the runtime's workers; reporters (the JSON logs among them) run here, on
    // one task, so files are created one at a time (concurrent creates in one directory
    // contend on its lock and burn CPU the runs need). A job is only started when
    // `buffer_unordered` has room for it, so the stop check sees every finished run before.
    let starter = control.clone();
    let run_id = shared.run_id.clone();
    let mut ended = futures::stream::iter(jobs)
        .map(move |job| {
            let started = starter.stopped().is_none().then(|| {
                let task_job = job.clone();
                let task_shared = shared.clone();
                let mut abort = starter.abort.subscribe();
                let task = async move {
                    tokio::select! {
                        record = play(&task_job, &task_shared) => Some(record),
                        _ = abort.wait_for(|aborted| *aborted) => None,
                    }
                };
                (tokio::spawn(task), shared.clone())
            });
            async move {
                let Some((handle, shared)) = started else {
                    return Ended::NotStarted(job);
                };
                match handle.await {
                    Ok(Some(record)) => Ended::Ran(Box::new(record)),
                    Ok(None) => Ended::Aborted(job),
                    // A bug in a run must not take the batch down: record it as that run's error.
                    Err(err) => Ended::Ran(Box::new(unplayed(
                        &job,
                        &shared,
                        Conversation::new(None),
                        format!("internal error: {err}"),
                    ))),
                }
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(end) = ended.next().await {
        let (job, reason) = match end {
            Ended::Ran(record) => {
                spent_usd += record.spent_usd();
                if limits.fail_fast && record.status != Status::Passed {
                    control.stop(StopReason::FailFast);
                }
                if let Some(limit_usd) = limits.max_cost_usd
                    && spent_usd >= limit_usd
                {
                    control.stop(StopReason::Budget { limit_usd, spent_usd });
                }
                if let Err(err) = reporter.run_ended(&RunOutcome::Finished(record)) {
                    // A full disk would lose every run after this one: start no more.
                    control.stop(StopReason::WriteFailed);
                    write_errors.push(err);
                }
                continue;
            }
            Ended::NotStarted(job) => (job, control.stopped().map(ToString::to_string).unwrap_or_default()),
            Ended::Aborted(job) => (job, "interrupted: aborted by a second Ctrl-C".to_owned()),
        };
        totals.not_started += 1;
        let not_started = NotStarted {
            run_id: run_id.clone(),
            scenario: scenario_ref(&job.scenario),
            model: job.target.spec.clone(),
            repetition: job.repetition,
            unpriced: job.target.price.is_none(),
            reason,
        };
        if let Err(err) = reporter.run_ended(&RunOutcome::NotStarted(not_started)) {
            write_errors.push(err);
        }
    }
    totals.stopped = control.stopped().cloned();
    totals.write_errors = write_errors;
    totals
}

/// The seed of a run's tool random stream: the same `--seed`, scenario, model and repetition
/// give the same numbers, whatever else runs beside it.
pub(crate) fn tool_seed(base: u64, job: &Job) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64; // FNV-1a
    for part in [job.scenario.name.as_bytes(), job.target.spec.to_string().as_bytes(), &job.repetition.to_le_bytes()] {
        for &byte in part {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(base ^ hash)
}

/// Plays one run to its end; every failure becomes part of the record.
pub(crate) async fn play(job: &Job, shared: &Shared) -> RunRecord {
    let started = Instant::now();
    let scenario = &job.scenario;
    let target = &job.target;
    let seed = tool_seed(shared.seed, job);
    let mut conversation = Conversation::new(scenario.system.as_deref());
    if let Some(spec) = &scenario.agent {
        return play_program(job, shared, spec, conversation, seed).await;
    }
    let context =
        ToolContext::new(shared.http.clone(), shared.weather.clone(), seed).with_secrets(shared.secrets.clone());
    // Boxed: starting servers is a large future, and every run in flight would carry it.
    let servers = match Box::pin(RunServers::start(&scenario.mcp, &shared.mcp, &shared.http)).await {
        Ok(servers) => servers,
        Err(err) => return unplayed(job, shared, conversation, err.to_string()),
    };
    // The scenario's own declarations shadow built-in and configured tools of their name.
    let mut registry = shared.registry.with(&scenario.declared);
    let mut offered = std::borrow::Cow::Borrowed(&scenario.tools[..]);
    if !servers.tools.is_empty() {
        if let Some(tool) = servers.tools.iter().find(|tool| offered.iter().any(|name| name == tool.name())) {
            let err = format!(
                "an MCP server lists `{}`, which the scenario already offers; leave one out (`include` picks a server's tools)",
                tool.name()
            );
            conversation.servers = Box::pin(servers.finish()).await;
            return unplayed(job, shared, conversation, err);
        }
        registry = registry.with(&servers.tools);
        offered.to_mut().extend(servers.tools.iter().map(|tool| tool.name().to_owned()));
    }
    let specs = registry.specs(&offered);
    let mut sampling = scenario.sampling;
    sampling.seed = sampling.seed.or(shared.sampling_seed);
    let provider = Cached::new(target, shared.repeated.then_some(job.repetition));
    let agent = Agent {
        sampling,
        tool_results: &scenario.tool_results,
        max_tool_rounds: scenario.max_tool_rounds,
        ..Agent::new(&provider, target, &specs, &registry, &context)
    };

    converse(&mut conversation, &agent, job, shared).await;
    conversation.servers = Box::pin(servers.finish()).await;
    tracing::debug!(scenario = %scenario.name, model = %target.spec, repetition = job.repetition, status = conversation.status().as_str(), ms = started.elapsed().as_millis() as u64, "run finished");
    conversation.into_record(about(job, shared, sampling, seed))
}

/// Plays the scenario's user side (its script, then its simulated user) against
/// `assistant`, each turn checked as it ends, then checks the whole conversation.
async fn converse(conversation: &mut Conversation, assistant: &impl Assistant, job: &Job, shared: &Shared) {
    let scenario = &job.scenario;
    conversation.turns.reserve_exact(scenario.turns.len());
    match &scenario.simulate {
        Some(spec) => match shared.helpers.get(&spec.model) {
            Some(target) => {
                let repetition = shared.repeated.then_some(job.repetition);
                let user = SimulatedUser::new(&scenario.turns, spec, target.clone(), repetition, shared.sampling_seed);
                play_turns(conversation, assistant, User::Simulated(Box::new(user)), job, shared).await;
            }
            // The command resolves every simulated user's model before the batch starts.
            None => {
                conversation.error =
                    Some(format!("internal error: the simulated user's model `{}` was not resolved", spec.model));
                conversation.ended = Ended::Error;
            }
        },
        None => play_turns(conversation, assistant, User::Script(Script::new(&scenario.turns)), job, shared).await,
    }
    check_conversation(conversation, job, shared).await;
}

/// Plays `user`'s turns until it ends the conversation or a turn does not finish; records
/// how it ended.
async fn play_turns(
    conversation: &mut Conversation,
    assistant: &impl Assistant,
    mut user: User<'_>,
    job: &Job,
    shared: &Shared,
) {
    loop {
        let turn = match &mut user {
            User::Script(script) => script.next(conversation).await,
            User::Simulated(simulated) => simulated.next(conversation).await,
        };
        let Some(turn) = turn else { break };
        let mut outcome = conversation.ask(assistant, &turn.text).await;
        outcome.simulated = turn.simulated.is_some();
        outcome.user_request = turn.simulated;
        let missed = outcome.requests.iter().any(|r| r.cache == CacheUse::Miss);
        if let (Some(error), true, false) = (&mut outcome.error, missed, conversation.turns.is_empty()) {
            error.push_str(DIVERGED);
        }
        let finished = outcome.error.is_none();
        let record = match turn.expect {
            Some(expect) => check_turn(outcome, expect, &conversation.messages, job, shared).await,
            None => outcome,
        };
        conversation.push(record);
        // The conversation cannot go on past a turn that did not finish.
        if !finished {
            break;
        }
    }
    let end = match user {
        User::Script(script) => script.end(),
        User::Simulated(simulated) => simulated.end(),
    };
    conversation.simulator = end.simulator;
    conversation.error = end.error.or_else(|| conversation.first_turn_error());
    conversation.ended = if conversation.error.is_some() { Ended::Error } else { end.ended };
}

/// A run's user side. An enum, not a generic: the run's future must be `Send`, which a
/// generic user side's `async fn` cannot promise.
enum User<'a> {
    Script(Script<'a>),
    Simulated(Box<SimulatedUser<'a>>),
}

/// The checks over the whole conversation: how it ended (a simulated user must stop unless
/// the scenario expects otherwise), how many user messages it took, and once it finished,
/// the top-level `expect` over every turn, the last reply, the run's cost and a judge.
async fn check_conversation(conversation: &mut Conversation, job: &Job, shared: &Shared) {
    let scenario = &job.scenario;
    let expect = scenario.expect.as_ref();
    let mut checks = Vec::new();
    let ended = expect.and_then(|e| e.ended).or(scenario.simulate.as_ref().map(|_| Ended::Stop));
    if let Some(want) = ended {
        let passed = conversation.ended == want;
        let detail =
            format!("the conversation ended with `{}`, expected `{}`", conversation.ended.as_str(), want.as_str());
        checks.push(CheckRecord { check: CheckKind::Ended, passed, detail });
    }
    if let Some(expect) = expect {
        if let Some(limit) = expect.max_turns {
            let taken = conversation.turns.len();
            let passed = taken <= limit as usize;
            let detail = format!("{taken} user message(s), limit {limit}");
            checks.push(CheckRecord { check: CheckKind::MaxTurns, passed, detail });
        }
        if conversation.error.is_none() {
            let calls: Vec<ToolCallRecord> =
                conversation.turns.iter().flat_map(|t| t.tool_calls.iter().cloned()).collect();
            let facts = TurnFacts {
                reply: conversation.replies().last().unwrap_or_default(),
                tool_calls: &calls,
                cost_usd: conversation.cost.total_usd,
                priced: job.target.price.is_some(),
                latency_ms: 0,
                scope: "run",
            };
            checks.extend(evaluate(&expect.checks, &facts));
            if let Some(spec) = &expect.checks.judge {
                let judge = judge_turn(spec, &conversation.messages, shared, job).await;
                checks.push(judge::check_record(&judge));
                if let Some(why) = &judge.error {
                    conversation.error = Some(format!("judge: {why}"));
                }
                conversation.judge = Some(judge);
            }
        }
    }
    conversation.checks = checks;
}

/// Plays a run against the user's own agent program: one process for the run, its model
/// calls answered (and measured) by the batch's endpoint under a token of the run's own.
async fn play_program(
    job: &Job,
    shared: &Shared,
    spec: &AgentSpec,
    mut conversation: Conversation,
    seed: u64,
) -> RunRecord {
    let Some(endpoint) = &shared.endpoint else {
        // The command starts the endpoint whenever a scenario names an agent.
        return unplayed(job, shared, conversation, "internal error: no endpoint for agent programs".to_owned());
    };
    let link = RunLink::new(
        job.target.clone(),
        shared.repeated.then_some(job.repetition),
        shared.sampling_seed,
        shared.secrets.clone(),
        seed,
    );
    let opened = endpoint.open(link);
    let run = RunEnv {
        model: job.target.spec.to_string(),
        scenario: &job.scenario.name,
        run: format!("{}/{}", shared.run_id, run_name(&job.scenario.name, &job.target.spec, job.repetition)),
    };
    let program = match AgentProgram::start(spec, endpoint.base_url(), &opened, &run, &shared.secrets) {
        Ok(program) => program,
        Err(why) => {
            let exit = Some(shared.secrets.redact(&why));
            conversation.agent = Some(AgentLog { command: spec.command_line(), exit, stderr: String::new() });
            return unplayed(job, shared, conversation, why);
        }
    };
    converse(&mut conversation, &program, job, shared).await;
    conversation.agent = Some(program.finish().await);
    drop(opened);
    conversation.into_record(about(job, shared, job.scenario.sampling, seed))
}

/// A played turn with its checks: the expectations on its reply and the judge's verdict.
async fn check_turn(
    outcome: TurnRecord,
    expect: &Expect,
    messages: &[Message],
    job: &Job,
    shared: &Shared,
) -> TurnRecord {
    let target = &job.target;
    let finished = outcome.error.is_none();
    let mut checks = match (&outcome.error, &outcome.reply) {
        (None, Some(reply)) => evaluate(
            expect,
            &TurnFacts {
                reply,
                tool_calls: &outcome.tool_calls,
                cost_usd: outcome.cost.total_usd,
                priced: target.price.is_some(),
                latency_ms: outcome.latency_ms,
                scope: "turn",
            },
        ),
        _ => Vec::new(),
    };
    let judge = match (&expect.judge, finished) {
        (Some(spec), true) => Some(judge_turn(spec, messages, shared, job).await),
        _ => None,
    };
    if let Some(empty) = outcome.empty_reply() {
        // A failed check on an empty answer says so: the model may not be to blame.
        for check in checks.iter_mut().filter(|c| !c.passed) {
            check.detail = format!("{} ({empty})", check.detail);
        }
    }
    checks.extend(judge.as_ref().map(judge::check_record));
    let mut record = outcome.with_checks(checks);
    // No verdict: whether the reply met the rubric is unknown, which is an error.
    if let Some(why) = judge.as_ref().and_then(|j| j.error.as_ref()) {
        record.status = Status::Error;
        record.error = Some(format!("judge: {why}"));
    }
    record.judge = judge;
    record
}

/// The judge's grading of the turn that ends `messages`.
async fn judge_turn(spec: &JudgeSpec, messages: &[Message], shared: &Shared, job: &Job) -> JudgeRecord {
    let Some(judge) = shared.helpers.get(&spec.model) else {
        // The command resolves every judge its scenarios name before the batch starts.
        return JudgeRecord {
            model: spec.model.clone(),
            rubric: spec.rubric.clone(),
            pass: None,
            reason: None,
            error: Some(format!("internal error: the judge `{}` was not resolved", spec.model)),
            requests: Vec::new(),
            usage: Default::default(),
            cost: Default::default(),
            unpriced: true,
        };
    };
    let sampling = Sampling { seed: shared.sampling_seed, ..Sampling::default() };
    judge::grade(judge, messages, &spec.rubric, &sampling, shared.repeated.then_some(job.repetition)).await
}

fn scenario_ref(scenario: &Scenario) -> ScenarioRef {
    ScenarioRef { name: scenario.name.clone(), file: scenario.file.clone() }
}

/// What a run's conversation is about.
fn about<'a>(job: &'a Job, shared: &Shared, sampling: Sampling, tool_seed: u64) -> About<'a> {
    About {
        run_id: shared.run_id.clone(),
        scenario: Some(scenario_ref(&job.scenario)),
        target: &job.target,
        sampling,
        repetition: job.repetition,
        tool_seed,
    }
}

/// The record of a run that played no turn (its task died, its MCP server could not
/// start): status `error`, the reason.
fn unplayed(job: &Job, shared: &Shared, mut conversation: Conversation, error: String) -> RunRecord {
    conversation.messages.clear();
    conversation.error = Some(shared.secrets.redact(&error));
    conversation.ended = Ended::Error;
    conversation.into_record(about(job, shared, job.scenario.sampling, tool_seed(shared.seed, job)))
}
