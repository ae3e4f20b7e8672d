//! Progress bars (stderr, hidden with `--quiet` or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` steps labelled `msg`.
pub fn bar(total: u64, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// A bar driven by a library progress callback `(k, total)`, cleared when dropped.
pub struct Steps(ProgressBar);

impl Steps {
    /// A bar of `total` steps labelled `msg`.
    pub fn new(total: usize, msg: &str, quiet: bool) -> Self {
        Steps(bar(total as u64, msg, quiet))
    }

    /// Step `k` of `total`.
    pub fn tick(&self, k: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(k as u64);
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// One bar per class for a callback `(class, k, total)`: a new bar, labelled
/// `"{label} class {c}"` (or `label` for the null class), each time the class changes.
pub struct ClassSteps {
    label: String,
    quiet: bool,
    current: Option<(Option<u32>, Steps)>,
}

impl ClassSteps {
    /// Bars labelled `label`.
    pub fn new(label: &str, quiet: bool) -> Self {
        ClassSteps {
            label: label.to_string(),
            quiet,
            current: None,
        }
    }

    /// Step `k` of `total` of the run of `class`.
    pub fn tick(&mut self, class: Option<u32>, k: usize, total: usize) {
        if self.current.as_ref().map(|c| c.0) != Some(class) {
            self.current = None;
            let msg = match class {
                Some(c) => format!("{} class {c}", self.label),
                None => self.label.clone(),
            };
            self.current = Some((class, Steps::new(total, &msg, self.quiet)));
        }
        if let Some((_, s)) = &self.current {
            s.tick(k, total);
        }
    }
}
