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
    /// Stop: in-flight work is aborted, nothing new starts.
    Cancel {
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
    /// Abort every attempt in flight.
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
                if plan.state == TaskState::Running {
                    // Cancelled once the work in flight has stopped.
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
    };
    settle(plan, effects, Some(now))
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
            }
        }
        node.state = if first == 0 {
            StepState::Pending
        } else {
            StepState::Running
        };
        effects.push(Effect::SaveNode(n));
    }
}

/// Starts what may start (bounded by the batch size), and ends the task
/// when nothing is left to do.
fn settle(plan: &mut Plan, mut effects: Vec<Effect>, now: Option<i64>) -> Vec<Effect> {
    if plan.state != TaskState::Running {
        return effects;
    }
    let in_flight = |plan: &Plan| {
        plan.nodes
            .iter()
            .flat_map(|n| &n.steps)
            .any(|s| s.state == StepState::Running)
    };
    if plan.cancelling || plan.pausing {
        if !in_flight(plan) {
            if plan.cancelling {
                plan.cancelling = false;
                plan.state = TaskState::Cancelled;
                plan.reason = "cancelled".to_owned();
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
    let mut wake: Option<i64> = None;
    for (n, node) in plan.nodes.iter_mut().enumerate() {
        let starting = match node.state {
            StepState::Running => false,
            StepState::Pending if under_way < plan.batch => true,
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
    let open = plan
        .nodes
        .iter()
        .any(|n| matches!(n.state, StepState::Pending | StepState::Running));
    if !open {
        let failed = plan
            .nodes
            .iter()
            .filter(|n| n.state == StepState::Failed)
            .count();
        (plan.state, plan.reason) = match failed {
            0 => (TaskState::Succeeded, String::new()),
            f if f == plan.nodes.len() => (TaskState::Failed, format!("all {f} nodes failed")),
            f => (
                TaskState::PartiallyFailed,
                format!("{f} of {} nodes failed", plan.nodes.len()),
            ),
        };
        effects.extend([Effect::SaveTask, Effect::Release]);
    }
    effects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: usize, steps: usize, batch: usize) -> Plan {
        Plan {
            state: TaskState::Pending,
            reason: String::new(),
            batch,
            rules: vec![
                StepRule {
                    retries: 0,
                    retry_delay_ms: 0,
                    ignore_error: false,
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
    fn retries_wait_their_delay_then_ignored_errors_move_on() {
        let mut p = plan(1, 2, 1);
        p.rules[0] = StepRule {
            retries: 1,
            retry_delay_ms: 500,
            ignore_error: true,
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
}
