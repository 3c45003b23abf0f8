//! The task engine's pure core: a task's state plus an event gives the new
//! state and the effects to carry out. No I/O, no clock: time comes in the
//! events, so every rule here is tested by applying events and looking at
//! the effects.

use dcp_api_types::{StepState, TaskState};

/// How one template step behaves on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRule {
    /// Attempts after the first.
    pub retries: u32,
    /// Milliseconds between attempts.
    pub retry_delay_ms: i64,
    /// A failure does not stop the node.
    pub ignore_error: bool,
    /// What an attempt leaves behind (`create_vm`'s machines) must be
    /// undone when the step does not finish.
    pub compensate: bool,
}

/// One step on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepRun {
    /// Where it stands.
    pub state: StepState,
    /// Attempts made since the last reset.
    pub attempts: u32,
    /// The next attempt may not start before this (ms).
    pub not_before: Option<i64>,
    /// When the last attempt started (ms).
    pub started_at: Option<i64>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// Output of the last attempt.
    pub output: String,
    /// Why the last attempt failed.
    pub error: String,
    /// The undoing of what its attempts left behind: `None` while there is
    /// nothing to undo, then pending, running, succeeded or failed.
    pub compensation: Option<StepState>,
    /// What the undoing did.
    pub compensation_output: String,
}

/// One node's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRun {
    /// The pipeline as a whole: pending until its first step starts,
    /// running until it ends.
    pub state: StepState,
    /// One per template step.
    pub steps: Vec<StepRun>,
}

/// A task as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the task stands.
    pub state: TaskState,
    /// Why (for ended tasks).
    pub reason: String,
    /// How many node pipelines may be under way at once.
    pub batch: usize,
    /// A failed node stops the rollout: no other node starts, and the task
    /// ends once the nodes under way do (a deploy leaves the rest on the
    /// version they run). A retry goes on with them.
    pub halt_on_failure: bool,
    /// Per template step.
    pub rules: Vec<StepRule>,
    /// The nodes.
    pub nodes: Vec<NodeRun>,
    /// Pause asked: no new steps; paused once the running ones end.
    pub pausing: bool,
    /// Cancel asked: in-flight work aborted; cancelled once it ends.
    pub cancelling: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A process took the task (first start, or after another died): steps
    /// that were running are run again (their effects are idempotent).
    Claimed {
        /// Now (ms).
        now: i64,
    },
    /// Time passed (retry delays may be over).
    Tick {
        /// Now (ms).
        now: i64,
    },
    /// An attempt of a step ended.
    StepEnded {
        /// The node.
        node: usize,
        /// The step.
        step: usize,
        /// Whether it succeeded.
        ok: bool,
        /// Its output.
        output: String,
        /// Why it failed.
        error: String,
        /// Now (ms).
        now: i64,
    },
    /// Pause at the next step boundary.
    Pause,
    /// Continue a paused task; failed nodes restart at their failed step.
    Resume {
        /// Now (ms).
        now: i64,
    },
    /// Run the failed nodes of an ended task again from their failed step.
    RetryFailed {
        /// Now (ms).
        now: i64,
    },
    /// Stop: in-flight work is aborted, nothing new starts; what
    /// unfinished steps left behind is undone before the task ends.
    Cancel {
        /// Now (ms).
        now: i64,
    },
    /// The undoing of a step ended.
    Compensated {
        /// The node.
        node: usize,
        /// The step.
        step: usize,
        /// Whether everything was undone.
        ok: bool,
        /// What it did.
        output: String,
        /// Now (ms).
        now: i64,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Run attempt `attempt` of `step` on `node`.
    Start {
        /// The node.
        node: usize,
        /// The step.
        step: usize,
        /// 1-based.
        attempt: u32,
    },
    /// Write this node and its steps.
    SaveNode(usize),
    /// Write the task's state.
    SaveTask,
    /// Undo what the attempts of `step` on `node` left behind. Never
    /// aborted by a cancel (it is what a cancel needs); idempotent.
    Compensate {
        /// The node.
        node: usize,
        /// The step.
        step: usize,
    },
    /// Abort every attempt in flight (not the undoing).
    AbortAll,
    /// Look again at this time (ms): a retry delay ends.
    WakeAt(i64),
    /// The task needs no driver any more (paused or ended): give it up.
    Release,
}

/// Applies `event` to `plan` and answers the effects, in order.
#[must_use]
pub fn transition(plan: &mut Plan, event: Event) -> Vec<Effect> {
    let mut effects = Vec::new();
    let now = match event {
        Event::Claimed { now } => {
            if plan.state == TaskState::Pending {
                plan.state = TaskState::Running;
                effects.push(Effect::SaveTask);
            }
            for (n, node) in plan.nodes.iter_mut().enumerate() {
                let mut changed = false;
                for step in &mut node.steps {
                    if step.state == StepState::Running {
                        // Attempted again under the same idempotency key.
                        step.state = StepState::Pending;
                        step.attempts = step.attempts.saturating_sub(1);
                        changed = true;
                    }
                    if step.compensation == Some(StepState::Running) {
                        // Undone again: it finds what is left to undo.
                        step.compensation = Some(StepState::Pending);
                        changed = true;
                    }
                }
                if changed {
                    effects.push(Effect::SaveNode(n));
                }
            }
            now
        }
        Event::Tick { now } => now,
        Event::StepEnded {
            node,
            step,
            ok,
            output,
            error,
            now,
        } => {
            step_ended(plan, node, step, ok, output, error, now);
            effects.push(Effect::SaveNode(node));
            now
        }
        Event::Pause => {
            match plan.state {
                TaskState::Pending => {
                    plan.state = TaskState::Paused;
                    effects.extend([Effect::SaveTask, Effect::Release]);
                }
                TaskState::Running if !plan.cancelling => plan.pausing = true,
                _ => {}
            }
            return settle(plan, effects, None);
        }
        Event::Resume { now } => {
            if plan.state == TaskState::Paused || plan.pausing {
                plan.pausing = false;
                plan.state = TaskState::Running;
                reopen_failed(plan, &mut effects);
                effects.push(Effect::SaveTask);
            }
            now
        }
        Event::RetryFailed { now } => {
            if matches!(plan.state, TaskState::PartiallyFailed | TaskState::Failed) {
                plan.state = TaskState::Running;
                plan.reason.clear();
                reopen_failed(plan, &mut effects);
                effects.push(Effect::SaveTask);
            }
            now
        }
        Event::Cancel { now } => {
            if !plan.state.is_final() && !plan.cancelling {
                plan.pausing = false;
                for (n, node) in plan.nodes.iter_mut().enumerate() {
                    if matches!(node.state, StepState::Pending | StepState::Running) {
                        for step in &mut node.steps {
                            if step.state == StepState::Pending {
                                step.state = StepState::Skipped;
                                step.finished_at = Some(now);
                            }
                        }
                        // A node with a step in flight is settled when it ends.
                        if !node.steps.iter().any(|s| s.state == StepState::Running) {
                            node.state = StepState::Skipped;
                        }
                        effects.push(Effect::SaveNode(n));
                    }
                }
                let undo = mark_compensations(plan, &mut effects);
                if plan.state == TaskState::Running || undo {
                    // Cancelled once the work in flight has stopped and
                    // what it left behind is undone.
                    if plan.state != TaskState::Running {
                        plan.state = TaskState::Running;
                        effects.push(Effect::SaveTask);
                    }
                    plan.cancelling = true;
                    effects.push(Effect::AbortAll);
                } else {
                    // Waiting or paused: nothing is in flight.
                    plan.state = TaskState::Cancelled;
                    plan.reason = "cancelled".to_owned();
                    effects.extend([Effect::SaveTask, Effect::Release]);
                }
            }
            now
        }
        Event::Compensated {
            node,
            step,
            ok,
            output,
            now,
        } => {
            let s = &mut plan.nodes[node].steps[step];
            s.compensation = Some(if ok {
                StepState::Succeeded
            } else {
                StepState::Failed
            });
            s.compensation_output = output;
            effects.push(Effect::SaveNode(node));
            now
        }
    };
    settle(plan, effects, Some(now))
}

/// Marks the steps whose attempts left something to undo: a compensated
/// step that ran (now or before a crash) and ended without succeeding.
/// Answers whether any undoing is due or under way.
fn mark_compensations(plan: &mut Plan, effects: &mut Vec<Effect>) -> bool {
    let mut open = false;
    for (n, node) in plan.nodes.iter_mut().enumerate() {
        let mut changed = false;
        for (step, rule) in node.steps.iter_mut().zip(&plan.rules) {
            if rule.compensate
                && step.compensation.is_none()
                && step.started_at.is_some()
                && matches!(step.state, StepState::Failed | StepState::Skipped)
            {
                step.compensation = Some(StepState::Pending);
                changed = true;
            }
            open |= matches!(
                step.compensation,
                Some(StepState::Pending | StepState::Running)
            );
        }
        if changed {
            effects.push(Effect::SaveNode(n));
        }
    }
    open
}

/// Starts every due undoing: not bounded by the batch, and not held back by
/// a pause or cancel (they wait for it instead).
fn start_compensations(plan: &mut Plan, effects: &mut Vec<Effect>) {
    mark_compensations(plan, effects);
    for (n, node) in plan.nodes.iter_mut().enumerate() {
        for (i, step) in node.steps.iter_mut().enumerate() {
            if step.compensation == Some(StepState::Pending) {
                step.compensation = Some(StepState::Running);
                effects.push(Effect::SaveNode(n));
                effects.push(Effect::Compensate { node: n, step: i });
            }
        }
    }
}

/// Records an attempt's end: success moves on, failure retries, is
/// ignored, or ends the node's pipeline (only its own).
fn step_ended(
    plan: &mut Plan,
    node: usize,
    step: usize,
    ok: bool,
    output: String,
    error: String,
    now: i64,
) {
    let rule = plan.rules[step];
    let cancelling = plan.cancelling;
    let run = &mut plan.nodes[node];
    let s = &mut run.steps[step];
    s.output = output;
    s.error = error;
    s.finished_at = Some(now);
    if ok {
        s.state = StepState::Succeeded;
    } else if cancelling {
        s.state = StepState::Failed;
        if s.error.is_empty() {
            s.error = "cancelled".to_owned();
        }
    } else if s.attempts <= rule.retries {
        s.state = StepState::Pending;
        s.not_before = Some(now + rule.retry_delay_ms);
        return;
    } else if rule.ignore_error {
        s.state = StepState::Failed;
    } else {
        s.state = StepState::Failed;
        for later in &mut run.steps[step + 1..] {
            later.state = StepState::Skipped;
        }
        run.state = StepState::Failed;
        return;
    }
    if cancelling {
        run.state = StepState::Skipped;
        for later in &mut run.steps[step + 1..] {
            if later.state == StepState::Pending {
                later.state = StepState::Skipped;
            }
        }
    } else if run.steps[step + 1..]
        .iter()
        .all(|s| s.state != StepState::Pending)
    {
        run.state = StepState::Succeeded;
    }
}

/// Failed nodes start again at their failed step; steps skipped after it
/// run again too. Attempts count afresh.
fn reopen_failed(plan: &mut Plan, effects: &mut Vec<Effect>) {
    for (n, node) in plan.nodes.iter_mut().enumerate() {
        if node.state != StepState::Failed {
            continue;
        }
        let Some(first) = node.steps.iter().position(|s| s.state == StepState::Failed) else {
            continue;
        };
        for step in &mut node.steps[first..] {
            if matches!(step.state, StepState::Failed | StepState::Skipped) {
                step.state = StepState::Pending;
                step.attempts = 0;
                step.not_before = None;
                // Undone already: the step starts afresh.
                step.compensation = None;
                step.compensation_output.clear();
            }
        }
        node.state = if first == 0 {
            StepState::Pending
        } else {
            StepState::Running
        };
        effects.push(Effect::SaveNode(n));
    }
    if plan.halt_on_failure {
        // The nodes a halted rollout did not reach.
        for (n, node) in plan.nodes.iter_mut().enumerate() {
            if node.state == StepState::Skipped
                && node.steps.iter().all(|s| s.state == StepState::Skipped)
            {
                node.state = StepState::Pending;
                for step in &mut node.steps {
                    step.state = StepState::Pending;
                    step.attempts = 0;
                    step.finished_at = None;
                }
                effects.push(Effect::SaveNode(n));
            }
        }
    }
}

/// Starts what may start (bounded by the batch size), and ends the task
/// when nothing is left to do.
fn settle(plan: &mut Plan, mut effects: Vec<Effect>, now: Option<i64>) -> Vec<Effect> {
    if plan.state != TaskState::Running {
        return effects;
    }
    start_compensations(plan, &mut effects);
    let in_flight = |plan: &Plan| {
        plan.nodes
            .iter()
            .flat_map(|n| &n.steps)
            .any(|s| s.state == StepState::Running || s.compensation == Some(StepState::Running))
    };
    if plan.cancelling || plan.pausing {
        if !in_flight(plan) {
            if plan.cancelling {
                plan.cancelling = false;
                plan.state = TaskState::Cancelled;
                plan.reason = with_undo_failures(plan, "cancelled".to_owned());
            } else {
                plan.pausing = false;
                plan.state = TaskState::Paused;
            }
            effects.extend([Effect::SaveTask, Effect::Release]);
        }
        return effects;
    }
    let Some(now) = now else {
        return effects;
    };
    let mut under_way = plan
        .nodes
        .iter()
        .filter(|n| n.state == StepState::Running)
        .count();
    let halted = plan.halt_on_failure && plan.nodes.iter().any(|n| n.state == StepState::Failed);
    let mut wake: Option<i64> = None;
    for (n, node) in plan.nodes.iter_mut().enumerate() {
        let starting = match node.state {
            StepState::Running => false,
            StepState::Pending if under_way < plan.batch && !halted => true,
            _ => continue,
        };
        if node.steps.iter().any(|s| s.state == StepState::Running) {
            continue;
        }
        let Some(next) = node
            .steps
            .iter()
            .position(|s| s.state == StepState::Pending)
        else {
            continue;
        };
        let step = &mut node.steps[next];
        if let Some(at) = step.not_before.filter(|at| *at > now) {
            wake = Some(wake.map_or(at, |w| w.min(at)));
            continue;
        }
        if starting {
            node.state = StepState::Running;
            under_way += 1;
        }
        step.state = StepState::Running;
        step.attempts += 1;
        step.not_before = None;
        step.started_at = Some(now);
        step.finished_at = None;
        effects.push(Effect::SaveNode(n));
        effects.push(Effect::Start {
            node: n,
            step: next,
            attempt: step.attempts,
        });
    }
    if let Some(at) = wake {
        effects.push(Effect::WakeAt(at));
    }
    let open = plan.nodes.iter().any(|n| match n.state {
        StepState::Running => true,
        StepState::Pending => !halted,
        _ => false,
    });
    if !open && !in_flight(plan) {
        let mut unreached = 0;
        for (n, node) in plan.nodes.iter_mut().enumerate() {
            if node.state == StepState::Pending {
                node.state = StepState::Skipped;
                for step in &mut node.steps {
                    step.state = StepState::Skipped;
                    step.finished_at = Some(now);
                }
                unreached += 1;
                effects.push(Effect::SaveNode(n));
            }
        }
        let failed = plan
            .nodes
            .iter()
            .filter(|n| n.state == StepState::Failed)
            .count();
        let (state, reason) = match failed {
            0 => (TaskState::Succeeded, String::new()),
            f if unreached > 0 => (
                TaskState::Failed,
                format!(
                    "stopped after {f} of {} nodes failed: {unreached} not reached, left as they were",
                    plan.nodes.len()
                ),
            ),
            f if f == plan.nodes.len() => (TaskState::Failed, format!("all {f} nodes failed")),
            f => (
                TaskState::PartiallyFailed,
                format!("{f} of {} nodes failed", plan.nodes.len()),
            ),
        };
        plan.state = state;
        plan.reason = with_undo_failures(plan, reason);
        effects.extend([Effect::SaveTask, Effect::Release]);
    }
    effects
}

/// `reason`, saying how many nodes' leftovers could not be undone.
fn with_undo_failures(plan: &Plan, reason: String) -> String {
    let failed = plan
        .nodes
        .iter()
        .filter(|n| {
            n.steps
                .iter()
                .any(|s| s.compensation == Some(StepState::Failed))
        })
        .count();
    match (failed, reason.is_empty()) {
        (0, _) => reason,
        (f, true) => format!("the machines of {f} node(s) could not be released"),
        (f, false) => format!("{reason}; the machines of {f} node(s) could not be released"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: usize, steps: usize, batch: usize) -> Plan {
        Plan {
            state: TaskState::Pending,
            reason: String::new(),
            batch,
            halt_on_failure: false,
            rules: vec![
                StepRule {
                    retries: 0,
                    retry_delay_ms: 0,
                    ignore_error: false,
                    compensate: false,
                };
                steps
            ],
            nodes: vec![
                NodeRun {
                    state: StepState::Pending,
                    steps: vec![StepRun::default(); steps],
                };
                nodes
            ],
            pausing: false,
            cancelling: false,
        }
    }

    fn starts(effects: &[Effect]) -> Vec<(usize, usize)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Start { node, step, .. } => Some((*node, *step)),
                _ => None,
            })
            .collect()
    }

    fn end(plan: &mut Plan, node: usize, step: usize, ok: bool, now: i64) -> Vec<Effect> {
        transition(
            plan,
            Event::StepEnded {
                node,
                step,
                ok,
                output: String::new(),
                error: if ok { String::new() } else { "boom".into() },
                now,
            },
        )
    }

    #[test]
    fn batches_bound_how_many_nodes_work_at_once() {
        let mut p = plan(5, 2, 2);
        let e = transition(&mut p, Event::Claimed { now: 0 });
        assert_eq!(starts(&e), [(0, 0), (1, 0)]);
        // Node 0 moves to its next step; no third node starts meanwhile.
        assert_eq!(starts(&end(&mut p, 0, 0, true, 1)), [(0, 1)]);
        // Node 0 done: node 2 takes its slot.
        assert_eq!(starts(&end(&mut p, 0, 1, true, 2)), [(2, 0)]);
    }

    #[test]
    fn a_failure_stops_only_its_node_and_the_task_ends_partially_failed() {
        let mut p = plan(2, 2, 2);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = end(&mut p, 0, 0, false, 1);
        assert_eq!(p.nodes[0].state, StepState::Failed);
        assert_eq!(p.nodes[0].steps[1].state, StepState::Skipped);
        let _ = end(&mut p, 1, 0, true, 2);
        let e = end(&mut p, 1, 1, true, 3);
        assert_eq!(p.state, TaskState::PartiallyFailed);
        assert!(e.contains(&Effect::Release));
        // Retry-failed runs node 0 again from its failed step, only it.
        let e = transition(&mut p, Event::RetryFailed { now: 4 });
        assert_eq!(starts(&e), [(0, 0)]);
        let _ = end(&mut p, 0, 0, true, 5);
        let _ = end(&mut p, 0, 1, true, 6);
        assert_eq!(p.state, TaskState::Succeeded);
    }

    #[test]
    fn a_halting_rollout_starts_no_node_after_a_failure_and_a_retry_goes_on() {
        let mut p = plan(5, 1, 2);
        p.halt_on_failure = true;
        let e = transition(&mut p, Event::Claimed { now: 0 });
        assert_eq!(starts(&e), [(0, 0), (1, 0)]);
        // Node 0 fails: node 1 finishes its work, no other node starts.
        assert!(starts(&end(&mut p, 0, 0, false, 1)).is_empty());
        assert_eq!(p.state, TaskState::Running);
        let e = end(&mut p, 1, 0, true, 2);
        assert!(starts(&e).is_empty());
        assert_eq!(p.state, TaskState::Failed);
        assert!(
            p.reason
                .contains("stopped after 1 of 5 nodes failed: 3 not reached"),
            "{}",
            p.reason
        );
        for node in &p.nodes[2..] {
            assert_eq!(node.state, StepState::Skipped);
            assert_eq!(node.steps[0].state, StepState::Skipped);
        }
        // A retry runs the failed node again, then the ones not reached.
        let e = transition(&mut p, Event::RetryFailed { now: 3 });
        assert_eq!(starts(&e), [(0, 0), (2, 0)]);
        let _ = end(&mut p, 0, 0, true, 4);
        let _ = end(&mut p, 2, 0, true, 5);
        let _ = end(&mut p, 3, 0, true, 6);
        let _ = end(&mut p, 4, 0, true, 7);
        assert_eq!(p.state, TaskState::Succeeded);
    }

    #[test]
    fn retries_wait_their_delay_then_ignored_errors_move_on() {
        let mut p = plan(1, 2, 1);
        p.rules[0] = StepRule {
            retries: 1,
            retry_delay_ms: 500,
            ignore_error: true,
            compensate: false,
        };
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let e = end(&mut p, 0, 0, false, 10);
        assert!(starts(&e).is_empty());
        assert!(e.contains(&Effect::WakeAt(510)));
        assert!(starts(&transition(&mut p, Event::Tick { now: 100 })).is_empty());
        let e = transition(&mut p, Event::Tick { now: 510 });
        assert_eq!(starts(&e), [(0, 0)]);
        assert_eq!(p.nodes[0].steps[0].attempts, 2);
        // Out of retries, but ignored: the next step runs.
        assert_eq!(starts(&end(&mut p, 0, 0, false, 600)), [(0, 1)]);
        let _ = end(&mut p, 0, 1, true, 700);
        assert_eq!(p.state, TaskState::Succeeded);
    }

    #[test]
    fn pause_waits_for_the_step_boundary_and_resume_continues() {
        let mut p = plan(3, 1, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let e = transition(&mut p, Event::Pause);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.state, TaskState::Running);
        let e = end(&mut p, 0, 0, true, 1);
        assert!(starts(&e).is_empty());
        assert_eq!(p.state, TaskState::Paused);
        assert!(e.contains(&Effect::Release));
        let e = transition(&mut p, Event::Resume { now: 2 });
        assert_eq!(starts(&e), [(1, 0)]);
    }

    #[test]
    fn cancel_aborts_in_flight_work_and_skips_the_rest() {
        let mut p = plan(3, 2, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let e = transition(&mut p, Event::Cancel { now: 1 });
        assert!(e.contains(&Effect::AbortAll));
        assert_eq!(p.nodes[2].state, StepState::Skipped);
        let e = end(&mut p, 0, 0, false, 2);
        assert!(starts(&e).is_empty());
        assert_eq!(p.state, TaskState::Cancelled);
        assert_eq!(p.nodes[0].steps[1].state, StepState::Skipped);
    }

    #[test]
    fn paused_and_waiting_tasks_cancel_at_once() {
        let mut p = plan(2, 1, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = transition(&mut p, Event::Pause);
        let _ = end(&mut p, 0, 0, true, 1);
        assert_eq!(p.state, TaskState::Paused);
        let e = transition(&mut p, Event::Cancel { now: 2 });
        assert_eq!(p.state, TaskState::Cancelled);
        assert!(e.contains(&Effect::Release) && !e.contains(&Effect::AbortAll));
        assert_eq!(p.nodes[1].state, StepState::Skipped);
        let mut waiting = plan(1, 1, 1);
        let _ = transition(&mut waiting, Event::Cancel { now: 0 });
        assert_eq!(waiting.state, TaskState::Cancelled);
    }

    #[test]
    fn a_claim_after_a_crash_runs_the_interrupted_steps_again() {
        let mut p = plan(2, 1, 2);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        // The process dies; another claims the task with two steps "running".
        let e = transition(&mut p, Event::Claimed { now: 10 });
        assert_eq!(starts(&e), [(0, 0), (1, 0)]);
        assert_eq!(p.nodes[0].steps[0].attempts, 1, "a replay is not a retry");
    }

    /// An expand-like plan: step 0 makes machines (and is undone).
    fn expand(nodes: usize, steps: usize) -> Plan {
        let mut p = plan(nodes, steps, nodes);
        p.rules[0].compensate = true;
        p
    }

    fn compensations(effects: &[Effect]) -> Vec<(usize, usize)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Compensate { node, step } => Some((*node, *step)),
                _ => None,
            })
            .collect()
    }

    fn compensated(plan: &mut Plan, node: usize, ok: bool, now: i64) -> Vec<Effect> {
        transition(
            plan,
            Event::Compensated {
                node,
                step: 0,
                ok,
                output: "machine m-001 released".into(),
                now,
            },
        )
    }

    #[test]
    fn a_cancelled_create_vm_is_undone_before_the_task_reads_cancelled() {
        let mut p = expand(2, 2);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        // Node 1 made its machine; node 0 is still waiting for its own.
        let _ = end(&mut p, 1, 0, true, 1);
        let e = transition(&mut p, Event::Cancel { now: 2 });
        assert!(e.contains(&Effect::AbortAll));
        let e = end(&mut p, 1, 1, false, 3);
        assert!(compensations(&e).is_empty(), "node 1's machine is a node");
        // The aborted create_vm ends: its machine is to be released, and
        // the task waits for that, whatever the cancel said.
        let e = end(&mut p, 0, 0, false, 4);
        assert_eq!(compensations(&e), [(0, 0)]);
        assert_eq!(p.state, TaskState::Running);
        assert_eq!(p.nodes[0].steps[0].compensation, Some(StepState::Running));
        assert!(!e.contains(&Effect::Release));
        let e = compensated(&mut p, 0, true, 5);
        assert_eq!(p.state, TaskState::Cancelled);
        assert_eq!(p.reason, "cancelled");
        assert!(e.contains(&Effect::SaveTask) && e.contains(&Effect::Release));
        assert_eq!(p.nodes[0].steps[0].compensation, Some(StepState::Succeeded));
        assert_eq!(
            p.nodes[0].steps[0].compensation_output,
            "machine m-001 released"
        );
        assert_eq!(p.nodes[1].steps[0].compensation, None);
    }

    #[test]
    fn a_create_vm_failed_for_good_is_undone_but_not_between_its_retries() {
        let mut p = expand(1, 2);
        p.rules[0].retries = 1;
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        // A retry reuses the machine: nothing is undone yet.
        let e = end(&mut p, 0, 0, false, 1);
        assert!(compensations(&e).is_empty());
        assert_eq!(starts(&e), [(0, 0)]);
        let e = end(&mut p, 0, 0, false, 2);
        assert_eq!(compensations(&e), [(0, 0)]);
        assert_eq!(p.state, TaskState::Running, "not failed while undoing");
        let _ = compensated(&mut p, 0, true, 3);
        assert_eq!(p.state, TaskState::Failed);
        // Retry-failed starts the step afresh, and a new failure is undone
        // again.
        let e = transition(&mut p, Event::RetryFailed { now: 4 });
        assert_eq!(starts(&e), [(0, 0)]);
        assert_eq!(p.nodes[0].steps[0].compensation, None);
        assert!(p.nodes[0].steps[0].compensation_output.is_empty());
        let e = end(&mut p, 0, 0, false, 5);
        assert!(compensations(&e).is_empty(), "its one retry first");
        let e = end(&mut p, 0, 0, false, 6);
        assert_eq!(compensations(&e), [(0, 0)]);
    }

    #[test]
    fn undoing_interrupted_by_a_crash_runs_again_on_the_next_claim() {
        let mut p = expand(1, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = transition(&mut p, Event::Cancel { now: 1 });
        let _ = end(&mut p, 0, 0, false, 2);
        assert_eq!(p.nodes[0].steps[0].compensation, Some(StepState::Running));
        // The driver dies; the next one holds the stored plan (the cancel
        // is still asked for: it is cleared only once the task is cancelled).
        let mut next = p.clone();
        next.cancelling = false;
        let e = transition(&mut next, Event::Claimed { now: 10 });
        assert_eq!(compensations(&e), [(0, 0)]);
        assert!(starts(&e).is_empty(), "the step itself is not run again");
        let _ = transition(&mut next, Event::Cancel { now: 10 });
        let _ = compensated(&mut next, 0, true, 11);
        assert_eq!(next.state, TaskState::Cancelled);
    }

    #[test]
    fn a_paused_task_cancelled_undoes_a_create_vm_that_had_started() {
        let mut p = expand(1, 2);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = transition(&mut p, Event::Pause);
        // The driver died mid-create_vm; the next claim made it pending again.
        let _ = transition(&mut p, Event::Claimed { now: 5 });
        assert_eq!(p.nodes[0].steps[0].state, StepState::Pending);
        let mut paused = p.clone();
        paused.state = TaskState::Paused;
        paused.pausing = false;
        let e = transition(&mut paused, Event::Cancel { now: 6 });
        assert_eq!(paused.state, TaskState::Running);
        assert_eq!(compensations(&e), [(0, 0)]);
        assert!(!e.contains(&Effect::Release));
        let _ = compensated(&mut paused, 0, true, 7);
        assert_eq!(paused.state, TaskState::Cancelled);
        // A task whose create_vm never started has nothing to undo.
        let mut waiting = expand(1, 2);
        let e = transition(&mut waiting, Event::Cancel { now: 0 });
        assert!(compensations(&e).is_empty());
        assert_eq!(waiting.state, TaskState::Cancelled);
    }

    #[test]
    fn undoing_that_fails_says_so_in_the_tasks_reason() {
        let mut p = expand(2, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = end(&mut p, 0, 0, true, 1);
        let _ = end(&mut p, 1, 0, false, 2);
        let _ = compensated(&mut p, 1, false, 3);
        assert_eq!(p.state, TaskState::PartiallyFailed);
        assert_eq!(
            p.reason,
            "1 of 2 nodes failed; the machines of 1 node(s) could not be released"
        );
        assert_eq!(p.nodes[1].steps[0].compensation, Some(StepState::Failed));
    }

    #[test]
    fn a_pause_waits_for_the_undoing_in_flight() {
        let mut p = expand(1, 1);
        let _ = transition(&mut p, Event::Claimed { now: 0 });
        let _ = end(&mut p, 0, 0, false, 1);
        let e = transition(&mut p, Event::Pause);
        assert!(!e.contains(&Effect::Release));
        assert_eq!(p.state, TaskState::Running);
        let _ = compensated(&mut p, 0, true, 2);
        assert_eq!(p.state, TaskState::Paused);
    }
}
