//! The demo's record of its steps and the final summary table.

use std::time::{Duration, Instant};

use crate::cmd::table;

/// The outcome of one step.
#[derive(Debug, Clone)]
pub(crate) struct StepResult {
    /// Short name (`rollout 1.1.0`).
    pub(crate) name: String,
    /// What had to happen.
    pub(crate) expected: String,
    /// What happened (or why it failed).
    pub(crate) outcome: String,
    /// Whether it matched.
    pub(crate) ok: bool,
    /// How long it took.
    pub(crate) took: Duration,
}

/// Steps done so far.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    steps: Vec<StepResult>,
}

impl Summary {
    /// Records a step that started at `started`.
    pub(crate) fn record(
        &mut self,
        name: &str,
        expected: &str,
        started: Instant,
        result: Result<String, String>,
    ) -> bool {
        let ok = result.is_ok();
        let outcome = match result {
            Ok(text) | Err(text) => text,
        };
        let step = StepResult {
            name: name.to_owned(),
            expected: expected.to_owned(),
            outcome,
            ok,
            took: started.elapsed(),
        };
        let mark = if step.ok { "ok" } else { "FAILED" };
        // The step line goes to stdout as it happens; failures to write are not fatal here.
        let _ = crate::output::line(format_args!(
            "  [{mark}] {}: {} ({:.1}s)",
            step.name,
            step.outcome,
            step.took.as_secs_f64()
        ));
        self.steps.push(step);
        ok
    }

    /// The first failed step, if any.
    pub(crate) fn first_failure(&self) -> Option<&StepResult> {
        self.steps.iter().find(|step| !step.ok)
    }

    /// The table printed at the end.
    pub(crate) fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                vec![
                    (i + 1).to_string(),
                    step.name.clone(),
                    step.expected.clone(),
                    if step.ok { "ok" } else { "FAILED" }.to_owned(),
                    format!("{:.1}s", step.took.as_secs_f64()),
                ]
            })
            .collect();
        table::render(&["#", "STEP", "EXPECTED", "RESULT", "TIME"], &rows)
    }
}
