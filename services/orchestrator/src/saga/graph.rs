//! Steps as a graph (docs/saga.md, "Steps as a graph"): which steps may
//! start, which forward work is still in flight, and in which order the
//! completed steps are compensated.

use landlord_control_plane::StepState;

use super::{Saga, StepRow};

/// Done, for the steps that wait for it: succeeded, skipped, or failed
/// while not fatal (a failed welcome mail holds nothing up).
fn done_for_dependents(step: &StepRow) -> bool {
    match step.state {
        StepState::Succeeded | StepState::Skipped => true,
        StepState::Failed => !step.fatal,
        _ => false,
    }
}

/// A step whose compensation is due: it has one, and it may have had an
/// effect — it succeeded, or it failed after its command went out (a
/// failed step can still have done part of its work, or do it later: a
/// late delivery of its command).
fn to_compensate(step: &StepRow) -> bool {
    step.compensation.is_some()
        && (step.state == StepState::Succeeded || (step.state == StepState::Failed && step.attempts > 0))
}

impl Saga {
    /// The pending steps whose prerequisites are all done, in pipeline
    /// order. A prerequisite the saga does not have (none: plans are
    /// checked at load) holds nothing up.
    pub(super) fn ready(&self) -> Vec<usize> {
        let done = |name: &String| self.steps.iter().find(|s| s.name == *name).is_none_or(done_for_dependents);
        (0..self.steps.len())
            .filter(|&i| self.steps[i].state == StepState::Pending && self.steps[i].after.iter().all(done))
            .collect()
    }

    /// A forward command is in flight: its answer (or its deadline) is
    /// awaited before anything is compensated.
    pub(super) fn forward_in_flight(&self) -> bool {
        self.steps.iter().any(|s| s.state == StepState::Running)
    }

    /// Step `i`'s forward work ended (succeeded, or failed for good): it is
    /// the next in the order of completion.
    pub(super) fn complete(&mut self, i: usize) {
        let next = self.steps.iter().filter_map(|s| s.completion).max().unwrap_or(0) + 1;
        self.touch(i).completion = Some(next);
    }

    /// Steps waiting for a retry when the saga stops going forward: their
    /// last attempt failed, and no new one starts.
    pub(super) fn stop_retries(&mut self) {
        let now = self.now;
        for i in 0..self.steps.len() {
            if self.steps[i].state == StepState::RetryWait {
                let step = self.touch(i);
                step.state = StepState::Failed;
                step.deadline = None;
                step.finished_at = Some(now);
                self.complete(i);
            }
        }
    }

    /// The next step to compensate: of those due, the last to complete
    /// whose dependents' compensations are all over (a dependent completes
    /// after its prerequisites, so the reverse order of completion already
    /// puts them first; the check keeps it so whatever the order).
    pub(super) fn next_compensation(&self) -> Option<usize> {
        let pending = |s: &StepRow| to_compensate(s) || matches!(s.state, StepState::Compensating | StepState::Stuck);
        let free = |i: usize| {
            let name = &self.steps[i].name;
            !self.steps.iter().any(|d| d.after.contains(name) && pending(d))
        };
        let due = (0..self.steps.len()).filter(|&i| to_compensate(&self.steps[i]));
        let order = |i: &usize| (self.steps[*i].completion.unwrap_or(0), self.steps[*i].position);
        due.clone().filter(|&i| free(i)).max_by_key(order).or_else(|| due.max_by_key(order))
    }

    /// The compensated steps in the order they were undone: the reverse
    /// order of completion.
    pub(super) fn reversed(&self) -> Vec<String> {
        let mut undone: Vec<&StepRow> = self.steps.iter().filter(|s| s.state == StepState::Compensated).collect();
        undone.sort_by_key(|s| std::cmp::Reverse((s.completion.unwrap_or(0), s.position)));
        undone.into_iter().map(|s| s.name.clone()).collect()
    }
}
