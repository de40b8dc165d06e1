//! Progress bars for long operations, drawn on standard error only when it is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar with `label`; call the returned closure with (done, total).
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        Progress {
            bar: None,
            label: label.to_string(),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(self.label.clone());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
