//! Progress bars on a terminal; nothing (but warnings) when stderr is not one.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use swarmfs_client::Progress;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(verb: &str, enabled: bool) -> Bar {
        let bar = ProgressBar::hidden();
        if enabled && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{verb:>8} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}"
                ))
                .expect("static template")
                .progress_chars("=> "),
            );
        }
        Bar { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn warn(&self, message: &str) {
        self.bar.suspend(|| errln!("warning: {message}"));
    }
}
