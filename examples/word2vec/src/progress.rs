//! The Learner's progress as one line per epoch on stderr.
//!
//! burn-train's fallback renderer (no `tui` feature, or stdout not a terminal) prints the debug
//! form of every step's progress on stdout, thousands of lines per run; this one says which epoch
//! is running and leaves stdout to the results.

use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Prints `epoch k/n` when the Learner starts training epoch `k` of `n`.
#[derive(Debug, Default)]
pub struct EpochLines {
    last_epoch: usize,
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, _state: MetricState) {}

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        if epoch != self.last_epoch {
            self.last_epoch = epoch;
            eprintln!("epoch {epoch}/{}", item.global_progress.items_total);
        }
    }

    fn render_valid(&mut self, _item: TrainingProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, _definition: MetricDefinition) {}
}
